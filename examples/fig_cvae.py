"""Figure 6: samples of the conditional VAE, one row per class, and a grid
of samples of a single class (8 by default).

Without --run it trains conv-cvae (runs/fig-conv-cvae, reused when there).

    python examples/fig_cvae.py
    python examples/fig_cvae.py --run runs/conv-cvae --label 3
"""
import argparse
import os

from scratchvae import plots
from scratchvae.figures import add_script_args, script_run
from scratchvae.rundir import load_run

OUT = "docs/figures/cvae_samples.png"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_script_args(parser, epochs=5)
    parser.add_argument("--run", default=None, metavar="DIR", help="a trained CVAE run")
    parser.add_argument("--label", type=int, default=8, help="the single class (default 8)")
    parser.add_argument("--per-class", type=int, default=10, help="samples per class row (10)")
    parser.add_argument("--out-label", default=None,
                        help="PNG of the single class (default docs/figures/cvae_label_<K>.png)")
    args = parser.parse_args(argv)
    run = args.run or script_run(args, "fig-conv-cvae", model="conv-cvae")
    config, model, meta = load_run(run)
    caption = plots.run_caption(config, meta)
    out = plots.plot_cvae_samples(model, args.out or OUT, per_class=args.per_class,
                                  seed=args.seed, title=f"{caption}: one row per class")
    out_label = args.out_label or os.path.join(os.path.dirname(out),
                                               f"cvae_label_{args.label}.png")
    plots.plot_cvae_label(model, args.label, out_label, n=64, seed=args.seed,
                          title=f"{caption}: 64 samples of class {args.label}")
    print(f"saved {os.path.abspath(out)} and {os.path.abspath(out_label)}")
    return out, out_label


if __name__ == "__main__":
    main()

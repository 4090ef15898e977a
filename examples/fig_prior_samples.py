"""Figure 3: random samples from the prior, decoded means at z ~ N(0, I).

Without --run it trains the MLP VAE (runs/fig-mlp-vae, reused when there).

    python examples/fig_prior_samples.py
    python examples/fig_prior_samples.py --run runs/mlp-vae --n 100
"""
import argparse
import os

from scratchvae import plots
from scratchvae.figures import add_script_args, script_run
from scratchvae.rundir import load_run

OUT = "docs/figures/prior_samples.png"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_script_args(parser, epochs=5)
    parser.add_argument("--run", default=None, metavar="DIR", help="a trained VAE run")
    parser.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    args = parser.parse_args(argv)
    run = args.run or script_run(args, "fig-mlp-vae", model="mlp-vae")
    config, model, meta = load_run(run)
    out = plots.plot_prior_samples(model, args.out or OUT, n=args.n, seed=args.seed,
                                   title=f"samples from the prior: "
                                         f"{plots.run_caption(config, meta)}")
    print(f"saved {os.path.abspath(out)}")
    return out


if __name__ == "__main__":
    main()

"""Figure 1: training curves, train loss and test loss per epoch.

Reads each run's metrics.jsonl; one panel per model, one colour per run.
Without --run it trains the MLP VAE (runs/fig-mlp-vae, reused when there).

    python examples/fig_training_curves.py
    python examples/fig_training_curves.py --run runs/mlp-vae runs/mlp-vae-s1 runs/conv-cvae
"""
import argparse
import os

from scratchvae import plots
from scratchvae.figures import add_script_args, script_run

OUT = "docs/figures/training_curves.png"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_script_args(parser, epochs=5)
    parser.add_argument("--run", nargs="+", default=None, metavar="DIR",
                        help="trained runs to plot (several per model: one line each)")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="legend text of each run (default: the run directory's name)")
    parser.add_argument("--title", default="training curves (dashed: train loss, "
                                            "solid: test loss)")
    args = parser.parse_args(argv)
    runs = args.run or [script_run(args, "fig-mlp-vae", model="mlp-vae")]
    if args.labels and len(args.labels) != len(runs):
        parser.error(f"expected {len(runs)} --labels, got {len(args.labels)}")
    out = plots.plot_training_curves(runs, args.out or OUT, labels=args.labels, title=args.title)
    print(f"saved {os.path.abspath(out)}")
    return out


if __name__ == "__main__":
    main()

"""Figure 4: the 2-D latent space of an MLP VAE with Z = 2.

Left, the posterior means of test images coloured by digit; right, the
decoded means over a regular lattice of z = Phi^-1(p), p in [0.05, 0.95]
(Kingma & Welling 2014, fig. 4). Without --run it trains the model
(runs/fig-mlp-vae-z2, shared with fig_latent_dim.py).

    python examples/fig_latent_2d.py
    python examples/fig_latent_2d.py --run runs/fig-mlp-vae-z2 --grid 15
"""
import argparse
import os

from scratchvae import latent_plots, plots
from scratchvae.figures import add_script_args, script_run
from scratchvae.rundir import load_run, load_test_images

OUT = "docs/figures/latent_2d.png"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_script_args(parser, epochs=5)
    parser.add_argument("--run", default=None, metavar="DIR", help="a trained Z = 2 VAE run")
    parser.add_argument("--grid", type=int, default=20, help="lattice size (default 20)")
    parser.add_argument("--points", type=int, default=5000,
                        help="test images in the scatter (default 5000)")
    args = parser.parse_args(argv)
    run = args.run or script_run(args, "fig-mlp-vae-z2", model="mlp-vae", latent_dim=2)
    config, model, meta = load_run(run)
    x, y = load_test_images(config, args.points)
    title = f"2-D latent space: {plots.run_caption(config, meta)}"
    out = latent_plots.plot_latent_space(model, x, y, args.out or OUT, n_grid=args.grid,
                                         title=title)
    print(f"saved {os.path.abspath(out)}")
    return out


if __name__ == "__main__":
    main()

"""Figure 5: latent traversals of a VAE beside a beta-VAE (conv, Z = 10).

Each row sweeps one latent dimension over [-3, 3] with the others at the
posterior mean of one test image; rows are labelled with the test KL of
their dimension (KL ~ 0: an unused dimension). Without --run it trains
conv-vae (runs/fig-conv-vae) and conv-vae with --beta (runs/fig-conv-vae-beta4).

    python examples/fig_traversals.py                        # 5 epochs each
    python examples/fig_traversals.py --run runs/vae runs/beta-vae --index 3
"""
import argparse
import os

import numpy as np

from scratchvae import latent_plots, plots
from scratchvae.figures import add_script_args, script_run
from scratchvae.rundir import load_run, load_test_images, read_run

OUT = "docs/figures/traversals.png"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_script_args(parser, epochs=5)
    parser.add_argument("--run", nargs="+", default=None, metavar="DIR",
                        help="trained runs, one panel each (default: train VAE and beta-VAE)")
    parser.add_argument("--beta", type=float, default=4.0, help="beta of the beta-VAE (4)")
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--index", type=int, default=0, help="the test image (default 0)")
    parser.add_argument("--steps", type=int, default=9, help="values in [-3, 3] (default 9)")
    args = parser.parse_args(argv)
    runs = args.run or [
        script_run(args, "fig-conv-vae", model="conv-vae", latent_dim=args.latent_dim),
        script_run(args, f"fig-conv-vae-beta{args.beta:g}", model="conv-vae",
                   latent_dim=args.latent_dim, beta=args.beta)]
    panels, config = [], None
    for run in runs:
        config, model, meta = load_run(run)
        _, records = read_run(run)
        kind = "β-VAE" if config.beta != 1.0 else "VAE"
        panels.append((f"{kind}: {plots.run_caption(config, meta)}", model,
                       records[-1].get("test_kl_per_dim")))
    x, _ = load_test_images(config, args.index + 1)
    out = latent_plots.plot_traversals(panels, x[args.index:args.index + 1], args.out or OUT,
                                       values=np.linspace(-3, 3, args.steps),
                                       title=f"latent traversals around test image {args.index}")
    print(f"saved {os.path.abspath(out)}")
    return out


if __name__ == "__main__":
    main()

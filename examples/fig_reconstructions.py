"""Figure 7: the same test digits reconstructed by a VAE, a beta-VAE, a CVAE
and a VQ-VAE (originals in the first row).

Each model comes from --vae/--beta-vae/--cvae/--vq DIR, or is trained
(runs/fig-conv-vae, runs/fig-conv-vae-beta4, runs/fig-conv-cvae,
runs/fig-vq-vae: the same runs as the other figure scripts).

    python examples/fig_reconstructions.py
    python examples/fig_reconstructions.py --vae runs/fig-conv-vae --cvae runs/conv-cvae \\
        --vq runs/vq-uniform-ema-restart1 --beta-vae runs/fig-conv-vae-beta4
"""
import argparse
import os

from scratchvae import plots
from scratchvae.figures import add_script_args, script_run
from scratchvae.rundir import load_run, load_test_images

OUT = "docs/figures/reconstructions.png"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_script_args(parser, epochs=5)
    for flag in ("vae", "beta-vae", "cvae", "vq"):
        parser.add_argument(f"--{flag}", default=None, metavar="DIR", help="a trained run")
    parser.add_argument("--beta", type=float, default=4.0, help="beta of the beta-VAE (4)")
    parser.add_argument("--images", type=int, default=10, help="test images (default 10)")
    args = parser.parse_args(argv)
    runs = [("VAE", args.vae or script_run(args, "fig-conv-vae", model="conv-vae")),
            ("β-VAE", args.beta_vae or script_run(args, f"fig-conv-vae-beta{args.beta:g}",
                                                   model="conv-vae", beta=args.beta)),
            ("CVAE", args.cvae or script_run(args, "fig-conv-cvae", model="conv-cvae")),
            ("VQ-VAE", args.vq or script_run(args, "fig-vq-vae", model="vq-vae"))]
    models, config = [], None
    for kind, run in runs:
        config, model, meta = load_run(run)
        models.append((f"{kind} ({plots.run_caption(config, meta)})", model))
    x, y = load_test_images(config, args.images)
    out = plots.plot_reconstructions(models, x, y, args.out or OUT,
                                     title="test images (top) and their reconstructions")
    print(f"saved {os.path.abspath(out)}")
    return out


if __name__ == "__main__":
    main()

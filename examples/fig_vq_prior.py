"""VQ-VAE + PixelCNN prior: 64 samples of an unconditional prior, and 64 of a
class-conditional prior asked for an 8 (the seed report's "generated samples by
condition 8"), each code map drawn by ancestral sampling and decoded by the VQ-VAE.

Without --vq-run / --prior / --prior-cond it trains (or reuses) runs/fig-vq-vae,
runs/fig-pixelcnn and runs/fig-pixelcnn-cond.

    python examples/fig_vq_prior.py
    python examples/fig_vq_prior.py --vq-run runs/vq-vae --prior runs/prior --prior-cond runs/prior-cond
"""
import argparse
import os

import numpy as np

from scratchvae import plots
from scratchvae.figures import add_script_args, script_prior_run, script_run
from scratchvae.prior import load_prior_pair, sample_images

OUT = "docs/figures/vq_prior_samples.png"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_script_args(parser, epochs=10)
    parser.add_argument("--vq-run", default=None, metavar="DIR", help="a trained VQ-VAE run")
    parser.add_argument("--prior", default=None, metavar="DIR",
                        help="an unconditional prior over its codes")
    parser.add_argument("--prior-cond", default=None, metavar="DIR",
                        help="a class-conditional prior over its codes")
    parser.add_argument("--prior-epochs", type=int, default=4,
                        help="epochs of each prior it trains (default 4)")
    parser.add_argument("--label", type=int, default=8, help="the class asked for (default 8)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--out-label", default=None,
                        help="PNG of the class (default docs/figures/vq_prior_label_<K>.png)")
    args = parser.parse_args(argv)
    vq = args.vq_run or script_run(args, "fig-vq-vae", model="vq-vae")
    priors = [args.prior or script_prior_run(args, "fig-pixelcnn", vq,
                                             epochs=args.prior_epochs),
              args.prior_cond or script_prior_run(args, "fig-pixelcnn-cond", vq,
                                                  conditional=True, epochs=args.prior_epochs)]
    out = args.out or OUT
    out_label = args.out_label or os.path.join(os.path.dirname(out),
                                               f"vq_prior_label_{args.label}.png")
    for prior, path, label in ((priors[0], out, None), (priors[1], out_label, args.label)):
        pair = load_prior_pair(prior, vq_dir=vq)
        images = sample_images(pair.vq, pair.prior, 64, np.random.default_rng(args.seed),
                               labels=label, temperature=args.temperature)
        what = "unconditional prior" if label is None else f"prior given the label {label}"
        plots.save_image_grid(images, path, ncol=8, title=(
            f"VQ-VAE + PixelCNN ({what}, {pair.epoch} epochs, T = {args.temperature:g})"))
    print(f"saved {os.path.abspath(out)} and {os.path.abspath(out_label)}")
    return out, out_label


if __name__ == "__main__":
    main()

"""Samples of every generative model side by side: VAE, beta-VAE, CVAE and
VQ-VAE + PixelCNN prior, 8x8 each, with each model's Fréchet distance on the
project classifier's features (FD, scratchvae/quality.py) printed under it.

Without the run options it trains (or reuses) runs/fig-conv-vae, runs/fig-beta-vae,
runs/fig-conv-cvae, runs/fig-vq-vae, runs/fig-pixelcnn and runs/fig-classifier.
The FD is taken over --fd-samples samples (default 10,000; a CVAE's labels 0..9 in
turn) against the test set; its floor (the test set against as many training
images) is in the title.

    python examples/fig_model_samples.py
    python examples/fig_model_samples.py --vae runs/conv-vae --beta-vae runs/beta-vae \\
        --cvae runs/conv-cvae --prior runs/prior --classifier runs/classifier
"""
import argparse
import os

import numpy as np

from scratchvae import plots
from scratchvae.figures import add_script_args, script_prior_run, script_run
from scratchvae.quality import classifier_reference, run_quality, run_sampler
from scratchvae.report import load_classifier
from scratchvae.rundir import load_run

OUT = "docs/figures/model_samples.png"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_script_args(parser, epochs=10)
    for name, what in (("vae", "a conv-vae run"), ("beta-vae", "a conv-vae run with --beta 4"),
                       ("cvae", "a conv-cvae run"), ("prior", "a PixelCNN prior's run"),
                       ("classifier", "a classifier run")):
        parser.add_argument(f"--{name}", default=None, metavar="DIR", help=what)
    parser.add_argument("--prior-epochs", type=int, default=4,
                        help="epochs of the prior it trains (default 4)")
    parser.add_argument("--fd-samples", type=int, default=10000,
                        help="samples per model for the FD (default 10,000)")
    args = parser.parse_args(argv)
    runs = [("VAE", args.vae or script_run(args, "fig-conv-vae", model="conv-vae")),
            ("β-VAE (β = 4)", args.beta_vae or script_run(args, "fig-beta-vae",
                                                           model="conv-vae", beta=4.0)),
            ("CVAE", args.cvae or script_run(args, "fig-conv-cvae", model="conv-cvae"))]
    if args.prior is None:
        vq = script_run(args, "fig-vq-vae", model="vq-vae")
        args.prior = script_prior_run(args, "fig-pixelcnn", vq, epochs=args.prior_epochs)
    runs.append(("VQ-VAE + PixelCNN", args.prior))
    clf_dir = args.classifier or script_run(args, "fig-classifier", model="classifier",
                                            augment_shift=2, lr_schedule="cosine")
    classifier = load_classifier(clf_dir)
    reference = classifier_reference(clf_dir, classifier, args.fd_samples)

    panels = []
    for name, run in runs:
        config, model, meta = load_run(run)
        sampler = run_sampler(config, model)
        fd = run_quality(config, sampler, classifier, reference, args.fd_samples,
                         seed=args.seed)["fd"]
        labels = np.arange(64) % sampler.n_classes if sampler.n_classes else None
        images = sampler(64, np.random.default_rng(args.seed), labels)
        epochs = int(meta["epoch"])
        panels.append((f"{name}, {epochs} epoch{'s' if epochs != 1 else ''}", images, fd))
        print(f"{name}: FD {fd:.2f} ({args.fd_samples} samples)")

    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(panels), 3.7))
    for k, (name, images, fd) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        plots.show_grid(ax, plots.image_grid(images, ncol=8))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f"FD {fd:.2f}", fontsize=11)
    fig.suptitle(f"samples of each model; FD on the classifier's features, {args.fd_samples:,} "
                 f"samples (real digits: {reference['fd_floor']:.2f})", fontsize=10)
    fig.tight_layout()
    out = plots.save_png(fig, args.out or OUT)
    print(f"saved {os.path.abspath(out)}")
    return out


if __name__ == "__main__":
    main()

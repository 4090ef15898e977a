"""The signal-to-noise ratio of the encoder's and the decoder's gradient against k,
for the IWAE and the DReG estimators (Rainforth et al. 2018, "Tighter Variational
Bounds are Not Necessarily Better", fig. 1; Tucker et al. 2018).

The model: iwae-1l (784-200-200-50, tanh) trained briefly with the ELBO (default:
5 epochs on the first 10,000 MNIST training images; runs/fig-snr, reused when
already there). At its trained parameters, for each k and estimator, the gradient
of the loss -1/N sum_n L_k(x_n) on a fixed batch of test images is drawn ``--draws``
times with fresh noise (the same noise for both estimators). For each parameter
theta_j, SNR_j = |mean(g_j)| / std(g_j) over the draws; each curve is the mean
of SNR_j over the encoder's (resp. the decoder's) parameters.

Rainforth et al. show that as k grows, IWAE's encoder SNR falls like 1/sqrt(k)
(the gradient of the bound shrinks faster than its noise) and the decoder's rises
like sqrt(k). DReG keeps the decoder's gradient (the two decoder curves coincide)
and drops the score term from the encoder's. On the default model (-ELBO about
190 nats after 5 epochs; 24 of the 50 posterior means vary over the batch) the figure shows, from
k = 1 to 100: IWAE's encoder SNR 0.44 -> 0.20, DReG's 0.73 -> 0.44 (higher at
every k, falling more slowly, not rising), the decoder's 4.5 -> 11.6. With 100
draws a parameter whose gradient has mean 0 still shows an SNR of about
sqrt(2 / pi) / sqrt(100) = 0.08. At k = 1 DReG is STL.

    python examples/fig_gradient_snr.py         # 3 minutes on 2 busy cores, 1 of them training
    python examples/fig_gradient_snr.py --quick --out /tmp/snr.png
"""
import argparse
import os

import numpy as np

from scratchvae.figures import add_script_args, script_run
from scratchvae.ops.sampler import draw_eps
from scratchvae.rundir import load_run, load_test_images

OUT = "docs/figures/gradient_snr.png"
ESTIMATORS = ("iwae", "dreg")
LABELS = {"iwae": "IWAE", "dreg": "DReG"}


def gradient_draws(model, x, objective, k, draws, rng):
    """(draws, P_enc) and (draws, P_dec): the encoder's and decoder's gradients of
    ``draws`` loss evaluations with fresh noise eps (k, N, Z) from ``rng``."""
    model.objective = objective   # the same parameters under another estimator
    mu, _ = model.encode(x)
    encoder, decoder = [], []
    for _ in range(draws):
        model.zero_grad()
        model.loss(x, eps=draw_eps(rng, k, mu), check_inputs=False)
        model.backward()
        encoder.append(np.concatenate([p.grad.ravel() for p in model.encoder.parameters()]))
        decoder.append(np.concatenate([p.grad.ravel() for p in model.decoder.parameters()]))
    return np.array(encoder, dtype=np.float64), np.array(decoder, dtype=np.float64)


def mean_snr(g):
    """Mean over parameters of |mean(g_j)| / std(g_j) over the draws (rows); parameters
    whose gradient does not vary (std 0) are left out."""
    mean, std = np.abs(g.mean(axis=0)), g.std(axis=0, ddof=1)
    varies = std > 0
    return float((mean[varies] / std[varies]).mean())


def snr_table(model, x, ks, draws, seed=0):
    """{(estimator, part): [SNR for each k]}, part 'encoder' or 'decoder'."""
    table = {(e, part): [] for e in ESTIMATORS for part in ("encoder", "decoder")}
    for k in ks:
        for estimator in ESTIMATORS:
            rng = np.random.default_rng([seed, k])   # the same noise for both estimators
            enc, dec = gradient_draws(model, x, estimator, k, draws, rng)
            table[estimator, "encoder"].append(mean_snr(enc))
            table[estimator, "decoder"].append(mean_snr(dec))
    return table


def plot_snr(table, ks, out, title):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for ax, part in zip(axes, ("encoder", "decoder")):
        for estimator, style in zip(ESTIMATORS, ("o-", "s--")):
            ax.plot(ks, table[estimator, part], style, label=LABELS[estimator])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("k (samples per image)")
        ax.set_title(f"{part} gradient")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("mean SNR over parameters")
    axes[0].legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_script_args(parser, epochs=5)
    parser.set_defaults(train_limit=10000)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3, 10, 30, 100],
                        help="numbers of samples (default 1 3 10 30 100)")
    parser.add_argument("--draws", type=int, default=100,
                        help="gradient draws per point (default 100)")
    parser.add_argument("--images", type=int, default=20,
                        help="test images in the batch of each gradient (default 20)")
    parser.add_argument("--quick", action="store_true",
                        help="a test-sized run: the bundled sample, 1 epoch, k 1 3 10, 10 draws")
    args = parser.parse_args(argv)
    if args.quick:
        args.sample, args.epochs, args.train_limit, args.test_limit = True, 1, 200, 50
        args.k, args.draws, args.images = [1, 3, 10], 10, 5
    run = script_run(args, "fig-snr" + ("-quick" if args.quick else ""), model="iwae-1l",
                     batch_size=100)
    config, model, meta = load_run(run)
    x, _ = load_test_images(config, args.images)
    x = model.xp.asarray(x)
    table = snr_table(model, x, args.k, args.draws, args.seed)
    for estimator in ESTIMATORS:
        for part in ("encoder", "decoder"):
            values = "  ".join(f"k={k}: {v:.3f}" for k, v in zip(args.k, table[estimator, part]))
            print(f"{estimator:4s} {part:7s}  {values}")
    data = "MNIST sample" if config.use_sample else f"{config.train_limit or 60000} MNIST images"
    title = (f"iwae-1l after {meta['epoch']} ELBO epoch{'s' if meta['epoch'] != 1 else ''} on "
             f"{data}: gradient SNR, {args.draws} draws, batch of {args.images}")
    out = plot_snr(table, args.k, args.out or OUT, title)
    print(f"saved {os.path.abspath(out)}")
    return out


if __name__ == "__main__":
    main()

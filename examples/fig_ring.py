"""Figure 8: the ring of Doersch's VAE tutorial (2016, fig. 2).

Data: x = g(z) = z/10 + z/|z| with z ~ N(0, I_2), points on a ring of radius
about 1. A small MLP VAE (2 -> H -> 2 x 2 encoder, 2 -> H -> 2 decoder, Z = 2)
with a Gaussian likelihood N(x; f(z), diag sigma^2) is fitted to them, sigma^2
fixed and small (0.01; --variance). Its samples f(z) + sigma e, z ~ N(0, I),
are drawn over the data; a second panel shows the noise-free decoder means
f(z), coloured by the angle of z: the decoder wraps the Gaussian around the
ring, as in the tutorial.

With --learned-variance sigma^2 is a learned parameter instead, and the fit
falls into the well-known bad optimum: sigma grows to the spread of the whole
data set (~0.8), the decoder ignores z (KL -> 0, posterior collapse) and the
samples fill the disc.

The loop is the engine's: model.loss, model.backward, Adam. The fitted model
is saved to runs/fig-ring/checkpoint.npz (reuse it with --run DIR).

    python examples/fig_ring.py
    python examples/fig_ring.py --learned-variance --out docs/figures/ring_learned_variance.png
"""
import argparse
import os

import numpy as np

from scratchvae import checkpoints as ckpt
from scratchvae import data, plots, toy
from scratchvae.models import mlp_vae
from scratchvae.optimizers import Adam

OUT = "docs/figures/ring.png"


def build(hidden, likelihood, variance, rng):
    return mlp_vae(image_shape=(2,), hidden_dim=hidden, latent_dim=2, rng=rng,
                   likelihood=likelihood, gaussian_variance=variance)


def fit_ring_vae(points, epochs=100, hidden=128, likelihood="gaussian-learned", variance=1.0,
                 lr=1e-3, batch_size=128, seed=0, log=print):
    """Fit the MLP VAE to points (N, 2); returns (model, per-epoch mean losses)."""
    init, shuffle, noise = (np.random.default_rng(s)
                            for s in np.random.SeedSequence(seed).spawn(3))
    model = build(hidden, likelihood, variance, init)
    optimizer = Adam(model.parameters(), lr=lr)
    history = []
    for epoch in range(1, epochs + 1):
        total = 0.0
        for xb, _ in data.iterate_batches(points, None, batch_size, rng=shuffle):
            optimizer.zero_grad()
            loss, _ = model.loss(xb, rng=noise)
            model.backward()
            optimizer.step()
            total += float(loss) * len(xb)
        history.append(total / len(points))
        if epoch == 1 or epoch % max(1, epochs // 10) == 0 or epoch == epochs:
            log(f"epoch {epoch:4d}  -ELBO {history[-1]:.4f} nats per point")
    return model, history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=100, help="epochs (default 100)")
    parser.add_argument("--points", type=int, default=10000, help="training points (10000)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden units (default 128)")
    parser.add_argument("--variance", type=float, default=0.01,
                        help="fixed variance sigma^2 of p(x|z) (default 0.01)")
    parser.add_argument("--learned-variance", action="store_true",
                        help="learn sigma^2 (a per-coordinate parameter) instead")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=3000, help="points drawn (3000)")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--run", default=None, metavar="DIR", help="reuse a fitted model")
    parser.add_argument("--out", default=None, help=f"output PNG (default {OUT})")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed + 1000)
    points = toy.ring_points(args.points, rng)
    if args.run:
        model_state, _, meta = ckpt.load_checkpoint(os.path.join(args.run, ckpt.CHECKPOINT))
        h = meta["ring"]
        model = build(h["hidden"], h["likelihood"], h["variance"], np.random.default_rng(0))
        model.load_state_dict(model_state)
    else:
        likelihood = "gaussian-learned" if args.learned_variance else "gaussian"
        h = {"hidden": args.hidden, "likelihood": likelihood, "variance": args.variance,
             "points": args.points, "lr": args.lr, "seed": args.seed}
        model, history = fit_ring_vae(points, args.epochs, args.hidden, likelihood,
                                      h["variance"], args.lr, seed=args.seed)
        meta = {"epoch": args.epochs, "ring": h, "history": history}
        run_dir = os.path.join(args.runs_dir, "fig-ring" + ("-learned" if args.learned_variance
                                                          else ""))
        os.makedirs(run_dir, exist_ok=True)
        ckpt.save_checkpoint(os.path.join(run_dir, ckpt.CHECKPOINT), model.state_dict(), {},
                             meta)
    samples, means, z = toy.ring_samples(model, args.samples, np.random.default_rng(args.seed))
    if h["likelihood"] == "gaussian-learned":
        sigma = np.exp(0.5 * model.logvar_x.data.ravel())
        noise = f"learned σ = ({sigma[0]:.3f}, {sigma[1]:.3f})"
    else:
        noise = f"fixed σ² = {h['variance']:g}"
    final = f", final train −ELBO {meta['history'][-1]:.3f}" if meta.get("history") else ""
    out = plots.plot_ring(points[:args.samples], samples, means, z, args.out or OUT,
                          title=f"ring x = z/10 + z/|z|: MLP VAE (H={h['hidden']}, Z=2), "
                                f"{meta['epoch']} epochs, {noise}{final}")
    print(f"saved {os.path.abspath(out)}")
    return out


if __name__ == "__main__":
    main()

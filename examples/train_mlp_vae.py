"""Train the MLP VAE with the engine's API directly: the loop that
`python -m scratchvae train` runs, written out in a page.

    python examples/train_mlp_vae.py --epochs 2

Uses full MNIST when found (see README), else the bundled sample.
"""
import argparse

import numpy as np

from scratchvae import data
from scratchvae.models import mlp_vae
from scratchvae.optimizers import Adam


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    ds = data.load_dataset("mnist")                   # full set, or the bundled sample
    x_train = data.images_to_float(ds.train_images)   # (N, 1, 28, 28) in [0, 1]
    x_test = data.images_to_float(ds.test_images)

    rng = np.random.default_rng(args.seed)            # the only source of randomness
    model = mlp_vae(latent_dim=20, rng=rng)           # 784-400-(20, 20) / 20-400-784
    optimizer = Adam(model.parameters(), lr=1e-3)

    for epoch in range(1, args.epochs + 1):
        total = 0.0
        for xb, _ in data.iterate_batches(x_train, None, batch_size=128, rng=rng):
            optimizer.zero_grad()
            loss, parts = model.loss(xb, rng=rng)     # forward: encoder, sampler, decoder, losses
            model.backward()                          # backward: the same chain in reverse
            optimizer.step()
            total += float(loss) * len(xb)
        test = model.test_metrics(x_test, rng=np.random.default_rng(123))
        print(f"epoch {epoch}: train loss {total / len(x_train):.2f}, "
              f"test -ELBO {test['test_nelbo']:.2f} (recon {test['test_recon']:.2f}, "
              f"KL {test['test_kl']:.2f})")

    samples = model.sample(16, rng)                   # (16, 1, 28, 28) Bernoulli means
    print("samples:", samples.shape, f"mean intensity {samples.mean():.3f}")


if __name__ == "__main__":
    main()

"""The MLP VAE of Kingma & Welling (2014) as in PyTorch's example.

    encoder: Flatten, Linear(D, H), ReLU, Linear(H, 2Z)  -> [mu | logvar]
    decoder: Linear(Z, H), ReLU, Linear(H, D), Reshape(image_shape) -> logits

With D = 784, H = 400, Z = 20 this has 652,824 parameters (one Linear(H, 2Z)
head holds exactly the weights of PyTorch's two Linear(H, Z) heads, with the
same initialisation bound 1/sqrt(H)).
"""
import numpy as np

from ..layers import Flatten, Linear, ReLU, Reshape, Sequential
from .vae import VAE


def mlp_vae(image_shape=(1, 28, 28), hidden_dim=400, latent_dim=20, rng=None,
            dtype=np.float32, **vae_options):
    """Build the MLP VAE. ``vae_options`` go to :class:`VAE` (likelihood, beta, ...)."""
    rng = np.random.default_rng(0) if rng is None else rng
    D = int(np.prod(image_shape))
    encoder = Sequential(
        Flatten(),
        Linear(D, hidden_dim, rng=rng, dtype=dtype),
        ReLU(inplace=True),
        Linear(hidden_dim, 2 * latent_dim, rng=rng, dtype=dtype),
    )
    decoder = Sequential(
        Linear(latent_dim, hidden_dim, rng=rng, dtype=dtype),
        ReLU(inplace=True),
        Linear(hidden_dim, D, rng=rng, dtype=dtype),
        Reshape(*image_shape),
    )
    return VAE(encoder, decoder, latent_dim, image_shape=image_shape, **vae_options)

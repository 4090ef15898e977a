"""The one-stochastic-layer model of Burda et al. (2015), "Importance Weighted
Autoencoders", section 5 (``iwae-1l``, Z = 50, 425,284 parameters):

    encoder: Flatten, Linear(784, 200), Tanh, Linear(200, 200), Tanh, Linear(200, 2Z)
             -> [mu | logvar]
    decoder: Linear(Z, 200), Tanh, Linear(200, 200), Tanh, Linear(200, 784),
             Reshape(1, 28, 28) -> Bernoulli logits

The same VAE (loss, backward, evaluation) as every other model here; the
objective (ELBO, IWAE, ...) and the number of samples k are options of
:class:`VAE`.
"""
import numpy as np

from ..layers import Flatten, Linear, Reshape, Sequential, Tanh
from .vae import VAE


def tanh_mlp(sizes, rng, dtype):
    """Linear(sizes[0], sizes[1]), Tanh, ..., Linear(sizes[-2], sizes[-1]): a Tanh
    between each pair of Linear layers, none after the last."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(Tanh())
        layers.append(Linear(n_in, n_out, rng=rng, dtype=dtype))
    return layers


def iwae_1l(image_shape=(1, 28, 28), hidden_dim=200, latent_dim=50, rng=None,
            dtype=np.float32, **vae_options):
    """Build ``iwae-1l``. ``vae_options`` go to :class:`VAE` (objective, n_samples, ...)."""
    rng = np.random.default_rng(0) if rng is None else rng
    D = int(np.prod(image_shape))
    encoder = Sequential(Flatten(), *tanh_mlp((D, hidden_dim, hidden_dim, 2 * latent_dim),
                                              rng, dtype))
    decoder = Sequential(*tanh_mlp((latent_dim, hidden_dim, hidden_dim, D), rng, dtype),
                         Reshape(*image_shape))
    return VAE(encoder, decoder, latent_dim, image_shape=image_shape, **vae_options)

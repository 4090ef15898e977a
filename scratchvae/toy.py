"""Toy data: Doersch's ring (Tutorial on Variational Autoencoders, 2016, fig. 2).

Points x = g(z) = z/10 + z/|z| with z ~ N(0, I_2) lie near a ring of radius 1:
a 2-D VAE with a Gaussian likelihood learns a decoder f that wraps the
Gaussian latent space around it (examples/fig_ring.py, ``plots.plot_ring``).
"""
import math

import numpy as np

from .backend import to_numpy


def ring_points(n, rng):
    """n points x = g(z) = z/10 + z/|z| with z ~ N(0, I_2): a ring of radius ~1.
    Returns float32 (n, 2)."""
    z = rng.standard_normal((n, 2))
    r = np.linalg.norm(z, axis=1, keepdims=True)
    return (z / 10 + z / np.maximum(r, 1e-12)).astype(np.float32)


def ring_samples(model, n, rng):
    """Samples of a 2-D VAE: z ~ N(0, I), x = f(z) + sigma e with the decoder's
    (learned or fixed) noise. Returns (x, means, z) on the host, each (n, 2)."""
    z = rng.standard_normal((n, model.latent_dim)).astype(model.dtype)
    means = np.asarray(to_numpy(model.decode(model.xp.asarray(z))))
    if model.likelihood == "gaussian-learned":
        sigma = np.exp(0.5 * np.asarray(to_numpy(model.logvar_x.data)))
    else:
        sigma = math.sqrt(model.gaussian_variance)
    x = means + sigma * rng.standard_normal(means.shape)
    return x, means, z

"""The convolutional VAE (Z = 10 by default, 876,757 parameters).

    encoder: Conv(1,32,4,2,1) ReLU Conv(32,64,4,2,1) ReLU Flatten        28 -> 14 -> 7
             Linear(64*7*7, 128) ReLU Linear(128, 2Z)                    -> [mu | logvar]
    decoder: Linear(Z, 128) ReLU Linear(128, 64*7*7) ReLU Reshape(64, 7, 7)
             ConvT(64,32,4,2,1) ReLU ConvT(32,1,4,2,1)                   7 -> 14 -> 28 logits

Conv(in, out, kernel, stride, padding); same loss, data and optimiser as the
MLP VAE. Every ReLU of the models here follows a linear or convolution
layer and overwrites that layer's fresh output (``ReLU(inplace=True)``),
which nothing else holds: the layers cache their inputs, not their outputs.
"""
import numpy as np

from ..layers import (Conv2d, ConvTranspose2d, Flatten, Linear, ReLU, Reshape, Sequential)
from .vae import VAE


def conv_features(image_shape, channels, rng, dtype):
    """Conv(C,c1,4,2,1) ReLU Conv(c1,c2,4,2,1) ReLU Flatten: the feature stack
    shared by the conv VAE, the conditional conv VAE and the classifier.

    Returns the layers and the flattened width c2 * H/4 * W/4.
    """
    C, H, W = image_shape
    if H % 4 or W % 4:
        raise ValueError(f"conv models: expected image sides divisible by 4, got {image_shape}")
    c1, c2 = channels
    layers = [Conv2d(C, c1, 4, 2, 1, rng=rng, dtype=dtype), ReLU(inplace=True),
              Conv2d(c1, c2, 4, 2, 1, rng=rng, dtype=dtype), ReLU(inplace=True),
              Flatten()]
    return layers, c2 * (H // 4) * (W // 4)


def deconv_layers(image_shape, channels, rng, dtype):
    """Reshape(c2, H/4, W/4) ConvT(c2,c1,4,2,1) ReLU ConvT(c1,C,4,2,1): the
    decoder's upsampling stack, the mirror of :func:`conv_features`."""
    C, H, W = image_shape
    c1, c2 = channels
    return [Reshape(c2, H // 4, W // 4),
            ConvTranspose2d(c2, c1, 4, 2, 1, rng=rng, dtype=dtype), ReLU(inplace=True),
            ConvTranspose2d(c1, C, 4, 2, 1, rng=rng, dtype=dtype)]


def conv_vae(image_shape=(1, 28, 28), latent_dim=10, hidden_dim=128, channels=(32, 64),
             rng=None, dtype=np.float32, **vae_options):
    """Build the conv VAE for images whose sides are multiples of 4.

    ``channels`` (c1, c2) are the widths of the two conv stages (32, 64);
    gradient checks use a narrower instance of the same architecture.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    kw = dict(rng=rng, dtype=dtype)
    features, width = conv_features(image_shape, channels, **kw)
    encoder = Sequential(
        *features,
        Linear(width, hidden_dim, **kw), ReLU(inplace=True),
        Linear(hidden_dim, 2 * latent_dim, **kw),
    )
    decoder = Sequential(
        Linear(latent_dim, hidden_dim, **kw), ReLU(inplace=True),
        Linear(hidden_dim, width, **kw), ReLU(inplace=True),
        *deconv_layers(image_shape, channels, **kw),
    )
    return VAE(encoder, decoder, latent_dim, image_shape=image_shape, **vae_options)

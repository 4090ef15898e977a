"""Models: the VAE loss/backward chain and the architectures built on it."""
from .classifier import Classifier, cnn_classifier
from .conv_vae import conv_vae
from .cvae import CVAE, conv_cvae, mlp_cvae
from .hvae import HierarchicalVAE, iwae_2l
from .iwae import iwae_1l
from .mlp_vae import mlp_vae
from .pixelcnn import PixelCNN, pixelcnn
from .vae import LIKELIHOODS, VAE
from .vq_vae import VQVAE, VectorQuantizer, vq_vae

#: name on the command line -> builder(latent_dim=..., rng=..., dtype=..., **options)
MODELS = {
    "mlp-vae": mlp_vae,
    "conv-vae": conv_vae,
    "conv-cvae": conv_cvae,
    "mlp-cvae": mlp_cvae,
    "vq-vae": vq_vae,
    "classifier": cnn_classifier,
    "pixelcnn": pixelcnn,
    "iwae-1l": iwae_1l,
    "iwae-2l": iwae_2l,
}
#: each model's default latent dimension
DEFAULT_LATENT_DIM = {
    "mlp-vae": 20,
    "conv-vae": 10,
    "conv-cvae": 10,
    "mlp-cvae": 20,
    "classifier": 0,   # no latent space
    "vq-vae": 16,      # the code size D
    "pixelcnn": 0,     # a prior over code maps: no latent space of its own
    "iwae-1l": 50,
    "iwae-2l": 50,     # the top layer z2 (z1: 100 units)
}


def build_model(name, **options):
    """Build a registered model by its command-line name."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name](**options)


__all__ = ["VAE", "LIKELIHOODS", "MODELS", "DEFAULT_LATENT_DIM", "build_model", "mlp_vae",
           "conv_vae", "CVAE", "conv_cvae", "mlp_cvae", "VQVAE", "VectorQuantizer", "vq_vae",
           "Classifier", "cnn_classifier", "PixelCNN", "pixelcnn", "iwae_1l",
           "HierarchicalVAE", "iwae_2l"]

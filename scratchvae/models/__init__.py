"""Models: the VAE loss/backward chain and the architectures built on it."""
from .conv_vae import conv_vae
from .mlp_vae import mlp_vae
from .vae import LIKELIHOODS, VAE

#: name on the command line -> builder(latent_dim=..., rng=..., dtype=..., **options)
MODELS = {
    "mlp-vae": mlp_vae,
    "conv-vae": conv_vae,
}
#: each model's default latent dimension
DEFAULT_LATENT_DIM = {"mlp-vae": 20, "conv-vae": 10}


def build_model(name, **options):
    """Build a registered model by its command-line name."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name](**options)


__all__ = ["VAE", "LIKELIHOODS", "MODELS", "DEFAULT_LATENT_DIM", "build_model", "mlp_vae", "conv_vae"]

"""PyTorch twins of scratchvae's models (same layers, same loss), for benchmarks.

Imported only by benchmark scripts, and only when PyTorch is installed.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class TorchVAE(nn.Module):
    """Encoder -> [mu | logvar] -> z -> decoder logits; Bernoulli loss + KL."""

    def __init__(self, encoder, decoder, latent_dim):
        super().__init__()
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, latent_dim

    def loss(self, x):
        h = self.encoder(x)
        mu, logvar = h[:, :self.latent_dim], h[:, self.latent_dim:]
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = self.decoder(z)
        n = x.shape[0]
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / n
        return recon + kl, recon, kl


def mlp_vae(latent_dim=20, hidden=400):
    enc = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(),
                        nn.Linear(hidden, 2 * latent_dim))
    dec = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, 784),
                        nn.Unflatten(1, (1, 28, 28)))
    return TorchVAE(enc, dec, latent_dim)


def conv_vae(latent_dim=10, hidden=128):
    enc = nn.Sequential(
        nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
        nn.Flatten(), nn.Linear(64 * 7 * 7, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))
    dec = nn.Sequential(
        nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, 64 * 7 * 7), nn.ReLU(),
        nn.Unflatten(1, (64, 7, 7)), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, 1, 4, 2, 1))
    return TorchVAE(enc, dec, latent_dim)


MODELS = {"mlp-vae": mlp_vae, "conv-vae": conv_vae}

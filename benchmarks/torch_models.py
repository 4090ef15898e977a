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

    def loss(self, x, labels=None, eps=None):
        """(loss, recon, kl); eps (N, Z) given replaces torch's own N(0, 1) draw."""
        h = self.encoder(x)
        mu, logvar = h[:, :self.latent_dim], h[:, self.latent_dim:]
        z = mu + torch.exp(0.5 * logvar) * (torch.randn_like(mu) if eps is None else eps)
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


class TorchConvCVAE(TorchVAE):
    """conv-cvae: one-hot label joined to the encoder's features and to z."""

    def __init__(self, latent_dim=10, hidden=128, n_classes=10):
        enc_head = nn.Sequential(nn.Linear(64 * 7 * 7 + n_classes, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * latent_dim))
        dec = nn.Sequential(
            nn.Linear(latent_dim + n_classes, hidden), nn.ReLU(), nn.Linear(hidden, 64 * 7 * 7),
            nn.ReLU(), nn.Unflatten(1, (64, 7, 7)), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, 2, 1))
        super().__init__(enc_head, dec, latent_dim)
        self.features = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(),
                                      nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten())
        self.n_classes = n_classes

    def loss(self, x, labels=None, eps=None):
        c = F.one_hot(labels, self.n_classes).to(x.dtype)
        h = self.encoder(torch.cat([self.features(x), c], dim=1))
        mu, logvar = h[:, :self.latent_dim], h[:, self.latent_dim:]
        z = mu + torch.exp(0.5 * logvar) * (torch.randn_like(mu) if eps is None else eps)
        logits = self.decoder(torch.cat([z, c], dim=1))
        n = x.shape[0]
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / n
        return recon + kl, recon, kl


class TorchVQVAE(nn.Module):
    """vq-vae with the plain codebook loss (no EMA, no restarts), N(0, 1) codebook."""

    def __init__(self, code_dim=16, num_codes=128, commitment=0.25):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(),
                                     nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                                     nn.Conv2d(64, code_dim, 1, 1, 0))
        self.codebook = nn.Parameter(torch.randn(num_codes, code_dim))
        self.decoder = nn.Sequential(nn.Conv2d(code_dim, 64, 3, 1, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(32, 1, 4, 2, 1))
        self.commitment = commitment

    def loss(self, x, labels=None):
        z_e = self.encoder(x)                                   # (N, D, 7, 7)
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
        d = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t()
             + self.codebook.pow(2).sum(1))
        z_q = self.codebook[d.argmin(1)].view(z_e.shape[0], z_e.shape[2], z_e.shape[3], -1)
        z_q = z_q.permute(0, 3, 1, 2)
        n = x.shape[0]
        codebook = (z_e.detach() - z_q).pow(2).sum() / n
        commit = (z_e - z_q.detach()).pow(2).sum() / n
        logits = self.decoder(z_e + (z_q - z_e).detach())       # straight-through
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
        return recon + codebook + self.commitment * commit, recon, codebook


MODELS = {"mlp-vae": mlp_vae, "conv-vae": conv_vae, "conv-cvae": TorchConvCVAE,
          "vq-vae": TorchVQVAE}

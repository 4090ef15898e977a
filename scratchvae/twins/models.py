"""PyTorch twins of scratchvae's models (same layers, same loss, the parameters
in the same shapes), for ``sweep --twin`` and the benchmarks.

``MODELS``: the image models (loss(x, labels)); ``PRIORS``: the PixelCNN prior
over code maps (loss(codes, labels)). ``iwae-1l`` also takes scratchvae's
``objective`` and ``n_samples`` (k): :class:`TorchIWAE`.
:func:`twin_with_weights_of` builds a twin holding a copy of a scratchvae model's
weights. Imported only when PyTorch is installed.
"""
import math

import numpy as np
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
    """vq-vae with the codebook loss, and scratchvae's codebook options.

    ``codebook_init``: 'normal' (N(0, 1), nn.Embedding's default) or 'uniform'
    (U(-1/K, 1/K)); ``restart_after`` R > 0: in training, a code that no vector
    chose during R consecutive steps is set to a random encoder output of the
    batch, after the forward (as scratchvae's VectorQuantizer). The defaults
    are scratchvae's (normal, restarts after 1 unused step).
    """

    def __init__(self, code_dim=16, num_codes=128, commitment=0.25, codebook_init="normal",
                 restart_after=1):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(),
                                     nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                                     nn.Conv2d(64, code_dim, 1, 1, 0))
        if codebook_init == "normal":
            codebook = torch.randn(num_codes, code_dim)
        elif codebook_init == "uniform":
            codebook = torch.empty(num_codes, code_dim).uniform_(-1 / num_codes, 1 / num_codes)
        else:
            raise ValueError(f"TorchVQVAE: codebook_init must be 'normal' or 'uniform', "
                             f"got {codebook_init!r}")
        self.codebook = nn.Parameter(codebook)
        self.decoder = nn.Sequential(nn.Conv2d(code_dim, 64, 3, 1, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(32, 1, 4, 2, 1))
        self.commitment = commitment
        self.restart_after = restart_after
        self.register_buffer("unused_steps", torch.zeros(num_codes, dtype=torch.long))

    def _quantize(self, x):
        z_e = self.encoder(x)                                   # (N, D, 7, 7)
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
        d = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t()
             + self.codebook.pow(2).sum(1))
        idx = d.argmin(1)
        z_q = self.codebook[idx].view(z_e.shape[0], z_e.shape[2], z_e.shape[3], -1)
        return z_e, flat, idx, z_q.permute(0, 3, 1, 2)

    def loss(self, x, labels=None, rng=None):
        """(loss, recon, codebook term); in training, dead codes restart after the
        forward, their rows drawn from the NumPy generator ``rng`` as scratchvae draws
        them (torch's own generator without it)."""
        z_e, flat, idx, z_q = self._quantize(x)
        n = x.shape[0]
        codebook = (z_e.detach() - z_q).pow(2).sum() / n
        commit = (z_e - z_q.detach()).pow(2).sum() / n
        logits = self.decoder(z_e + (z_q - z_e).detach())       # straight-through
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
        if self.training and self.restart_after:
            self._restart_dead_codes(flat.detach(), idx, rng)
        return recon + codebook + self.commitment * commit, recon, codebook

    @torch.no_grad()
    def _restart_dead_codes(self, rows, idx, rng=None):
        used = torch.bincount(idx, minlength=self.codebook.shape[0]) > 0
        self.unused_steps = torch.where(used, 0, self.unused_steps + 1)
        dead = torch.nonzero(self.unused_steps >= self.restart_after)[:, 0][:rows.shape[0]]
        if len(dead):
            if rng is None:
                picks = torch.randperm(rows.shape[0])[:len(dead)]
            else:   # scratchvae's draw: distinct rows from its training generator
                picks = torch.from_numpy(rng.choice(rows.shape[0], size=len(dead),
                                                    replace=False))
            self.codebook.data[dead] = rows[picks]
            self.unused_steps[dead] = 0

    @torch.no_grad()
    def test_metrics(self, x, batch_size=1000):
        """scratchvae's VQ-VAE test metrics over x (a NumPy array): test_recon (BCE per
        image), test_mse (per pixel), test_quantization_error (||z_e - z_q||^2 per
        image), test_vq_loss ((1 + commitment) times it), test_loss, codes_used and
        perplexity."""
        counts = torch.zeros(self.codebook.shape[0], dtype=torch.long)
        recon = mse = sq = 0.0
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[i:i + batch_size])
            z_e, _, idx, z_q = self._quantize(xb)
            logits = self.decoder(z_q)
            recon += float(F.binary_cross_entropy_with_logits(logits, xb, reduction="sum"))
            mse += float((torch.sigmoid(logits) - xb).pow(2).sum())
            sq += float((z_e - z_q).pow(2).sum())
            counts += torch.bincount(idx, minlength=len(counts))
        p = counts.double() / counts.sum()
        p = p[p > 0]
        n, weight = len(x), 1 + self.commitment
        return {"test_recon": recon / n, "test_mse": mse / x[:1].size / n,
                "test_vq_loss": weight * sq / n, "test_quantization_error": sq / n,
                "test_loss": (recon + weight * sq) / n, "codes_used": int((counts > 0).sum()),
                "perplexity": float(torch.exp(-(p * p.log()).sum()))}


class TorchGatedLayer(nn.Module):
    """One layer of both stacks of scratchvae's gated PixelCNN
    (scratchvae/models/pixelcnn.py), its parameters in the same order.

    The causal padding is ``F.pad`` with a negative pad at the far end: the
    vertical input drops its last ``shift`` rows and gains r + shift zero rows
    on top, the horizontal input likewise on columns (shift 1 in the first
    layer of type A, 0 after it). The last layer's residual output feeds
    nothing, so it is not computed (its parameters get no gradient; ours get 0).
    """

    def __init__(self, channels, kernel, first, n_classes, first_type="A"):
        super().__init__()
        C, r = channels, kernel // 2
        self.C, self.r, self.first = C, r, first
        self.v_shift, self.h_shift = (1, 1 if first_type == "A" else 0) if first else (0, 0)
        self.v_conv = nn.Conv2d(C, 2 * C, (r + 1, kernel), padding=(0, r))
        self.h_conv = nn.Conv2d(C, 2 * C, (1, r + 1))
        self.link = nn.Conv2d(2 * C, 2 * C, 1)
        self.res = nn.Conv2d(C, C, 1)
        self.skip = nn.Conv2d(C, C, 1)
        self.v_class = nn.Embedding(n_classes, 2 * C) if n_classes else None
        self.h_class = nn.Embedding(n_classes, 2 * C) if n_classes else None

    def gate(self, a):
        return torch.tanh(a[:, :self.C]) * torch.sigmoid(a[:, self.C:])

    def forward(self, v, h, labels, last):
        """(v_l, h_l) -> (v_l+1 or None after the last layer, h_l+1 or None, skip_l)."""
        a_v = self.v_conv(F.pad(v, (0, 0, self.r + self.v_shift, -self.v_shift)))
        if self.v_class is not None:
            a_v = a_v + self.v_class(labels)[:, :, None, None]
        a_h = self.h_conv(F.pad(h, (self.r + self.h_shift, -self.h_shift))) + self.link(a_v)
        if self.h_class is not None:
            a_h = a_h + self.h_class(labels)[:, :, None, None]
        g = self.gate(a_h)
        h_next = None if last else (self.res(g) if self.first else self.res(g) + h)
        return (None if last else self.gate(a_v)), h_next, self.skip(g)


class TorchPixelCNN(nn.Module):
    """scratchvae's gated PixelCNN prior: embedding, L gated layers, skip sum,
    head ReLU -> 1x1 -> ReLU -> 1x1; optional class bias (nn.Embedding
    (n_classes, 2C), as ClassBias's table) before each gate."""

    def __init__(self, num_codes=128, channels=64, layers=6, kernel=3, n_classes=0,
                 first_type="A"):
        super().__init__()
        self.n_classes = n_classes
        self.embedding = nn.Embedding(num_codes, channels)
        self.layers = nn.ModuleList(TorchGatedLayer(channels, kernel, i == 0, n_classes,
                                                    first_type) for i in range(layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1),
                                  nn.ReLU(inplace=True), nn.Conv2d(channels, num_codes, 1))

    def logits(self, codes, labels=None):
        """codes (N, H, W) int64 -> logits (N, K, H, W)."""
        e = self.embedding(codes).permute(0, 3, 1, 2)
        v, h, s = e, e, 0
        for i, layer in enumerate(self.layers):
            v, h, skip = layer(v, h, labels, last=i == len(self.layers) - 1)
            s = s + skip
        return self.head(s)

    def loss(self, codes, labels=None):
        """(loss, nll, bits_per_code): loss = nll = the mean over the batch of the
        summed per-position cross-entropy in nats; labels are read only with classes."""
        if self.n_classes and labels is None:
            raise ValueError("TorchPixelCNN.loss: this prior is class-conditional: pass labels")
        logits = self.logits(codes, labels if self.n_classes else None)
        n, h, w = codes.shape
        nll = F.cross_entropy(logits, codes, reduction="sum") / n
        return nll, nll, nll / (h * w) / math.log(2)


def pixelcnn(n_classes=0, **sizes):
    """The twin of scratchvae.models.pixelcnn (same defaults)."""
    return TorchPixelCNN(n_classes=n_classes, **sizes)


LOG_2PI = math.log(2 * math.pi)


class TorchIWAE(TorchVAE):
    """A Gaussian-latent VAE trained on k samples z_i = mu + sigma eps_i per image,
    with scratchvae's objectives (scratchvae/models/vae.py):

    elbo:  loss = 1/N sum_n [1/k sum_i BCE(x_n, z_in) + KL(q(z|x_n) || N(0, I))]
           (the KL in closed form)
    iwae:  loss = -1/N sum_n L_k(x_n),  L_k = logsumexp_i log w_i - log k,
           log w_i = -BCE(x, z_i) + log N(z_i; 0, I) - log q(z_i | x)
    dreg:  the same loss value; its gradient is Tucker et al.'s (2018): the
           decoder's as IWAE's, sum_i w~_i d log w_i / d theta; the encoder's
           sum_i w~_i^2 (d log w_i / d z_i) (d z_i / d phi), with log q's (mu, logvar)
           held fixed (w~ = softmax_i log w_i, held fixed too). Autograd gives it
           from sum_i w~_i log w_i with q's parameters detached and the gradient
           that reaches z_i scaled once more by w~_i (a hook on z).
    """

    def __init__(self, encoder, decoder, latent_dim, objective="elbo", n_samples=1):
        super().__init__(encoder, decoder, latent_dim)
        if objective not in ("elbo", "iwae", "dreg"):
            raise ValueError(f"TorchIWAE: objective must be elbo, iwae or dreg, got "
                             f"{objective!r}")
        self.objective, self.n_samples = objective, n_samples

    def loss(self, x, labels=None, eps=None):
        """(loss, recon, kl): recon and kl the k-sample ELBO's parts, whatever the
        objective; eps (k, N, Z) given replaces torch's own N(0, 1) draw."""
        h = self.encoder(x)
        mu, logvar = h[:, :self.latent_dim], h[:, self.latent_dim:]
        n = x.shape[0]
        if eps is None:
            eps = torch.randn(self.n_samples, *mu.shape, dtype=mu.dtype)
        k = eps.shape[0]
        z = mu + torch.exp(0.5 * logvar) * eps                        # (k, N, Z)
        logits = self.decoder(z.reshape(k * n, -1))
        bce = F.binary_cross_entropy_with_logits(
            logits, x.expand(k, *x.shape).reshape(k * n, *x.shape[1:]),
            reduction="none").reshape(k, n, -1).sum(2)                # (k, N)
        recon = bce.mean(0).sum() / n
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / n
        if self.objective == "elbo":
            return recon + kl, recon, kl
        if self.objective == "dreg":
            mu, logvar = mu.detach(), logvar.detach()
        log_q = -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(2)
        log_w = -bce - 0.5 * (z.pow(2) + LOG_2PI).sum(2) - log_q      # (k, N)
        bound = torch.logsumexp(log_w, 0) - math.log(k)               # (N,)
        loss = -bound.sum() / n
        if self.objective == "iwae":
            return loss, recon, kl
        w = torch.softmax(log_w.detach(), 0)                          # w~ (k, N)
        if z.requires_grad:
            z.register_hook(lambda g: g * w[:, :, None])
        surrogate = -(w * log_w).sum() / n
        return loss.detach() + surrogate - surrogate.detach(), recon, kl


def iwae_1l(objective="elbo", n_samples=1, latent_dim=50, hidden=200):
    """The twin of scratchvae.models.iwae_1l: tanh MLPs 784-200-200-2Z and Z-200-200-784."""
    enc = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.Tanh(),
                        nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent_dim))
    dec = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                        nn.Tanh(), nn.Linear(hidden, 784), nn.Unflatten(1, (1, 28, 28)))
    return TorchIWAE(enc, dec, latent_dim, objective=objective, n_samples=n_samples)


MODELS = {"mlp-vae": mlp_vae, "conv-vae": conv_vae, "conv-cvae": TorchConvCVAE,
          "vq-vae": TorchVQVAE, "iwae-1l": iwae_1l}
PRIORS = {"pixelcnn": pixelcnn}


def twin_parameters_in_our_order(twin):
    """The twin's parameters in the order of our model's ``parameters()``."""
    if hasattr(twin, "features"):   # conv-cvae: ours holds the conv features first
        return [p for m in (twin.features, twin.encoder, twin.decoder) for p in m.parameters()]
    if hasattr(twin, "codebook"):   # vq-vae: nn.Module lists its own parameter first
        return [*twin.encoder.parameters(), twin.codebook, *twin.decoder.parameters()]
    return list(twin.parameters())


def twin_with_weights_of(ours, model_name, **options):
    """The PyTorch twin of ``model_name`` (built with ``options``, e.g. its latent
    size) holding a copy of ``ours``' weights: the parameters line up one to one, in
    order, in the same layouts; a ValueError names the first pair that does not. A
    pixelcnn twin takes the sizes of ``ours`` (codes, channels, layers, kernel, classes)."""
    if model_name in PRIORS:
        twin = PRIORS[model_name](num_codes=ours.num_codes, channels=ours.channels,
                                  layers=ours.n_layers, kernel=ours.kernel,
                                  n_classes=ours.n_classes)
    else:
        twin = MODELS[model_name](**options)
    theirs = twin_parameters_in_our_order(twin)
    if len(theirs) != len(ours.parameters()):
        raise ValueError(f"{model_name}: the twin has {len(theirs)} parameters, ours "
                         f"{len(ours.parameters())}")
    with torch.no_grad():
        for p, q in zip(theirs, ours.parameters()):
            if tuple(p.shape) != tuple(q.data.shape):
                raise ValueError(f"{model_name}: parameters do not line up "
                                 f"({tuple(p.shape)} vs {tuple(q.data.shape)})")
            p.copy_(torch.from_numpy(np.asarray(q.data)))
    return twin

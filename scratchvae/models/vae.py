"""The variational autoencoder: an encoder, the sampler, a decoder, and a loss.

For an image x the encoder gives the mean and log-variance of q(z|x) =
N(mu, diag exp(logvar)); L samples z_l = mu + exp(logvar/2) eps_l go through
the decoder, which parameterises p(x|z). The loss of a batch is the mean
over its N images of the negative ELBO, with a weight beta on the KL term:

    loss = 1/N sum_n [ 1/L sum_l -log p(x_n | z_nl) + beta KL(q(z|x_n) || N(0, I)) ]

The backward is the chain of the forward read backwards (``VAE.backward``):
likelihood -> decoder -> sampler (+ KL) -> encoder.
"""
from dataclasses import dataclass

import numpy as np

from .. import losses
from ..backend import check_float, check_shape, get_xp, standard_normal
from ..layers import Module, Parameter
from ..ops.sampler import draw_eps, reparameterize_backward, reparameterize_forward

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned")


@dataclass
class _Cache:
    """What VAE.backward needs from the last call of VAE.loss."""
    n: int
    n_samples: int
    beta: float
    recon: tuple
    sampler: tuple
    kl: tuple


class VAE(Module):
    """A Gaussian-latent VAE around any encoder and decoder Module.

    encoder: images (N, *image_shape) -> (N, 2Z), read as [mu | logvar].
    decoder: z (M, Z) -> (M, *image_shape): Bernoulli logits, or the Gaussian mean.

    likelihood:
      'bernoulli'         p(x|z) = prod Bernoulli(x; sigmoid(logits)), x in [0, 1]
      'gaussian'          p(x|z) = N(x; mean, lambda I), lambda = ``gaussian_variance``
      'gaussian-learned'  p(x|z) = N(x; mean, diag exp(v)), v a learned per-pixel
                          parameter ``logvar_x`` of shape (1, *image_shape)
    """

    def __init__(self, encoder, decoder, latent_dim, image_shape=(1, 28, 28),
                 likelihood="bernoulli", gaussian_variance=1.0, beta=1.0, n_samples=1):
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"VAE: expected likelihood in {LIKELIHOODS}, got {likelihood!r}")
        if n_samples < 1:
            raise ValueError(f"VAE: expected n_samples >= 1, got {n_samples}")
        self.encoder = encoder.no_input_grad()  # images need no gradient
        self.decoder = decoder
        self.param_dtype = encoder.dtype  # checked against the input on every call
        self.latent_dim = int(latent_dim)
        self.image_shape = tuple(image_shape)
        self.likelihood = likelihood
        self.gaussian_variance = float(gaussian_variance)
        self.beta = float(beta)
        self.n_samples = int(n_samples)
        if likelihood == "gaussian-learned":
            dtype = encoder.dtype
            self.logvar_x = Parameter(np.zeros((1,) + self.image_shape, dtype=dtype))
        self._cache = None

    # -- the pieces ----------------------------------------------------------
    def encode(self, x):
        """x (N, *image_shape) -> (mu, logvar), each (N, Z)."""
        check_shape(type(self).__name__, "images", x, (None,) + self.image_shape)
        check_float(type(self).__name__, "images", x, self.param_dtype)
        h = self.encoder.forward(x)
        Z = self.latent_dim
        return h[:, :Z], h[:, Z:]

    def decode(self, z):
        """z (M, Z) -> decoder output (M, *image_shape): logits or mean."""
        return self.decoder.forward(z)

    def mean_image(self, out):
        """The decoder output as an image: sigmoid(logits), or the Gaussian mean."""
        if self.likelihood == "bernoulli":
            xp = get_xp(out)
            return 1 / (1 + xp.exp(-out))
        return out

    def reconstruct(self, x):
        """Decode the posterior mean: x -> mean image."""
        mu, _ = self.encode(x)
        return self.mean_image(self.decode(mu))

    def sample(self, n, rng):
        """Draw n images from the model: z ~ N(0, I), return the mean image."""
        z = standard_normal(rng, (n, self.latent_dim), self.dtype)
        return self.mean_image(self.decode(self.xp.asarray(z)))

    # -- likelihood ------------------------------------------------------------
    def _recon_forward(self, out, x, training):
        if self.likelihood == "bernoulli":
            return losses.bernoulli_nll_forward(out, x, fused_grad=training)
        if self.likelihood == "gaussian":
            return losses.gaussian_nll_forward(out, x, self.gaussian_variance)
        return losses.gaussian_nll_learned_forward(out, self.logvar_x.data, x)

    def _recon_backward(self, drecon, cache):
        if self.likelihood == "bernoulli":
            return losses.bernoulli_nll_backward(drecon, cache)
        if self.likelihood == "gaussian":
            return losses.gaussian_nll_backward(drecon, cache)
        dout, dlogvar_x = losses.gaussian_nll_learned_backward(drecon, cache)
        self.logvar_x.accumulate(dlogvar_x)
        return dout

    # -- loss and its backward -------------------------------------------------
    def loss(self, x, rng=None, eps=None, labels=None, step=None, beta=None, training=True):
        """Mean negative ELBO (with KL weight beta) of the batch x.

        Noise: pass a generator ``rng`` (eps drawn from it), or fixed ``eps`` of
        shape (L, N, Z). ``labels`` and ``step`` (the global training step) are
        part of every model's signature; this model uses neither. Returns
        ``(loss, parts)``; parts holds the batch means 'recon', 'kl', 'nelbo'
        (beta = 1) and the per-image arrays 'recon_per_image' and
        'kl_per_image' (N,). Caches what ``backward`` needs.
        """
        beta = self.beta if beta is None else float(beta)
        mu, logvar = self.encode(x)
        n = x.shape[0]
        if eps is None:
            if rng is None:
                raise ValueError(f"{type(self).__name__}.loss: pass rng (a seeded generator) or eps")
            eps = get_xp(mu).asarray(draw_eps(rng, self.n_samples, mu))
        L = eps.shape[0]
        z, sampler_cache = reparameterize_forward(mu, logvar, eps)
        out = self.decode(z)
        targets = x if L == 1 else get_xp(x).concatenate([x] * L, axis=0)
        recon, recon_cache = self._recon_forward(out, targets, training)
        kl, kl_cache = losses.gaussian_kl_forward(mu, logvar)
        self._cache = _Cache(n, L, beta, recon_cache, sampler_cache, kl_cache)

        recon_per_image = recon.reshape(L, n).mean(axis=0)
        loss = recon_per_image.mean() + beta * kl.mean()
        parts = {"recon": recon_per_image.mean(), "kl": kl.mean(),
                 "nelbo": recon_per_image.mean() + kl.mean(),
                 "recon_per_image": recon_per_image, "kl_per_image": kl}
        return loss, parts

    def backward(self):
        """Accumulate the gradient of the last ``loss`` into every parameter.

        Read it top to bottom, it is the forward in reverse. (Nothing is
        returned: the images also enter the loss as likelihood targets, so
        the encoder path alone would not be dL/dx.)
        """
        c = self._cache
        if c is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call loss() first")
        self._cache = None
        xp, dtype = get_xp(c.kl[0]), self.param_dtype
        n, L = c.n, c.n_samples
        # loss = 1/(N L) sum_{l,n} recon_ln + beta/N sum_n KL_n
        drecon = xp.full(L * n, 1.0 / (L * n), dtype=dtype)
        dkl = xp.full(n, c.beta / n, dtype=dtype)
        # 1. likelihood: d loss / d decoder output
        dout = self._recon_backward(drecon, c.recon)
        # 2. decoder: d loss / dz
        dz = self.decoder.backward(dout)
        # 3. sampler: z = mu + exp(logvar/2) eps  ->  d loss / d(mu, logvar)
        dmu, dlogvar = reparameterize_backward(dz, c.sampler)
        # 4. KL term adds its own gradient w.r.t. (mu, logvar)
        dmu_kl, dlogvar_kl = losses.gaussian_kl_backward(dkl, c.kl)
        dh = xp.concatenate([dmu + dmu_kl, dlogvar + dlogvar_kl], axis=1)
        # 5. encoder: gradients of its parameters
        self.encoder.backward(dh)

    # -- evaluation ----------------------------------------------------------------
    def test_metrics(self, x, labels=None, batch_size=1000, rng=None):
        """Negative ELBO and its parts averaged over the images of ``x``.

        x: host array (N, *image_shape); batches are moved to the parameters'
        device. One z sample per image (``n_samples``), drawn from ``rng``.
        """
        xp = self.xp
        sums = {"recon": 0.0, "kl": 0.0}
        for start in range(0, x.shape[0], batch_size):
            xb = xp.asarray(x[start:start + batch_size])
            yb = None if labels is None else labels[start:start + batch_size]
            _, parts = self.loss(xb, rng=rng, labels=yb, training=False)
            sums["recon"] += float(parts["recon_per_image"].sum())
            sums["kl"] += float(parts["kl_per_image"].sum())
        recon, kl = sums["recon"] / x.shape[0], sums["kl"] / x.shape[0]
        self._cache = None
        return {"test_nelbo": recon + kl, "test_recon": recon, "test_kl": kl}

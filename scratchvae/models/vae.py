"""The variational autoencoder: an encoder, the sampler, a decoder, and a loss.

(Over 400 lines: the ELBO and the k-sample bounds share one chain, derived here.)

For an image x the encoder gives the mean and log-variance of q(z|x) =
N(mu, diag exp(logvar)); L samples z_l = mu + exp(logvar/2) eps_l go through
the decoder, which parameterises p(x|z). The loss of a batch is the mean
over its N images of the negative ELBO, with a weight beta on the KL term:

    loss = 1/N sum_n [ 1/L sum_l -log p(x_n | z_nl) + beta KL(q(z|x_n) || N(0, I)) ]

The KL term can follow a schedule over the training steps (a linear warm-up
of beta, or Burgess et al.'s capacity annealing gamma |KL - C_t|): see
scratchvae/schedules.py, which also derives its gradient.

The backward is the chain of the forward read backwards (``VAE.backward``):
likelihood -> decoder -> sampler (+ KL) -> encoder.

Multi-sample objectives (``objective``; k = ``n_samples`` samples per image).
With log-weights log w_i = log p(x | z_i) + log p(z_i) - log q(z_i | x),
z_i = mu + sigma eps_i, the importance-weighted bound of Burda et al. (2015) is

    L_k(x) = log (1/k) sum_i w_i            (scratchvae/ops/iwae.py),

and 'iwae', 'dreg' and 'stl' minimise loss = -1/N sum_n L_k(x_n). Since
(z - mu)^2 / sigma^2 = eps^2,

    log q(z | x) = -1/2 sum_j (eps_j^2 + logvar_j + log 2 pi),
    log p(z)     = -1/2 sum_j (z_j^2 + log 2 pi).

For k = 1 the bound is the one-sample ELBO with the KL estimated by the same
sample, log q(z|x) - log p(z); 'elbo' uses the KL in closed form, its
expectation: the two agree in the likelihood term and the decoder's gradient
(bit for bit) and in expectation, not sample by sample.

Backward of L_k (``VAE._bound_backward``). With g_i = d loss / d log w_i =
-w~_i / N, w~ = softmax_i(log w_i) the normalised weights:
bound -> log-weights -> likelihood and decoder (d loss / d nll_i = -g_i),
log p(z) (d log p / dz = -z), log q -> sampler -> encoder. log q depends on
the encoder twice, through the sample z and through its own parameters:

    d log q / dz      = -(z - mu) / sigma^2           = -eps / sigma
    d log q / dmu     = +(z - mu) / sigma^2 (z held)  = +eps / sigma
    d log q / dlogvar = (z - mu)^2 / (2 sigma^2) - 1/2 = (eps^2 - 1) / 2

and dz/dmu = 1, dz/dlogvar = eps sigma / 2 (the sampler), so the total
derivatives are

    d log q / dmu     = -eps/sigma + eps/sigma                     = 0
    d log q / dlogvar = -(eps/sigma)(eps sigma/2) + (eps^2 - 1)/2  = -1/2:

the path through the sample cancels the score term in mu entirely and in
logvar up to -1/2, as the form -1/2 sum(eps^2 + logvar + log 2 pi) shows at
once. 'iwae' takes this total: -log q adds nothing to dz and 1/2 g_i to
d loss / d logvar.

'dreg' (Tucker et al. 2018): the decoder's gradient is IWAE's; the encoder's
is sum_i w~_i^2 (d log w_i / d z_i)(d z_i / d phi) with q's parameters held
fixed inside log q, so only d log q / dz = -eps / sigma reaches the encoder.
It is the gradient of the surrogate

    S = -1/N sum_n [ L_k(x_n; theta, z held)
                     + sum_i sg(w~_in^2) log w_in(theta held, z_in(phi), q held) ],

(sg: a value frozen where it is taken), not of L_k, but unbiased for it.
IWAE's encoder gradient is sum_i w~_i (P_i - s_i), with the path term
P_i = (d log w_i / d z_i)(d z_i / d phi) and the score s_i = d log q(z_i) /
d phi at z_i held. Reparameterising E[f s_i] = E[(d f / d z_i)(d z_i / d phi)]
with f = w~_i, d w~_i / d z_i = w~_i (1 - w~_i) d log w_i / d z_i, gives
E[sum_i w~_i s_i] = E[sum_i (w~_i - w~_i^2) P_i], so the expectation is
E[sum_i w~_i^2 P_i] (tests/test_objectives.py checks both properties). The
encoder path takes g_i = -w~_i^2 / N; the decoder acts on each row of z
alone, so its dz row of sample i, linear in that row's upstream w~_i / N,
is scaled by w~_i.

'stl' (Roeder et al. 2017, k = 1): the same path, with w~ = 1: the ELBO's
gradient without the score term d log q / d(mu, logvar) at z held, whose
expectation is 0.
"""
from dataclasses import dataclass

import numpy as np

from kernels.sigmoid import sigmoid

from .. import losses
from ..backend import check_float, check_shape, get_xp, standard_normal, to_numpy
from ..layers import Module, Parameter
from ..ops.iwae import iwae_backward, iwae_forward
from ..ops.sampler import draw_eps, reparameterize_backward, reparameterize_forward
from ..schedules import KLSchedule

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned")
#: the training objectives: the (L-sample) ELBO and the k-sample bound's three gradients
OBJECTIVES = ("elbo", "iwae", "dreg", "stl")


@dataclass
class _Cache:
    """What VAE.backward needs from the last call of VAE.loss."""
    n: int
    n_samples: int
    kl_scale: float  # d (KL term) / d (batch-mean KL): beta_t, or gamma sign(KL - C_t)
    recon: tuple
    sampler: tuple
    kl: tuple


@dataclass
class _BoundCache:
    """What VAE._bound_backward needs from the last call of VAE.loss."""
    w_norm: object   # normalised weights w~ (k, N)
    z: object        # the samples (k N, Z)
    recon: tuple
    sampler: tuple


def log_weights(nll, z, eps, logvar):
    """log w = -nll + log p(z) - log q(z | x), (k, N), from nll (k N,), the samples
    z (k N, Z), their noise eps (k, N, Z) and logvar (N, Z) (see the module's docstring)."""
    k, n = eps.shape[:2]
    log_2pi = float(np.log(2 * np.pi))
    log_pz = -0.5 * (z * z + log_2pi).sum(axis=1)
    log_qz = -0.5 * (eps * eps + logvar[None] + log_2pi).sum(axis=2)
    return (log_pz - nll).reshape(k, n) - log_qz


class VAE(Module):
    """A Gaussian-latent VAE around any encoder and decoder Module.

    encoder: images (N, *image_shape) -> (N, 2Z), read as [mu | logvar].
    decoder: z (M, Z) -> (M, *image_shape): Bernoulli logits, or the Gaussian mean.

    likelihood:
      'bernoulli'         p(x|z) = prod Bernoulli(x; sigmoid(logits)); for grey
                          levels x in (0, 1) the same formula is the cross-entropy
                          of x against sigmoid(logits), not a normalised density
                          (as in PyTorch's VAE example; see kernels/bce.py)
      'gaussian'          p(x|z) = N(x; mean, lambda I), lambda = ``gaussian_variance``
      'gaussian-learned'  p(x|z) = N(x; mean, diag exp(v)), v a learned per-pixel
                          parameter ``logvar_x`` of shape (1, *image_shape)

    KL term: ``beta``, ``kl_warmup_steps``, ``capacity_max``, ``capacity_steps``
    and ``capacity_gamma`` define ``self.kl_schedule`` (a KLSchedule); the
    'elbo' objective only.

    objective: 'elbo' (the negative ELBO averaged over ``n_samples`` samples),
    'iwae', 'dreg' (-L_k, k = ``n_samples``, with IWAE's or DReG's gradient) or
    'stl' (-L_1 with the sticking-the-landing gradient; k = 1 only).
    """

    def __init__(self, encoder, decoder, latent_dim, image_shape=(1, 28, 28),
                 likelihood="bernoulli", gaussian_variance=1.0, beta=1.0, n_samples=1,
                 kl_warmup_steps=0, capacity_max=0.0, capacity_steps=0, capacity_gamma=0.0,
                 objective="elbo"):
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"VAE: expected likelihood in {LIKELIHOODS}, got {likelihood!r}")
        if n_samples < 1:
            raise ValueError(f"VAE: expected n_samples >= 1, got {n_samples}")
        check_objective(objective, n_samples, beta, kl_warmup_steps, capacity_gamma)
        self.objective = objective
        self.encoder = encoder.no_input_grad()  # images need no gradient
        self.decoder = decoder
        self.param_dtype = encoder.dtype  # checked against the input on every call
        self.latent_dim = int(latent_dim)
        self.image_shape = tuple(image_shape)
        self.likelihood = likelihood
        self.gaussian_variance = float(gaussian_variance)
        self.beta = float(beta)
        self.kl_schedule = KLSchedule(self.beta, int(kl_warmup_steps), float(capacity_max),
                                      int(capacity_steps), float(capacity_gamma))
        self.n_samples = int(n_samples)
        if likelihood == "gaussian-learned":
            dtype = encoder.dtype
            self.logvar_x = Parameter(np.zeros((1,) + self.image_shape, dtype=dtype))
        self._cache = None

    # -- the pieces ----------------------------------------------------------
    def condition(self, labels, n):
        """What the encoder and decoder are conditioned on: nothing for a VAE
        (labels are ignored); a conditional VAE returns one-hot labels."""
        return None

    def encode(self, x, c=None):
        """x (N, *image_shape) -> (mu, logvar), each (N, Z).  ``c`` is unused here."""
        check_shape(type(self).__name__, "images", x, (None,) + self.image_shape)
        check_float(type(self).__name__, "images", x, self.param_dtype)
        h = self.encoder.forward(x)
        Z = self.latent_dim
        return h[:, :Z], h[:, Z:]

    def decode(self, z, c=None):
        """z (M, Z) -> decoder output (M, *image_shape): logits or mean.  ``c`` is unused here."""
        return self.decoder.forward(z)

    def mean_image(self, out):
        """The decoder output as an image: sigmoid(logits), or the Gaussian mean."""
        if self.likelihood == "bernoulli":
            return sigmoid(out)
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
    def check_images(self, x):
        """ValueError unless x holds values the likelihood accepts (finite; in [0, 1]
        for the Bernoulli likelihood)."""
        low, high = losses.TARGET_RANGE[self.likelihood]
        losses.check_values(f"{type(self).__name__}.loss", f"images ({self.likelihood} "
                            f"likelihood)", x, low, high)

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
    def loss(self, x, rng=None, eps=None, labels=None, step=None, beta=None, training=True,
             check_inputs=True):
        """Mean reconstruction loss plus the scheduled KL term of the batch x.

        Noise: pass a generator ``rng`` (eps drawn from it), or fixed ``eps`` of
        shape (L, N, Z). ``step`` is the global training step of the KL schedule
        (None: the schedule's end); ``beta`` given replaces the schedule by a
        constant KL weight. ``labels`` go to ``condition`` (unused by a plain
        VAE). Returns ``(loss, parts)``; parts holds the batch means 'recon',
        'kl', 'nelbo' (beta = 1) and the per-image arrays 'recon_per_image',
        'kl_per_image' (N,), 'mu_per_image' and 'logvar_per_image' (N, Z); the
        objectives 'iwae', 'dreg', 'stl' return -mean_n L_k(x_n) and add 'bound',
        mean_n L_k(x_n) ('recon' and 'kl' keep their meaning: averaged over the
        k samples, the KL in closed form). Caches what ``backward`` needs.
        ``check_inputs``: refuse images that hold NaN, an infinity or, for the
        Bernoulli likelihood, values outside [0, 1] (``losses.check_values``);
        the training loop, whose images come from uint8 pixels, skips it.
        """
        if check_inputs:
            self.check_images(x)
        c = self.condition(labels, x.shape[0])
        mu, logvar = self.encode(x, c)
        n = x.shape[0]
        if eps is None:
            if rng is None:
                raise ValueError(f"{type(self).__name__}.loss: pass rng (a seeded generator) or eps")
            eps = get_xp(mu).asarray(draw_eps(rng, self.n_samples, mu))
        if self.objective != "elbo":
            if beta is not None:
                raise ValueError(f"{type(self).__name__}.loss: beta weighs the KL term of the "
                                 f"'elbo' objective, not of {self.objective!r}")
            return self._bound_loss(x, c, mu, logvar, eps, training)
        L = eps.shape[0]
        z, sampler_cache = reparameterize_forward(mu, logvar, eps)
        out = self.decode(z, c)
        targets = x if L == 1 else get_xp(x).concatenate([x] * L, axis=0)
        recon, recon_cache = self._recon_forward(out, targets, training)
        kl, kl_cache = losses.gaussian_kl_forward(mu, logvar)
        if beta is None:
            kl_term, kl_scale = self.kl_schedule.term(kl.mean(), step)
        else:  # a constant weight: term = beta KL, d term / d KL = beta
            kl_term, kl_scale = float(beta) * kl.mean(), float(beta)
        self._cache = _Cache(n, L, kl_scale, recon_cache, sampler_cache, kl_cache)

        recon_per_image = recon.reshape(L, n).mean(axis=0)
        loss = recon_per_image.mean() + kl_term
        parts = {"recon": recon_per_image.mean(), "kl": kl.mean(),
                 "nelbo": recon_per_image.mean() + kl.mean(),
                 "recon_per_image": recon_per_image, "kl_per_image": kl,
                 "mu_per_image": mu, "logvar_per_image": logvar}
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
        if self.objective != "elbo":
            self._bound_backward(c)
            return
        xp, dtype = get_xp(c.kl[0]), self.param_dtype
        n, L = c.n, c.n_samples
        # loss = 1/(N L) sum_{l,n} recon_ln + term(KL),  KL = 1/N sum_n KL_n,
        # so d loss / d KL_n = term'(KL) / N  (term' = beta_t, or gamma sign(KL - C_t))
        drecon = xp.full(L * n, 1.0 / (L * n), dtype=dtype)
        dkl = xp.full(n, c.kl_scale / n, dtype=dtype)
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

    # -- the k-sample bound: 'iwae', 'dreg', 'stl' ---------------------------------
    def _bound_loss(self, x, c, mu, logvar, eps, training):
        """loss = -1/N sum_n L_k(x_n) and its parts (see ``loss``)."""
        k, n = eps.shape[0], x.shape[0]
        z, sampler_cache = reparameterize_forward(mu, logvar, eps)
        out = self.decode(z, c)
        targets = x if k == 1 else get_xp(x).concatenate([x] * k, axis=0)
        nll, recon_cache = self._recon_forward(out, targets, training)
        bound, w_norm = iwae_forward(log_weights(nll, z, eps, logvar))
        kl, _ = losses.gaussian_kl_forward(mu, logvar)
        self._cache = _BoundCache(w_norm, z, recon_cache, sampler_cache)
        recon_per_image = nll.reshape(k, n).mean(axis=0)
        parts = {"recon": recon_per_image.mean(), "kl": kl.mean(),
                 "nelbo": recon_per_image.mean() + kl.mean(), "bound": bound.mean(),
                 "recon_per_image": recon_per_image, "kl_per_image": kl,
                 "mu_per_image": mu, "logvar_per_image": logvar}
        return -bound.mean(), parts

    def _bound_backward(self, c):
        """The chain of -1/N sum_n L_k(x_n) read backwards (the module's docstring
        derives each link): bound -> log-weights -> likelihood and decoder, log p(z),
        log q -> sampler -> encoder."""
        xp, dtype = get_xp(c.w_norm), self.param_dtype
        k, n = c.w_norm.shape
        eps, sigma = c.sampler
        # 1. bound: d loss / d log w_in = -w~_in / N
        dlog_w = iwae_backward(xp.full(n, -1.0 / n, dtype=dtype), c.w_norm)
        # 2. likelihood: log w = -nll + ...,  so  d loss / d nll = -d loss / d log w
        dout = self._recon_backward(-dlog_w.reshape(-1), c.recon)
        # 3. decoder: its parameters take IWAE's gradient; dz (k N, Z)
        dz = self.decoder.backward(dout)
        g = dlog_w.reshape(-1, 1)                       # d loss / d log w, a row per sample
        if self.objective == "dreg":                    # the encoder's path weighs w~^2
            g = g * c.w_norm.reshape(-1, 1)
            dz = dz * c.w_norm.reshape(-1, 1)
        # 4. log p(z) = -1/2 |z|^2 + const:  d log p / dz = -z
        dz = dz - g * c.z
        if self.objective == "iwae":
            # 5. sampler: z = mu + sigma eps  ->  d loss / d(mu, logvar)
            dmu, dlogvar = reparameterize_backward(dz, c.sampler)
            # 6. -log q = 1/2 sum(eps^2 + logvar + log 2 pi): d/dmu = 0, d/dlogvar = 1/2
            dlogvar = dlogvar + 0.5 * g.reshape(k, n, 1).sum(axis=0)
        else:
            # 5. -log q through the sample, q's parameters held: d(-log q)/dz = eps / sigma
            dz = dz + g * (eps / sigma[None]).reshape(dz.shape)
            # 6. sampler; the score term d log q / d(mu, logvar) at z held is dropped
            dmu, dlogvar = reparameterize_backward(dz, c.sampler)
        # 7. encoder: gradients of its parameters
        self.encoder.backward(xp.concatenate([dmu, dlogvar], axis=1))

    # -- evaluation ----------------------------------------------------------------
    def log_importance_weights(self, x, k, rng, labels=None):
        """log w = log p(x | z) + log p(z) - log q(z | x) for k samples z ~ q(z|x).

        With z = mu + sigma eps: log q(z|x) = -1/2 sum_j (eps_j^2 + logvar_j + log 2 pi)
        (since (z - mu)^2 / sigma^2 = eps^2), log p(z) = -1/2 sum_j (z_j^2 + log 2 pi)
        and log p(x|z) is minus the reconstruction loss. Returns (k, N).
        Used by scratchvae.metrics.iw_nll; caches nothing.
        """
        xp = get_xp(x)
        n = x.shape[0]
        c = self.condition(labels, n)
        mu, logvar = self.encode(x, c)
        eps = xp.asarray(draw_eps(rng, k, mu))                     # (k, N, Z)
        z, _ = reparameterize_forward(mu, logvar, eps)            # (k N, Z)
        out = self.decode(z, c)
        nll, _ = self._recon_forward(out, xp.concatenate([x] * k, axis=0), False)
        return log_weights(nll, z, eps, logvar)

    def test_metrics(self, x, labels=None, batch_size=1000, rng=None):
        """Negative ELBO and its parts averaged over the images of ``x``, the KL
        of each latent dimension and the number of active units.

        x: host array (N, *image_shape); batches are moved to the parameters'
        device. ``n_samples`` z samples per image (the model's setting, 1 by
        default), drawn from ``rng``.
        'test_kl_per_dim' (a list of Z floats, summing to 'test_kl') is
        1/N sum_n KL(q(z_i|x_n) || N(0, 1)); 'active_units' counts the
        dimensions whose posterior mean varies over x (see ``active_units``).
        """
        xp = self.xp
        sums = {"recon": 0.0, "kl": 0.0}
        kl_per_dim, means = 0.0, []
        for start in range(0, x.shape[0], batch_size):
            xb = xp.asarray(x[start:start + batch_size])
            yb = None if labels is None else labels[start:start + batch_size]
            _, parts = self.loss(xb, rng=rng, labels=yb, training=False)
            sums["recon"] += float(parts["recon_per_image"].sum())
            sums["kl"] += float(parts["kl_per_image"].sum())
            mu, logvar = parts["mu_per_image"], parts["logvar_per_image"]
            kl_dims = 0.5 * (mu * mu + xp.exp(logvar) - 1 - logvar)  # (N, Z)
            kl_per_dim = kl_per_dim + to_numpy(kl_dims.sum(axis=0)).astype(np.float64)
            means.append(to_numpy(mu))
        recon, kl = sums["recon"] / x.shape[0], sums["kl"] / x.shape[0]
        self._cache = None
        count, _ = active_units(np.concatenate(means))
        return {"test_nelbo": recon + kl, "test_recon": recon, "test_kl": kl,
                "test_kl_per_dim": [float(v) for v in kl_per_dim / x.shape[0]],
                "active_units": count}


def check_objective(objective, n_samples=1, beta=1.0, kl_warmup_steps=0, capacity_gamma=0.0):
    """ValueError unless the objective fits the other options: one of OBJECTIVES;
    'stl' with one sample; beta, a KL warm-up and capacity annealing weigh the
    closed-form KL term of 'elbo' only."""
    if objective not in OBJECTIVES:
        raise ValueError(f"VAE: expected objective in {OBJECTIVES}, got {objective!r}")
    if objective == "stl" and n_samples != 1:
        raise ValueError(f"objective stl (sticking the landing) takes k = 1 sample per image, "
                         f"got k = {n_samples}; for k > 1 use dreg")
    if objective != "elbo":
        given = [f"{name}={value}" for name, value, on in (
            ("beta", beta, beta != 1), ("kl_warmup_steps", kl_warmup_steps, kl_warmup_steps > 0),
            ("capacity_gamma", capacity_gamma, capacity_gamma > 0)) if on]
        if given:
            raise ValueError(f"{', '.join(given)}: a KL weight or schedule applies to the elbo "
                             f"objective only; objective {objective} trains the bound L_k, "
                             f"which has no separate KL term")


def active_units(mu, threshold=1e-2):
    """Active units of Burda et al. (2015): A_u = #{i : Cov_x(E_q[z_i | x]) > threshold}.

    mu: (N, Z) posterior means E_q[z | x_n] over a data set (host array).
    Returns ``(count, variances)`` with variances (Z,) the population variance
    over n of each mu_i. A unit whose mean ignores x carries no information
    about x (its KL is ~0 in practice: posterior collapse).
    """
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[0] < 1:
        raise ValueError(f"active_units: expected mu of shape (N, Z) with N >= 1, got {mu.shape}")
    variances = mu.var(axis=0)
    return int(np.sum(variances > threshold)), variances

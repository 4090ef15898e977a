"""The two-stochastic-layer model of Burda et al. (2015), "Importance Weighted
Autoencoders", section 5 (``iwae-2l``, 521,084 parameters with the paper's widths:
237,400 in q(z1 | x), 30,300 in q(z2 | z1), 35,400 in p(z1 | z2), 217,984 in p(x | z1)):

    q(z1 | x):  Flatten, 784-200-200 tanh MLP -> [mu1 | logvar1]    (2 x 100)
    q(z2 | z1): 100-100-100 tanh MLP           -> [mu2 | logvar2]    (2 x 50)
    p(z2)     = N(0, I)
    p(z1 | z2): 50-100-100 tanh MLP            -> [m1 | v1], N(z1; m1, diag exp(v1))
    p(x | z1):  100-200-200-784 tanh MLP       -> Bernoulli logits

Both stochastic layers are reparameterised: for noise eps1 (k, N, 100) and
eps2 (k, N, 50),

    z1 = mu1(x) + exp(logvar1(x) / 2) eps1,    z2 = mu2(z1) + exp(logvar2(z1) / 2) eps2.

The log importance weight of sample i of image n is

    log w = log p(x | z1) + log p(z1 | z2) + log p(z2) - log q(z1 | x) - log q(z2 | z1)

with (z - mu) / sigma = eps inside both q terms:

    log q(z1 | x)  = -1/2 sum_j (eps1_j^2 + logvar1_j + log 2 pi)
    log q(z2 | z1) = -1/2 sum_j (eps2_j^2 + logvar2_j + log 2 pi)
    log p(z2)      = -1/2 sum_j (z2_j^2 + log 2 pi)
    log p(z1 | z2) = -GaussianNLLLearned(m1, v1; z1)      (scratchvae/losses.py)
    log p(x | z1)  = -BernoulliNLL(logits; x)

Objectives (``objective``, k = ``n_samples``):

    "elbo": loss = -1/(N k) sum_{n,i} log w_in    (the Monte-Carlo ELBO: the KL of a
            two-layer posterior to its prior has no closed form)
    "iwae": loss = -1/N sum_n L_k(x_n),  L_k = logsumexp_i(log w_i) - log k  (ops/iwae.py)
    "stl":  the "elbo" loss; q's gradient is the path derivative only (Roeder et al. 2017)
    "dreg": the "iwae" loss; q's gradient is DReG's (Tucker et al. 2018)

The backward (``HierarchicalVAE.backward``) is the chain of the forward read
backwards; z1 feeds three networks (p(x | z1), p(z1 | z2) as its target, q(z2 | z1)),
and its gradient is the sum over those paths.

STL and DReG (``HierarchicalVAE._backward_held_q``). The generative networks
theta (p(z1 | z2), p(x | z1)) get the ELBO's or the IWAE's gradient. The inference
networks phi (q(z1 | x), q(z2 | z1)) get only the gradient through the samples
z = (z1, z2), with phi held fixed inside log q:

    grad_phi = -1/N sum_{n,i} c_in (d log w_in / d z_in)|_{phi fixed in q} (d z_in / d phi)

with c = 1/k (STL) or c = w~^2, the squared normalised weights (DReG). Held fixed,
log q(z2 | z1) still depends on z1 through mu2(z1) and logvar2(z1) at fixed weights;
that path reaches z1 but no parameter. DReG's expectation is the IWAE gradient
(the score terms it drops have mean zero after its reweighting); it is not the
gradient of L_k, so it is checked as the gradient of its surrogate
(scratchvae/gradcheck/models.py: ``hvae_surrogate``).
"""
from dataclasses import dataclass

import numpy as np

from kernels.sigmoid import sigmoid

from .. import losses
from ..backend import check_float, check_shape, get_xp, standard_normal, to_numpy
from ..layers import Flatten, Module, Reshape, Sequential
from ..ops.iwae import iwae_backward, iwae_forward
from ..ops.sampler import reparameterize_backward, reparameterize_forward
from .iwae import tanh_mlp
from .vae import active_units

OBJECTIVES = ("elbo", "iwae", "stl", "dreg")
LOG_2PI = float(np.log(2 * np.pi))
#: the options of the VAE family this model takes at these values only
FIXED_OPTIONS = {"likelihood": "bernoulli", "beta": 1.0, "kl_warmup_steps": 0,
                 "capacity_max": 0.0, "capacity_steps": 0, "capacity_gamma": 0.0}


def option_problems(objective="elbo", **options):
    """What in ``options`` (VAE-family options by name) iwae-2l does not take: a list
    of messages, empty when every option fits."""
    problems = []
    if objective not in OBJECTIVES:
        problems.append(f"objective: iwae-2l trains with {', '.join(OBJECTIVES)}, "
                        f"got {objective!r}")
    for name, fixed in FIXED_OPTIONS.items():
        if name in options and options[name] != fixed:
            problems.append(f"{name}: iwae-2l takes {name} {fixed!r} only (a Bernoulli "
                            f"likelihood, no KL weight or schedule), got {options[name]!r}")
    return problems


@dataclass
class _Cache:
    """What HierarchicalVAE.backward needs from the last call of loss."""
    n: int
    k: int
    dlog_w: object   # d loss / d log w, (k, N)
    w_norm: object   # DReG: the normalised weights w~ (k, N); else None
    recon: tuple     # BernoulliNLL of p(x | z1)
    prior1: tuple    # GaussianNLLLearned of p(z1 | z2)
    sampler1: tuple  # z1 = mu1 + sigma1 eps1
    sampler2: tuple  # z2 = mu2 + sigma2 eps2
    z2: object


class HierarchicalVAE(Module):
    """A VAE with two Gaussian stochastic layers z1 (``z1_dim``), z2 (``latent_dim``).

    encoder1: x (N, *image_shape) -> [mu1 | logvar1] (N, 2 Z1)      q(z1 | x)
    encoder2: z1 (M, Z1) -> [mu2 | logvar2] (M, 2 Z2)               q(z2 | z1)
    prior1:   z2 (M, Z2) -> [m1 | v1] (M, 2 Z1)                     p(z1 | z2)
    decoder:  z1 (M, Z1) -> Bernoulli logits (M, *image_shape)       p(x | z1)

    ``latent_dim`` is the top layer's size Z2 (what ``sample`` draws from N(0, I));
    ``encode``/``decode`` map to and from z2 along the means (for the latent plots).
    """

    def __init__(self, encoder1, encoder2, prior1, decoder, z1_dim, latent_dim,
                 image_shape=(1, 28, 28), objective="elbo", n_samples=1):
        problems = option_problems(objective)
        if problems:
            raise ValueError("HierarchicalVAE: " + "; ".join(problems))
        if n_samples < 1:
            raise ValueError(f"HierarchicalVAE: expected n_samples >= 1, got {n_samples}")
        self.encoder1 = encoder1.no_input_grad()  # images need no gradient
        self.encoder2 = encoder2
        self.prior1 = prior1
        self.decoder = decoder
        self.param_dtype = encoder1.dtype
        self.z1_dim = int(z1_dim)
        self.latent_dim = int(latent_dim)
        self.image_shape = tuple(image_shape)
        self.likelihood = "bernoulli"
        self.objective = objective
        self.n_samples = int(n_samples)
        self._cache = None

    # -- the pieces ----------------------------------------------------------
    def condition(self, labels, n):
        """Nothing: the model is unconditional (labels are ignored)."""
        return None

    def encode_z1(self, x):
        """x (N, *image_shape) -> (mu1, logvar1), each (N, Z1): q(z1 | x)."""
        check_shape(type(self).__name__, "images", x, (None,) + self.image_shape)
        check_float(type(self).__name__, "images", x, self.param_dtype)
        h = self.encoder1.forward(x)
        return h[:, :self.z1_dim], h[:, self.z1_dim:]

    def encode(self, x, c=None):
        """x -> (mu2(mu1(x)), logvar2(mu1(x))), each (N, Z2): q(z2 | z1) at z1's
        posterior mean (a point summary of q(z2 | x) for plots)."""
        mu1, _ = self.encode_z1(x)
        h = self.encoder2.forward(mu1)
        return h[:, :self.latent_dim], h[:, self.latent_dim:]

    def decode(self, z2, c=None):
        """z2 (M, Z2) -> logits of p(x | z1) at z1 = the mean of p(z1 | z2)."""
        m1 = self.prior1.forward(z2)[:, :self.z1_dim]
        return self.decoder.forward(m1)

    def mean_image(self, out):
        """Bernoulli logits -> sigmoid(logits)."""
        return sigmoid(out)

    def reconstruct(self, x):
        """Decode q(z1 | x)'s mean: x -> sigmoid(decoder(mu1(x)))."""
        mu1, _ = self.encode_z1(x)
        return self.mean_image(self.decoder.forward(mu1))

    def sample(self, n, rng):
        """Ancestral sampling: z2 ~ N(0, I), z1 ~ p(z1 | z2); the mean image of p(x | z1)."""
        xp = self.xp
        z2 = xp.asarray(standard_normal(rng, (n, self.latent_dim), self.dtype))
        h = self.prior1.forward(z2)
        eps1 = xp.asarray(standard_normal(rng, (1, n, self.z1_dim), self.dtype))
        z1, _ = reparameterize_forward(h[:, :self.z1_dim], h[:, self.z1_dim:], eps1)
        return self.mean_image(self.decoder.forward(z1))

    def check_images(self, x):
        """ValueError unless x is finite with values in [0, 1] (Bernoulli targets)."""
        losses.check_values(f"{type(self).__name__}.loss", "images (bernoulli likelihood)",
                            x, 0.0, 1.0)

    # -- the log-weights -------------------------------------------------------
    def draw_eps(self, rng, k, n):
        """(eps1 (k, N, Z1), eps2 (k, N, Z2)) ~ N(0, I), eps1 drawn first."""
        xp, dtype = self.xp, self.param_dtype
        eps1 = standard_normal(rng, (k, n, self.z1_dim), dtype)
        eps2 = standard_normal(rng, (k, n, self.latent_dim), dtype)
        return xp.asarray(eps1), xp.asarray(eps2)

    def _log_weights(self, x, eps1, eps2, training):
        """The forward of log w (k, N) and its parts; returns (log_w, parts, caches)."""
        n, k = x.shape[0], eps1.shape[0]
        xp = get_xp(x)
        check_shape(type(self).__name__, "eps1", eps1, (None, n, self.z1_dim))
        check_shape(type(self).__name__, "eps2", eps2, (k, n, self.latent_dim))
        Z1, Z2 = self.z1_dim, self.latent_dim
        mu1, logvar1 = self.encode_z1(x)
        z1, sampler1 = reparameterize_forward(mu1, logvar1, eps1)               # (kN, Z1)
        h2 = self.encoder2.forward(z1)
        mu2, logvar2 = h2[:, :Z2], h2[:, Z2:]
        z2, sampler2 = reparameterize_forward(mu2, logvar2, eps2.reshape(1, k * n, Z2))
        h1 = self.prior1.forward(z2)
        nll_z1, prior1 = losses.gaussian_nll_learned_forward(h1[:, :Z1], h1[:, Z1:], z1)
        out = self.decoder.forward(z1)
        targets = x if k == 1 else xp.concatenate([x] * k, axis=0)
        nll_x, recon = losses.bernoulli_nll_forward(out, targets, fused_grad=training)
        log_pz2 = -0.5 * (z2 * z2 + LOG_2PI).sum(axis=1)                       # (kN,)
        log_qz1 = -0.5 * (eps1 * eps1 + logvar1[None] + LOG_2PI).sum(axis=2)   # (k, N)
        log_qz2 = -0.5 * (eps2.reshape(k * n, Z2) ** 2 + logvar2 + LOG_2PI).sum(axis=1)
        # KL estimate per sample: log q(z1|x) + log q(z2|z1) - log p(z1|z2) - log p(z2)
        kl = log_qz1 + (log_qz2 + nll_z1 - log_pz2).reshape(k, n)
        log_w = -nll_x.reshape(k, n) - kl
        parts = {"recon_per_image": nll_x.reshape(k, n).mean(axis=0),
                 "kl_per_image": kl.mean(axis=0), "mu_per_image": mu1,
                 "logvar_per_image": logvar1, "mu2_per_sample": mu2}
        return log_w, parts, (recon, prior1, sampler1, sampler2, z2)

    def log_importance_weights(self, x, k, rng, labels=None):
        """log w (k, N) for k samples (z1, z2) ~ q(z1 | x) q(z2 | z1) (see the module
        docstring). Used by scratchvae.metrics.iw_nll; caches nothing."""
        eps1, eps2 = self.draw_eps(rng, k, x.shape[0])
        return self._log_weights(x, eps1, eps2, training=False)[0]

    # -- loss and its backward -------------------------------------------------
    def loss(self, x, rng=None, eps=None, labels=None, step=None, beta=None, training=True,
             check_inputs=True):
        """The objective's loss on the batch x (N, *image_shape).

        Noise: a generator ``rng`` (k = ``n_samples`` samples of eps1, then eps2,
        drawn from it) or fixed ``eps = (eps1, eps2)`` of shapes (k, N, Z1) and
        (k, N, Z2). ``labels`` and ``step`` are ignored (no classes, no KL
        schedule); a ``beta`` other than None or 1 is refused. Returns
        ``(loss, parts)``: 'recon' (the mean of -log p(x | z1)), 'kl' (the mean of
        log q(z1|x) + log q(z2|z1) - log p(z1|z2) - log p(z2)), 'nelbo' = recon + kl
        (the Monte-Carlo negative ELBO), per-image arrays 'recon_per_image',
        'kl_per_image' (N,), 'mu_per_image', 'logvar_per_image' (N, Z1) of q(z1 | x),
        and under "iwae" and "dreg" 'bound', the mean over images of L_k. ``check_inputs``:
        refuse images with NaN, infinities or values outside [0, 1].
        """
        if beta is not None and float(beta) != 1.0:
            raise ValueError(f"{type(self).__name__}.loss: no KL weight (beta 1 only), "
                             f"got beta {beta}")
        if check_inputs:
            self.check_images(x)
        if eps is None:
            if rng is None:
                raise ValueError(f"{type(self).__name__}.loss: pass rng (a seeded generator) "
                                 f"or eps = (eps1, eps2)")
            eps = self.draw_eps(rng, self.n_samples, x.shape[0])
        if not (isinstance(eps, (tuple, list)) and len(eps) == 2):
            raise ValueError(f"{type(self).__name__}.loss: expected eps = (eps1, eps2) of "
                             f"shapes (k, N, {self.z1_dim}) and (k, N, {self.latent_dim}), "
                             f"got {type(eps).__name__}")
        eps1, eps2 = eps
        log_w, parts, caches = self._log_weights(x, eps1, eps2, training)
        k, n = log_w.shape
        xp = get_xp(log_w)
        parts["recon"] = parts["recon_per_image"].mean()
        parts["kl"] = parts["kl_per_image"].mean()
        parts["nelbo"] = parts["recon"] + parts["kl"]
        w_norm = None
        if self.objective in ("iwae", "dreg"):
            bound, w_norm = iwae_forward(log_w)
            loss = -bound.mean()
            parts["bound"] = bound.mean()
            # loss = -1/N sum_n L_k(x_n):  d log w = w~ (-1/N)
            dlog_w = iwae_backward(xp.full(n, -1.0 / n, dtype=log_w.dtype), w_norm)
        else:
            loss = -log_w.mean()
            dlog_w = xp.full((k, n), -1.0 / (k * n), dtype=log_w.dtype)
        self._cache = _Cache(n, k, dlog_w, w_norm if self.objective == "dreg" else None,
                             *caches)
        return loss, parts

    def backward(self):
        """Accumulate the gradient of the last ``loss`` into every parameter.

        Read top to bottom: the forward in reverse, from g = d loss / d log w.
        """
        c = self._cache
        if c is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call loss() first")
        self._cache = None
        if self.objective in ("stl", "dreg"):
            return self._backward_held_q(c)
        xp = get_xp(c.dlog_w)
        k, n = c.k, c.n
        g = c.dlog_w.reshape(k * n)                      # d loss / d log w, sample i at row iN + n
        # 1. p(x | z1): log w holds -nll_x, so d loss / d nll_x = -g
        dlogits = losses.bernoulli_nll_backward(-g, c.recon)
        dz1 = self.decoder.backward(dlogits)             # path 1 into z1: through the decoder
        # 2. p(z1 | z2) = N(z1; m1, exp v1): log w holds -nll_z1; nll_z1 depends on
        #    (m1, v1) and on its target z1, with d nll / d z1 = -d nll / d m1
        dm1, dv1 = losses.gaussian_nll_learned_backward(-g, c.prior1)
        dz1 = dz1 - dm1                                  # path 2 into z1: as p(z1 | z2)'s target
        dz2 = self.prior1.backward(xp.concatenate([dm1, dv1], axis=1))
        # 3. p(z2) = N(0, I): d log p(z2) / d z2 = -z2
        dz2 = dz2 - g[:, None] * c.z2
        # 4. q(z2 | z1): z2 = mu2 + sigma2 eps2, and log w holds
        #    -log q(z2 | z1) = +1/2 sum_j (eps2_j^2 + logvar2_j + log 2 pi)  (d / d logvar2 = 1/2)
        dmu2, dlogvar2 = reparameterize_backward(dz2, c.sampler2)
        dlogvar2 = dlogvar2 + 0.5 * g[:, None]
        dz1 = dz1 + self.encoder2.backward(xp.concatenate([dmu2, dlogvar2], axis=1))  # path 3
        # 5. q(z1 | x): z1 = mu1 + sigma1 eps1 summed over the k samples of an image, and
        #    -log q(z1 | x) = +1/2 sum_j (eps1_j^2 + logvar1_j + log 2 pi)  (d / d logvar1 = 1/2)
        dmu1, dlogvar1 = reparameterize_backward(dz1, c.sampler1)
        dlogvar1 = dlogvar1 + 0.5 * c.dlog_w.sum(axis=0)[:, None]
        # 6. encoder of q(z1 | x): gradients of its parameters
        self.encoder1.backward(xp.concatenate([dmu1, dlogvar1], axis=1))

    def _backward_held_q(self, c):
        """STL's and DReG's gradient (module docstring): theta's as in ``backward``
        (weights g = d loss / d log w), phi's through the samples only, with weights
        g s per sample: s = 1 (STL) or s = w~ (DReG, so g s = -w~^2 / N)."""
        xp = get_xp(c.dlog_w)
        k, n, Z1, Z2 = c.k, c.n, self.z1_dim, self.latent_dim
        g = c.dlog_w.reshape(k * n)
        s = (xp.ones_like(g) if c.w_norm is None else c.w_norm.reshape(k * n))[:, None]
        gs = g[:, None] * s                              # phi's d loss / d log w, (kN, 1)
        # 1. p(x | z1): the decoder's parameters under g; its input gradient under g s
        #    (the networks act row by row: scaling a row's upstream scales its dz1)
        dz1 = self.decoder.backward(losses.bernoulli_nll_backward(-g, c.recon)) * s
        # 2. p(z1 | z2): prior1's parameters under g; z1 (as the target) and z2 under g s
        dm1, dv1 = losses.gaussian_nll_learned_backward(-g, c.prior1)
        dz1 = dz1 - dm1 * s
        dz2 = self.prior1.backward(xp.concatenate([dm1, dv1], axis=1)) * s
        # 3. p(z2) = N(0, I): d log p(z2) / d z2 = -z2
        dz2 = dz2 - gs * c.z2
        # 4. -log q(z2 | z1) = 1/2 sum_j ((z2 - mu2)^2 / sigma2^2 + logvar2 + log 2 pi) with
        #    q's weights held: d/dz2 = eps2 / sigma2, d/dmu2 = -eps2 / sigma2,
        #    d/dlogvar2 = (1 - eps2^2) / 2; (mu2, logvar2) pass it on to z1, not to the weights
        eps2, sigma2 = c.sampler2
        eps2 = eps2.reshape(k * n, Z2)
        dz2 = dz2 + gs * eps2 / sigma2
        dheld = xp.concatenate([-gs * eps2 / sigma2, gs * 0.5 * (1 - eps2 * eps2)], axis=1)
        dz1 = dz1 + input_gradient(self.encoder2, dheld)
        # 5. z2 = mu2 + sigma2 eps2: the path into q(z2 | z1)'s weights and into z1
        dmu2, dlogvar2 = reparameterize_backward(dz2, c.sampler2)
        dz1 = dz1 + self.encoder2.backward(xp.concatenate([dmu2, dlogvar2], axis=1))
        # 6. -log q(z1 | x) with q's weights held: d/dz1 = (z1 - mu1) / sigma1^2 = eps1 / sigma1
        eps1, sigma1 = c.sampler1
        dz1 = dz1 + gs * (eps1 / sigma1[None]).reshape(k * n, Z1)
        # 7. z1 = mu1 + sigma1 eps1 -> the encoder of q(z1 | x)
        dmu1, dlogvar1 = reparameterize_backward(dz1, c.sampler1)
        self.encoder1.backward(xp.concatenate([dmu1, dlogvar1], axis=1))

    # -- evaluation ----------------------------------------------------------------
    def test_metrics(self, x, labels=None, batch_size=1000, rng=None):
        """The Monte-Carlo negative ELBO and its parts averaged over the images of x
        (host array; ``n_samples`` samples per image from ``rng``), and the active
        units of both layers (``vae.active_units``): 'active_units' over mu1(x),
        'active_units_z2' over mu2 averaged over the k samples of z1."""
        xp = self.xp
        recon = kl = 0.0
        means1, means2 = [], []
        for start in range(0, x.shape[0], batch_size):
            xb = xp.asarray(x[start:start + batch_size])
            _, parts = self.loss(xb, rng=rng, training=False)
            recon += float(parts["recon_per_image"].sum())
            kl += float(parts["kl_per_image"].sum())
            means1.append(to_numpy(parts["mu_per_image"]))
            mu2 = parts["mu2_per_sample"].reshape(-1, xb.shape[0], self.latent_dim)
            means2.append(to_numpy(mu2.mean(axis=0)))
        self._cache = None
        recon, kl = recon / x.shape[0], kl / x.shape[0]
        return {"test_nelbo": recon + kl, "test_recon": recon, "test_kl": kl,
                "active_units": active_units(np.concatenate(means1))[0],
                "active_units_z2": active_units(np.concatenate(means2))[0]}


def input_gradient(net, dout):
    """``net``'s d loss / d input at its last forward for the upstream ``dout``,
    leaving its parameters' gradients as they were."""
    params = net.parameters()
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        return net.backward(dout)
    finally:
        for p, grad in zip(params, saved):
            p.grad = grad


def iwae_2l(image_shape=(1, 28, 28), rng=None, dtype=np.float32, objective="elbo",
            n_samples=1, hidden_dim=200, z1_dim=100, hidden2_dim=100, latent_dim=50,
            **options):
    """Build ``iwae-2l`` (widths: the paper's by default; ``latent_dim`` is z2's).

    ``options``: the other VAE-family options the configuration passes
    (likelihood, beta, the KL schedule's, gaussian_variance); ValueError for a
    value this model does not take (see :func:`option_problems`).
    """
    problems = option_problems(objective, **options)
    if problems:
        raise ValueError("iwae_2l: " + "; ".join(problems))
    rng = np.random.default_rng(0) if rng is None else rng
    D = int(np.prod(image_shape))
    h, h2 = hidden_dim, hidden2_dim
    encoder1 = Sequential(Flatten(), *tanh_mlp((D, h, h, 2 * z1_dim), rng, dtype))
    encoder2 = Sequential(*tanh_mlp((z1_dim, h2, h2, 2 * latent_dim), rng, dtype))
    prior1 = Sequential(*tanh_mlp((latent_dim, h2, h2, 2 * z1_dim), rng, dtype))
    decoder = Sequential(*tanh_mlp((z1_dim, h, h, D), rng, dtype), Reshape(*image_shape))
    return HierarchicalVAE(encoder1, encoder2, prior1, decoder, z1_dim, latent_dim,
                           image_shape=image_shape, objective=objective, n_samples=n_samples)

"""Loss terms of a VAE, each a forward/backward pair.

Every forward returns a per-sample loss of shape (N,) (summed over the
sample's dimensions) and a cache; every backward takes dL/dloss of shape (N,)
(for a batch mean that is 1/N everywhere) and returns the gradients of the
forward's inputs. The model combines the terms:

    loss = mean_n [ recon_n + beta * KL_n ]

Inputs of shape (N, ...) are treated as (N, D) with D the product of the
trailing dimensions. :func:`check_values` is the models' check of the images
they receive (:data:`TARGET_RANGE`: a Bernoulli likelihood's targets lie in
[0, 1]); the loss terms themselves check shapes and dtypes only.

Registry entries (gradient checks, generated tests, docs/derivations.md):
scratchvae/gradcheck/losses.py.
"""
import math

import kernels
from kernels.sigmoid import sigmoid

from .backend import check_float, check_same, check_shape, get_xp


#: the values of an image each likelihood accepts: (low, high); every value finite
TARGET_RANGE = {"bernoulli": (0.0, 1.0), "gaussian": (-math.inf, math.inf),
                "gaussian-learned": (-math.inf, math.inf)}


def check_values(op, name, x, low=-math.inf, high=math.inf):
    """Raise ``ValueError`` naming ``op`` unless every value of ``x`` is finite and in
    [low, high].

    Two reductions, the minimum and the maximum: a NaN anywhere makes both NaN,
    and a NaN fails every comparison, so ``low <= min`` and ``max <= high`` with
    both finite hold exactly when every value is finite and in range.
    """
    if x.size == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    if low <= lo and hi <= high and math.isfinite(lo) and math.isfinite(hi):
        return
    xp = get_xp(x)
    nans = int(xp.isnan(x).sum())
    if nans:
        got = f"NaN ({nans} of {x.size} values)"
    elif not (math.isfinite(lo) and math.isfinite(hi)):
        got = f"infinite values (from {lo} to {hi})"
    else:
        got = f"values from {lo:.6g} to {hi:.6g}"
    where = f"in [{low:g}, {high:g}]" if math.isfinite(low) or math.isfinite(high) else ""
    raise ValueError(f"{op}: expected finite {name}{' ' + where if where else ''}, got {got}")


def _per_sample(dloss, n, op):
    check_shape(op, "upstream gradient", dloss, (n,))
    return dloss.reshape((n,) + (1,))


# --------------------------------------------------------------------------
# KL( N(mu, diag exp(logvar)) || N(0, I) )
# --------------------------------------------------------------------------

def gaussian_kl_forward(mu, logvar):
    """KL_n = 1/2 sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j).

    The closed form of KL(N(mu, s^2) || N(0, 1)) = 1/2 (mu^2 + s^2 - 1 - log s^2)
    per dimension, summed over the Z independent dimensions. Shapes: mu,
    logvar (N, Z) -> KL (N,). Caches (mu, exp(logvar)).
    """
    check_shape("GaussianKL", "mu", mu, (None, None))
    check_float("GaussianKL", "mu", mu)
    check_same("GaussianKL", "mu", mu, "logvar", logvar)
    xp = get_xp(mu)
    var = xp.exp(logvar)
    kl = 0.5 * (mu * mu + var - 1 - logvar).sum(axis=1)
    return kl, (mu, var)


def gaussian_kl_backward(dkl, cache):
    """dKL_n/dmu_j = mu_j;  dKL_n/dlogvar_j = (exp(logvar_j) - 1) / 2.

    Returns (dmu, dlogvar), each dkl_n times those, shape (N, Z).
    """
    mu, var = cache
    d = _per_sample(dkl, mu.shape[0], "GaussianKL.backward")
    return d * mu, d * (0.5 * (var - 1))


# --------------------------------------------------------------------------
# Bernoulli likelihood: binary cross-entropy with logits
# --------------------------------------------------------------------------

def bernoulli_nll_forward(logits, targets, fused_grad=False):
    """-log p(x | logits) = sum_d BCE(l_d, x_d), with targets x in [0, 1].

        BCE(l, x) = -x log sigma(l) - (1 - x) log(1 - sigma(l))
                  = max(l, 0) - l x + log(1 + exp(-|l|))

    The second form never exponentiates a positive number, so it is exact
    for |l| up to 1e4 and beyond. Shapes: logits, targets (N, ...) -> (N,).

    With ``fused_grad=True`` one kernel pass (kernels.bce_with_logits) also
    computes d BCE / d l = sigma(l) - x and caches it, instead of caching the
    inputs; this is the training path.
    """
    check_float("BernoulliNLL", "logits", logits)
    check_same("BernoulliNLL", "logits", logits, "targets", targets)
    n = logits.shape[0]
    l2 = logits.reshape(n, -1)
    x2 = targets.reshape(n, -1)
    if fused_grad:
        nll, grad = kernels.bce_with_logits(l2, x2, 1.0)
        cache = ("grad", grad, logits.shape)
    else:
        nll = kernels.bce_with_logits_forward(l2, x2)
        cache = ("inputs", (l2, x2), logits.shape)
    return nll.astype(logits.dtype, copy=False), cache


def bernoulli_nll_backward(dnll, cache):
    """dBCE/dl = sigma(l) - x.

    From BCE = -x log s - (1 - x) log(1 - s), s = sigma(l), ds/dl = s (1 - s):
    dBCE/dl = (-x / s + (1 - x) / (1 - s)) s (1 - s) = s - x.
    Returns dlogits of the logits' shape.
    """
    kind, data, shape = cache
    if kind == "grad":   # the cached s - x, scaled into a new array (the cache stays intact)
        grad = data * _per_sample(dnll, data.shape[0], "BernoulliNLL.backward")
    else:
        l2, x2 = data
        d = _per_sample(dnll, l2.shape[0], "BernoulliNLL.backward")
        grad = d * (sigmoid(l2) - x2)
    return grad.reshape(shape)


# --------------------------------------------------------------------------
# Gaussian likelihood, fixed variance lambda
# --------------------------------------------------------------------------

def gaussian_nll_forward(mean, targets, variance=1.0):
    """-log N(x; m, lambda I) = sum_d [ (x_d - m_d)^2 / (2 lambda) + log(2 pi lambda) / 2 ].

    Shapes: mean, targets (N, ...) -> (N,). Caches the residual m - x.
    """
    if not variance > 0:
        raise ValueError(f"GaussianNLL: expected a variance > 0, got {variance}")
    check_float("GaussianNLL", "mean", mean)
    check_same("GaussianNLL", "mean", mean, "targets", targets)
    n = mean.shape[0]
    r = (mean - targets).reshape(n, -1)
    const = 0.5 * math.log(2 * math.pi * variance) * r.shape[1]
    nll = (r * r).sum(axis=1) / (2 * variance) + const
    return nll, (r, variance, mean.shape)


def gaussian_nll_backward(dnll, cache):
    """d/dm_d of (x_d - m_d)^2 / (2 lambda) = (m_d - x_d) / lambda."""
    r, variance, shape = cache
    d = _per_sample(dnll, r.shape[0], "GaussianNLL.backward")
    return (d * r / variance).reshape(shape)


# --------------------------------------------------------------------------
# Gaussian likelihood, learned per-pixel log-variance
# --------------------------------------------------------------------------

def gaussian_nll_learned_forward(mean, logvar, targets):
    """-log N(x; m, diag exp(v)) = 1/2 sum_d [ (x_d - m_d)^2 e^{-v_d} + v_d + log 2 pi ].

    ``logvar`` either has the mean's shape (the decoder predicts it) or the
    shape of one sample, (1, ...) (a free per-pixel parameter shared by the
    batch). Shapes: mean, targets (N, ...) -> (N,). Caches the residual and
    the precision exp(-v).
    """
    check_float("GaussianNLLLearned", "mean", mean)
    check_same("GaussianNLLLearned", "mean", mean, "targets", targets)
    per_pixel = (1,) + tuple(mean.shape[1:])
    if tuple(logvar.shape) not in (tuple(mean.shape), per_pixel):
        raise ValueError(f"GaussianNLLLearned: expected logvar of shape {tuple(mean.shape)} "
                         f"or {per_pixel}, got {tuple(logvar.shape)}")
    check_float("GaussianNLLLearned", "logvar", logvar, mean.dtype)
    xp = get_xp(mean)
    n = mean.shape[0]
    r = mean - targets
    precision = xp.exp(-logvar)
    per_dim = r * r * precision + logvar + math.log(2 * math.pi)
    nll = 0.5 * per_dim.reshape(n, -1).sum(axis=1)
    return nll, (r, precision, logvar.shape)


def gaussian_nll_learned_backward(dnll, cache):
    """With r = m - x and precision p = e^{-v}:

        d/dm_d = r_d p_d
        d/dv_d = 1/2 (1 - r_d^2 p_d)

    For a shared (1, ...) logvar the per-sample gradients are summed over
    the batch. Returns (dmean, dlogvar).
    """
    r, precision, v_shape = cache
    n = r.shape[0]
    d = _per_sample(dnll, n, "GaussianNLLLearned.backward").reshape((n,) + (1,) * (r.ndim - 1))
    rp = r * precision
    dmean = d * rp
    dlogvar = d * (0.5 * (1 - r * rp))
    if tuple(v_shape) != tuple(r.shape):
        dlogvar = dlogvar.sum(axis=0, keepdims=True)
    return dmean, dlogvar


# --------------------------------------------------------------------------
# Categorical likelihood: softmax cross-entropy (the classifier; a PixelCNN's
# K-way distribution at every position of a code map)
# --------------------------------------------------------------------------

def _class_rows(logits):
    """(N, K, ...) logits -> (N*P, K) rows, one per sample and position (a view
    for 2-D logits, where P = 1)."""
    if logits.ndim == 2:
        return logits
    return get_xp(logits).moveaxis(logits, 1, -1).reshape(-1, logits.shape[1])


def softmax_cross_entropy_forward(logits, labels):
    """CE_n = sum_s -log softmax(l_{n,:,s})[y_{n,s}] = sum_s logsumexp(l_{n,:,s}) - l_{n,y_{n,s},s}.

    Shapes: logits (N, K) with integer labels (N,) in [0, K) (a classifier),
    or logits (N, K, ...) with labels (N, ...) (a K-way distribution at every
    position s, e.g. (N, K, H, W) over a code map) -> (N,): the loss of each
    sample summed over its positions, in nats (per code map, not per code).
    The log-sum-exp subtracts each row's maximum first, so no exp overflows
    (logits of 1e4 are exact). Caches p = softmax(l) as (N*P, K) rows (P
    positions per sample, 1 for 2-D logits) and the labels.
    """
    op = "SoftmaxCrossEntropy"
    if getattr(logits, "ndim", 0) < 2:
        check_shape(op, "logits", logits, (None, None))
    check_float(op, "logits", logits)
    xp = get_xp(logits)
    labels = xp.asarray(labels)
    n, c = logits.shape[:2]
    check_shape(op, "labels", labels, (n,) + tuple(logits.shape[2:]))
    if labels.dtype.kind not in "iu" or (labels.size and (int(labels.min()) < 0
                                                          or int(labels.max()) >= c)):
        raise ValueError(f"{op}: expected integer labels in [0, {c}), got "
                         f"dtype {labels.dtype}" + (f", range [{int(labels.min())}, "
                                                    f"{int(labels.max())}]"
                                                    if labels.size else ""))
    rows, flat = _class_rows(logits), labels.reshape(-1)
    shifted = rows - rows.max(axis=1, keepdims=True)
    e = xp.exp(shifted)
    total = e.sum(axis=1)
    ce = xp.log(total) - shifted[xp.arange(flat.shape[0]), flat]
    if logits.ndim > 2:
        ce = ce.reshape(n, -1).sum(axis=1)
    return ce, (e / total[:, None], labels)


def softmax_cross_entropy_backward(dce, cache):
    """dCE_n/dl_{n,c,s} = p_{n,c,s} - 1[c = y_{n,s}].

    From CE = sum_s (log sum_c' exp(l_{c',s}) - l_{y_s,s}): the first term's
    derivative is exp(l_{c,s}) / sum_c' exp(l_{c',s}) = p_{c,s}, the
    second's is 1 for c = y_s; the sum over positions gives each position
    its own term, scaled by the sample's dce_n. Returns dlogits of the
    logits' shape (for more than 2 dimensions a channels-last view).
    """
    p, labels = cache
    n = labels.shape[0]
    d = _per_sample(dce, n, "SoftmaxCrossEntropy.backward")
    g = p.copy()
    g[get_xp(p).arange(p.shape[0]), labels.reshape(-1)] -= 1
    if labels.ndim == 1:
        return d * g
    g = (g.reshape(n, -1, p.shape[1]) * d[:, :, None]).reshape(labels.shape + (p.shape[1],))
    return get_xp(g).moveaxis(g, -1, 1)

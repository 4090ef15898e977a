"""The importance-weighted bound of Burda et al. (2015) over k log-weights.

For one image x and k samples z_i ~ q(z | x) with log-weights
log w_i = log p(x, z_i) - log q(z_i | x),

    L_k(x) = log (1/k) sum_i w_i = logsumexp_i(log w_i) - log k.

Shapes: log_w (k, N), sample i of image n at [i, n]; L_k (N,).

Stability: logsumexp subtracts the column's largest log-weight m before
exponentiating, logsumexp = m + log sum_i exp(log w_i - m), so the largest
term is exp(0) = 1 and nothing overflows however negative the log-weights
(a Bernoulli image's log p(x | z) is about -100 nats).

Backward. d L_k / d log w_i = w_i / sum_j w_j = w~_i, the normalised
importance weights (softmax of the log-weights over the k samples), so

    d log w_i = dL * w~_i          (upstream dL of shape (N,)).

For k = 1, w~ = 1 and L_1 = log w: the one-sample ELBO estimate.

Registry entry (gradient checks, generated tests, docs/derivations.md):
scratchvae/gradcheck/losses.py.
"""
import math

from ..backend import check_float, check_shape, get_xp


def iwae_forward(log_w):
    """log_w (k, N) -> (L_k (N,), cache); caches the normalised weights w~ (k, N)."""
    check_shape("IWAEBound", "log_w", log_w, (None, None))
    check_float("IWAEBound", "log_w", log_w)
    xp = get_xp(log_w)
    m = log_w.max(axis=0)                                   # (N,)
    e = xp.exp(log_w - m[None])                             # (k, N), largest term 1
    total = e.sum(axis=0)
    bound = m + xp.log(total) - math.log(log_w.shape[0])
    return bound, e / total[None]


def iwae_backward(dbound, cache):
    """dL (N,) -> d log_w (k, N) = w~ * dL."""
    w_norm = cache
    check_shape("IWAEBound.backward", "upstream gradient", dbound, (w_norm.shape[1],))
    return w_norm * dbound[None]

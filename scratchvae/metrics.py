"""Evaluation metrics beyond the ELBO.

Importance-weighted estimate of the negative log-likelihood (Burda et al. 2015):
with K samples z_k ~ q(z|x),

    log p(x) >= log (1/K) sum_k w_k,   w_k = p(x, z_k) / q(z_k | x)

The bound tightens as K grows and equals the ELBO at K = 1; its expectation
is never below the ELBO, so the IW estimate of -log p(x) is never above the
negative ELBO on average. The sum is taken in log space with a stable
log-sum-exp, accumulated over chunks of samples so that memory stays bounded
for K = 1000 or more.

With the Bernoulli likelihood on grey-level pixels (MNIST's intensities in
[0, 1], not binarised) p(x | z) is a cross-entropy term, not a normalised
density (kernels/bce.py), so the "IW-NLL" is then the same bound on that
unnormalised score: comparable between models scored alike, and a true
negative log-likelihood only on binarised data.
"""
import math

import numpy as np
from tqdm.auto import tqdm

from .backend import to_numpy


class LogMeanExp:
    """Running log((1/K) sum_k exp(a_k)) over chunks of a_k, per image.

    Keeps a running maximum m and s = sum_k exp(a_k - m); a new chunk with a
    larger maximum rescales s by exp(m_old - m_new). Exact up to rounding,
    and never overflows.
    """

    def __init__(self, n):
        self.m = np.full(n, -np.inf)
        self.s = np.zeros(n)
        self.k = 0

    def add(self, a):
        """a: (k, n) host float64 array of log-weights for k more samples."""
        m_new = np.maximum(self.m, a.max(axis=0))
        self.s = self.s * np.exp(self.m - m_new) + np.exp(a - m_new).sum(axis=0)
        self.m = m_new
        self.k += a.shape[0]

    def value(self):
        return self.m + np.log(self.s) - math.log(self.k)


def iw_nll(model, x, labels=None, k=1000, chunk=100, batch_size=100, rng=None,
           progress=False):
    """Importance-weighted NLL estimate on images ``x`` (host array).

    ``model.log_importance_weights(xb, k, rng, labels)`` returns the (k, n)
    log-weights log p(x, z_k) - log q(z_k | x) of a batch, asked for at most
    ``chunk`` samples at a time: at most ``chunk * batch_size`` decoder rows are
    held at once, whatever k (k = 5000 for Burda et al.'s test NLL). With
    ``progress`` a bar counts the images done. Returns a dict with
    ``iw_nll`` (mean over images), ``iw_nll_se`` (its standard error over the
    images) and ``iw_k``.
    """
    if k < 1 or chunk < 1:
        raise ValueError(f"iw_nll: expected k >= 1 and chunk >= 1, got k={k}, chunk={chunk}")
    rng = np.random.default_rng(0) if rng is None else rng
    per_image = []
    bar = tqdm(total=x.shape[0], desc=f"IW-NLL (K={k})", unit="image",
               disable=not progress, leave=False, dynamic_ncols=True)
    for start in range(0, x.shape[0], batch_size):
        xb = model.xp.asarray(x[start:start + batch_size])
        yb = None if labels is None else labels[start:start + batch_size]
        acc = LogMeanExp(xb.shape[0])
        done = 0
        while done < k:
            kk = min(chunk, k - done)
            acc.add(to_numpy(model.log_importance_weights(xb, kk, rng, labels=yb)).astype(np.float64))
            done += kk
            bar.set_postfix_str(f"{done}/{k} samples of images {start + 1}-"
                                f"{start + xb.shape[0]}", refresh=False)
            bar.refresh()
        bar.update(xb.shape[0])
        per_image.append(-acc.value())
    bar.close()
    per_image = np.concatenate(per_image)
    se = float(per_image.std(ddof=1) / math.sqrt(len(per_image))) if len(per_image) > 1 else 0.0
    return {"iw_nll": float(per_image.mean()), "iw_nll_se": se, "iw_k": int(k)}

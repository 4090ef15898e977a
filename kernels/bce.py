"""Fused binary cross-entropy with logits: the VAE's Bernoulli reconstruction term.

Shapes: logits l and targets x of shape (N, D) -- or (N, ...), viewed as
(N, D) with D the product of the trailing sizes. Returns per-row losses of
shape (N,) and, for :func:`bce_with_logits`, dlogits of the logits' shape.

Math. With p = sigmoid(l) the Bernoulli negative log-likelihood of x in {0, 1}
is ``-x log p - (1 - x) log(1 - p)``. For grey levels x in (0, 1) (MNIST's
intensities; ``--binarize`` binarises the training batches only) the same
expression is the cross-entropy H(x, p): the usual VAE reconstruction term,
but not the log of a normalised density of x, so "nats" of such a model
compare with other models scored the same way, not with likelihoods of
binarised data.

Using ``log p = -softplus(-l)``, ``log(1 - p) = -softplus(l)`` and
``softplus(l) - softplus(-l) = l``:

    nll(l, x) = softplus(l) - l x,   softplus(l) = log(1 + e^l)

``e^l`` overflows for large l, so softplus is evaluated in the stable form

    softplus(l) = max(l, 0) + log1p(exp(-|l|)),

whose exponential has a non-positive argument: it lies in [0, 1] and never
overflows (it underflows harmlessly to 0 for |l| > ~104 in float32, ~745 in
float64). Hence

    row_loss[n] = sum_d  max(l, 0) - l x + log1p(exp(-|l|))

is finite, without NaN, for any finite logits (1e4, 1e30, ...).

Gradient: d softplus(l)/dl = e^l / (1 + e^l) = sigmoid(l), so

    d nll / dl = sigmoid(l) - x,      dlogits = scale * (sigmoid(l) - x).

``scale`` is the upstream gradient of each row loss (e.g. 1/N for a batch
mean). sigmoid is evaluated stably from the same e = exp(-|l|)
(kernels/sigmoid.py): ``1 / (1 + e)`` for l >= 0 and ``e / (1 + e)`` for
l < 0. One exp per element: the CUDA kernel makes one pass over the data;
on the CPU, NumPy's vectorised exp writes e into the gradient's array and
one pass of the Numba kernel turns each entry into its gradient (Numba's
exp is a scalar libm call, several times slower than NumPy's SIMD loop: it
would be the larger part of a fused pass), with only one log per 512
elements (:func:`_bce_cpu`). The formulas of one element, ``max(l, 0) - l x``
and ``scale * (sigmoid(l) - x)``, are written once (:func:`_linear_terms`,
:func:`_dlogit`) and compiled into both the CPU and the CUDA kernel.

Precision (chosen): row sums are accumulated in float64 and then stored in
the input dtype -- ``row_loss`` and ``dlogits`` have the dtype of the logits,
so float32 training stays float32. On the CPU ``exp(-|l|)`` is NumPy's, in
the input dtype, and everything after it float64; the CUDA kernel works
in float64 throughout; the reference evaluates elements in the input dtype
and sums in float64. All agree to a few units of the input dtype's rounding.
"""
import functools
import math

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from ._arrays import check_float, check_same, get_xp
from ._dispatch import CUDA_THREADS, choose, cuda_stream
from .sigmoid import sigmoid, sigmoid_of_exp


def _as_rows(a):
    """View (N, ...) as (N, D); a copy only for non-contiguous input."""
    return a.reshape(a.shape[0], math.prod(a.shape[1:]))


def _check(op, logits, targets):
    check_float(op, "logits", logits)
    check_same(op, "logits", logits, "targets", targets)
    if logits.ndim < 1:
        raise ValueError(f"{op}: expected logits of shape (N, ...), got a 0-d array")


# --------------------------------------------------------------------------
# references (plain xp)
# --------------------------------------------------------------------------

def bce_with_logits_forward_reference(logits, targets):
    """Row losses in plain ``xp``; shape (N,), dtype of the logits."""
    xp = get_xp(logits)
    l, x = _as_rows(logits), _as_rows(targets)
    terms = xp.maximum(l, 0) - l * x + xp.log1p(xp.exp(-xp.abs(l)))
    return terms.sum(axis=1, dtype=xp.float64).astype(l.dtype)


def bce_with_logits_reference(logits, targets, scale=1.0):
    """``(row_loss, dlogits)`` in plain ``xp`` (allocates temporaries)."""
    l, x = _as_rows(logits), _as_rows(targets)
    row_loss = bce_with_logits_forward_reference(l, x)
    dlogits = l.dtype.type(scale) * (sigmoid(l) - x)
    return row_loss, dlogits.reshape(logits.shape)


# --------------------------------------------------------------------------
# the formulas of one element, shared by the CPU and the CUDA kernels
# --------------------------------------------------------------------------

@register_jitable
def _linear_terms(l, x):
    """max(l, 0) - l x: nll(l, x) without its logarithm log1p(exp(-|l|))."""
    return (l if l > 0.0 else 0.0) - l * x


@register_jitable
def _dlogit(l, e, x, scale):
    """scale * (sigmoid(l) - x), given e = exp(-|l|)."""
    return scale * (sigmoid_of_exp(l, e) - x)


# --------------------------------------------------------------------------
# Numba CPU kernel: parallel over rows, one pass, row sums in float64
# --------------------------------------------------------------------------

#: factors (1 + e) per log call; each is in (1, 2], so a block's product is
#: at most 2**512, far below float64's largest value (~2**1024)
LOG_BLOCK = 512


def _exp_of_minus_abs(l, out):
    """out = exp(-|l|), in (0, 1], by NumPy's vectorised exp, in l's dtype."""
    np.abs(l, out=out)
    np.negative(out, out=out)
    return np.exp(out, out=out)


@njit(parallel=True, fastmath=False, cache=True)
def _bce_cpu(l, e_dl, x, scale, row_loss, want_grad):
    """row_loss[n] for every row n (rows in parallel), given e_dl = exp(-|l|)
    (:func:`_exp_of_minus_abs`); when ``want_grad``, each entry of e_dl is
    then overwritten with its gradient (read before written: no second array).

    ``sum_d log1p(e_d)`` is taken as ``sum_blocks log(prod_block (1 + e_d))``:
    one log per LOG_BLOCK elements instead of one per element (the libm
    log/log1p call is the most expensive part of the loop). Rounding adds
    about one float64 ulp per factor, an absolute error near 512 * 1.1e-16
    = 6e-14 per block: invisible in a float32 result. Everything after e
    is float64.
    """
    N, D = l.shape
    for n in prange(N):
        acc = 0.0     # float64: sum of max(l, 0) - l x, plus the logs of full blocks
        prod = 1.0    # float64: product of (1 + e) over the current block
        k = 0         # factors in the current block
        for d in range(D):
            e = np.float64(e_dl[n, d])
            lf = np.float64(l[n, d])
            xf = np.float64(x[n, d])
            acc += _linear_terms(lf, xf)
            prod *= 1.0 + e
            k += 1
            if k == LOG_BLOCK:
                acc += np.log(prod)
                prod = 1.0
                k = 0
            if want_grad:
                e_dl[n, d] = _dlogit(lf, e, xf, scale)
        row_loss[n] = acc + np.log(prod)


# --------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------

def bce_with_logits(logits, targets, scale=1.0):
    """Row losses and their logit gradient, fused: ``(row_loss, dlogits)``.

    logits, targets: (N, ...) of one float dtype. row_loss: (N,);
    dlogits: logits' shape, ``scale * (sigmoid(logits) - targets)``.
    """
    _check("bce_with_logits", logits, targets)
    impl = choose(logits, targets)
    if impl == "reference":
        return bce_with_logits_reference(logits, targets, scale)
    xp = get_xp(logits)
    l, x = _as_rows(logits), _as_rows(targets)  # views: both are contiguous
    row_loss = xp.empty(l.shape[0], dtype=l.dtype)
    dl = xp.empty_like(l)
    if impl == "cpu":
        _bce_cpu(l, _exp_of_minus_abs(l, dl), x, float(scale), row_loss, True)
    else:
        _bce_cuda(l, x, float(scale), row_loss, dl)
    return row_loss, dl.reshape(logits.shape)


def bce_with_logits_forward(logits, targets):
    """Row losses only (evaluation: no gradient array is allocated)."""
    _check("bce_with_logits_forward", logits, targets)
    impl = choose(logits, targets)
    if impl == "reference":
        return bce_with_logits_forward_reference(logits, targets)
    xp = get_xp(logits)
    l, x = _as_rows(logits), _as_rows(targets)
    row_loss = xp.empty(l.shape[0], dtype=l.dtype)
    if impl == "cpu":
        _bce_cpu(l, _exp_of_minus_abs(l, np.empty_like(l)), x, 0.0, row_loss, False)
    else:
        _bce_forward_cuda(l, x, row_loss)
    return row_loss


# --------------------------------------------------------------------------
# CUDA kernel: one block per row, threads stride over D, shared-memory sum
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _cuda_kernel():
    # numba.cuda is bound as a module *global*, not a local: the CUDA simulator
    # (NUMBA_ENABLE_CUDASIM=1, used by the tests) replaces the global `cuda`
    # seen by a kernel with its fake module.
    global cuda
    from numba import cuda
    from numba import float64

    TPB = CUDA_THREADS  # a power of two: the tree reduction halves it

    @cuda.jit
    def bce_kernel(l, x, scale, row_loss, dl, want_grad):
        """Block n handles row n; dl is not touched unless want_grad."""
        n = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        acc = 0.0  # float64: this thread's part of the row sum
        for d in range(tid, l.shape[1], TPB):
            li = float64(l[n, d])   # float64(), not float(): numba-cuda's float()
            xi = float64(x[n, d])   # keeps a float32 a float32
            e = math.exp(-abs(li))  # in (0, 1]: cannot overflow
            acc += _linear_terms(li, xi) + math.log1p(e)
            if want_grad:
                dl[n, d] = _dlogit(li, e, xi, scale)
        # tree reduction of the TPB partial sums in shared memory
        partial = cuda.shared.array(TPB, float64)
        partial[tid] = acc
        cuda.syncthreads()
        half = TPB // 2
        while half > 0:
            if tid < half:
                partial[tid] += partial[tid + half]
            cuda.syncthreads()
            half //= 2
        if tid == 0:
            row_loss[n] = partial[0]

    return bce_kernel


def _bce_cuda(l, x, scale, row_loss, dl):
    """Launch on 2-D device arrays (CuPy, or NumPy under cudasim); one block per row."""
    if l.shape[0]:
        kernel = _cuda_kernel()
        kernel[l.shape[0], CUDA_THREADS, cuda_stream(l)](l, x, scale, row_loss, dl, True)


def _bce_forward_cuda(l, x, row_loss):
    """As :func:`_bce_cuda` without the gradient (a 0x0 placeholder is passed)."""
    if l.shape[0]:
        no_grad = get_xp(l).empty((0, 0), dtype=l.dtype)
        kernel = _cuda_kernel()
        kernel[l.shape[0], CUDA_THREADS, cuda_stream(l)](l, x, 0.0, row_loss, no_grad, False)

"""The gated activation of a gated PixelCNN, forward and backward.

Shapes: x of shape (N, 2C, ...) (an image batch (N, 2C, H, W), or (N, 2C));
its first C channels are a, its last C channels are b, and

    y = tanh(a) * sigmoid(b)            of shape (N, C, ...).

Backward. With t = tanh(a) and s = sigmoid(b), tanh' = 1 - t^2 and
sigmoid' = s (1 - s), so for an upstream gradient dy of y's shape

    da = dy * s * (1 - t^2),     db = dy * t * s * (1 - s),

and dx = [da, db] along the channels (x's shape). The backward reads x and
recomputes t and s: the forward writes y
only, and nothing of y's size is kept for the backward but x itself.

Stability. sigmoid comes from the one stable formula of kernels/sigmoid.py
(e = exp(-|b|) in (0, 1], never overflowing); tanh saturates at +-1. Any
finite x (1e4, 1e30, ...) gives finite y and dx, without NaN.

Layout. The halves a and b sit at the same place of two blocks of memory:
a C-order x is an array of shape (N, 2, Q) with Q = C*H*W, a channels-last x
(NCHW shape, NHWC memory, the conv ops' output) one of shape (N*H*W, 2, C).
The kernels take that (P, 2, Q) view, y as (P, Q) in the same order. y and
dx get x's layout. Other layouts, and a dy whose layout is not x's, go to
the reference.

Three implementations of each (:mod:`kernels._dispatch`): the CPU kernel,
NumPy's vectorised tanh and exp over the (P, 2, Q) view, each step written
in place into a (P, Q) buffer (Numba has no vectorised math library here,
and its scalar ``tanhf``/``expf`` loop ran 10x slower); a Numba CUDA kernel
(grid-stride loop over the P*Q pairs, one function per pair, :func:`_gate`
and :func:`_gate_grads`, in the array's dtype); and the plain ``xp``
reference. The CPU kernel computes the reference's formulas in the
reference's order: the two differ only where NumPy's loops over strided and
contiguous operands round differently (nowhere on the project's machine).
The CUDA kernel agrees to a unit or two in the last place.
"""
import functools
import math

import numpy as np
from numba.extending import register_jitable

from ._arrays import check_float, check_shape, get_xp, memory_order
from ._dispatch import CUDA_THREADS, choose, cuda_grid, cuda_stream, scalar
from .sigmoid import sigmoid, sigmoid_of_exp_as


# --------------------------------------------------------------------------
# the formulas of one pair (a, b), of the CUDA kernels
# --------------------------------------------------------------------------

@register_jitable
def _gate(a, b, one):
    """tanh(a) * sigmoid(b) in the type of ``one`` (= 1)."""
    return math.tanh(a) * sigmoid_of_exp_as(b, math.exp(-abs(b)), one)


@register_jitable
def _gate_grads(dy, a, b, one):
    """(da, db) = (dy s (1 - t^2), dy s t (1 - s)), t = tanh(a), s = sigmoid(b)."""
    t = math.tanh(a)
    s = sigmoid_of_exp_as(b, math.exp(-abs(b)), one)
    ds = dy * s
    return ds * (one - t * t), ds * t * (one - s)


# --------------------------------------------------------------------------
# references (plain xp)
# --------------------------------------------------------------------------

def gated_forward_reference(x):
    """y = tanh(a) * sigmoid(b) in plain ``xp``."""
    C = x.shape[1] // 2
    return get_xp(x).tanh(x[:, :C]) * sigmoid(x[:, C:])


def gated_backward_reference(dy, x):
    """dx = [dy s (1 - t^2), dy s t (1 - s)] in plain ``xp`` (C-order)."""
    xp = get_xp(x)
    C = x.shape[1] // 2
    t, s = xp.tanh(x[:, :C]), sigmoid(x[:, C:])
    ds = dy * s
    return xp.concatenate([ds * (1 - t * t), ds * t * (1 - s)], axis=1)


# --------------------------------------------------------------------------
# CPU kernels: x as (P, 2, Q), y and dy as (P, Q); NumPy's vectorised tanh
# and exp, written in place into the output's memory
# --------------------------------------------------------------------------

def _sigmoid_into(b, out, scratch, one):
    """sigmoid(b) into ``out`` by the formula of kernels/sigmoid.py:
    e = exp(-|b|), then (1 if b >= 0 else e) / (1 + e), the numerator taken as
    exp(min(b, 0)) (1, or e itself); ``scratch`` holds 1 + e."""
    e = np.exp(np.negative(np.abs(b, out=out), out=out), out=out)
    np.add(one, e, out=scratch)
    numerator = np.exp(np.minimum(b, 0, out=out), out=out)
    return np.divide(numerator, scratch, out=out)


def _gated_forward_cpu(x, y, one):
    """y = tanh(a) s, s = sigmoid(b), a = x[:, 0], b = x[:, 1]; y holds 1 + e on the way."""
    s = _sigmoid_into(x[:, 1], np.empty_like(y), y, one)
    np.multiply(np.tanh(x[:, 0], out=y), s, out=y)


def _gated_backward_cpu(dy, x, dx, one):
    """dx[:, 0] = ds (1 - t^2), dx[:, 1] = (ds t) (1 - s), ds = dy s,
    t = tanh(a), s = sigmoid(b); the factors in contiguous (P, Q) buffers, as
    NumPy's vectorised loops run over whole contiguous arrays, not rows of Q."""
    s = _sigmoid_into(x[:, 1], np.empty_like(dy), np.empty_like(dy), one)
    ds = np.multiply(dy, s, out=np.empty_like(dy))
    t = np.tanh(x[:, 0], out=np.empty_like(dy))
    ds_t = np.multiply(ds, t, out=np.empty_like(dy))
    np.multiply(ds_t, np.subtract(one, s, out=s), out=dx[:, 1])
    np.multiply(ds, np.subtract(one, np.multiply(t, t, out=t), out=t), out=dx[:, 0])


# --------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------

def _check_input(op, x):
    check_float(op, "input", x)
    if x.ndim < 2 or x.shape[1] % 2:
        raise ValueError(f"{op}: expected input of shape (N, 2C, ...), an even number "
                         f"of channels (a = the first C, b = the last C), "
                         f"got {tuple(x.shape)}")


def _pairs_order(x):
    """x's memory order when it is C-order or channels-last, else None."""
    order = memory_order(x)
    c_order = tuple(range(x.ndim))
    channels_last = (0, *range(2, x.ndim), 1)
    return order if order in (c_order, channels_last) else None


def _empty_in_order(xp, shape, dtype, order):
    """An array of ``shape`` whose memory holds its axes in ``order``, and
    that memory as a C-contiguous array."""
    memory = xp.empty(tuple(shape[k] for k in order), dtype=dtype)
    inverse = tuple(sorted(range(len(order)), key=order.__getitem__))
    return memory.transpose(inverse), memory


def gated_forward(x):
    """y = tanh(x[:, :C]) * sigmoid(x[:, C:]) for x of shape (N, 2C, ...);
    y has shape (N, C, ...), x's dtype and x's memory layout."""
    _check_input("gated_forward", x)
    order = _pairs_order(x)
    if order is None or x.size == 0:
        return gated_forward_reference(x)
    x_memory = x.transpose(order)
    impl = choose(x_memory)                    # dense, C-order or channels-last?
    if impl == "reference":
        return gated_forward_reference(x)
    C = x.shape[1] // 2
    y_shape = (x.shape[0], C, *x.shape[2:])
    y, y_memory = _empty_in_order(get_xp(x), y_shape, x.dtype, order)
    pairs = _pairs(x_memory, order)
    rows = y_memory.reshape(pairs.shape[0], pairs.shape[2])
    one = scalar(1, x.dtype)
    if impl == "cpu":
        _gated_forward_cpu(pairs, rows, one)
    else:
        _gated_forward_cuda(pairs, rows, one)
    return y


def gated_backward(dy, x):
    """dx = [dy s (1 - t^2), dy s t (1 - s)], t = tanh(x[:, :C]),
    s = sigmoid(x[:, C:]); dx has x's shape, dtype and memory layout."""
    _check_input("gated_backward", x)
    C = x.shape[1] // 2
    check_float("gated_backward", "upstream gradient", dy, x.dtype)
    check_shape("gated_backward", "upstream gradient", dy, (x.shape[0], C, *x.shape[2:]))
    order = _pairs_order(x)
    if order is None or x.size == 0:
        return gated_backward_reference(dy, x)
    x_memory, dy_memory = x.transpose(order), dy.transpose(order)
    impl = choose(x_memory, dy_memory)         # dy laid out as x?
    if impl == "reference":
        return gated_backward_reference(dy, x)
    dx, dx_memory = _empty_in_order(get_xp(x), x.shape, x.dtype, order)
    pairs = _pairs(x_memory, order)
    dx_pairs = _pairs(dx_memory, order)
    rows = dy_memory.reshape(pairs.shape[0], pairs.shape[2])
    one = scalar(1, x.dtype)
    if impl == "cpu":
        _gated_backward_cpu(rows, pairs, dx_pairs, one)
    else:
        _gated_backward_cuda(rows, pairs, dx_pairs, one)
    return dx


def _pairs(memory, order):
    """The (P, 2, Q) view of a C-contiguous (N, 2C, ...) array held in ``order``:
    (N, 2, C*H*W) in C-order, (N*H*W, 2, C) channels-last."""
    if order[-1] == 1 and len(order) > 2:      # channels-last: (N, H, W, 2C) in memory
        return memory.reshape(-1, 2, memory.shape[-1] // 2)
    return memory.reshape(memory.shape[0], 2, -1)


# --------------------------------------------------------------------------
# CUDA kernels: a grid-stride loop over the P*Q pairs
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _cuda_kernels():
    global cuda  # a module global, so that the CUDA simulator can replace it
    from numba import cuda

    @cuda.jit
    def gated_forward_kernel(x, y, one):
        Q = x.shape[2]
        start = cuda.grid(1)
        step = cuda.gridsize(1)
        for i in range(start, x.shape[0] * Q, step):
            p = i // Q
            q = i - p * Q
            y[p, q] = _gate(x[p, 0, q], x[p, 1, q], one)

    @cuda.jit
    def gated_backward_kernel(dy, x, dx, one):
        Q = x.shape[2]
        start = cuda.grid(1)
        step = cuda.gridsize(1)
        for i in range(start, x.shape[0] * Q, step):
            p = i // Q
            q = i - p * Q
            da, db = _gate_grads(dy[p, q], x[p, 0, q], x[p, 1, q], one)
            dx[p, 0, q] = da
            dx[p, 1, q] = db

    return gated_forward_kernel, gated_backward_kernel


def _gated_forward_cuda(x, y, one):
    n = y.size
    if n:
        kernel = _cuda_kernels()[0]
        kernel[cuda_grid(n), CUDA_THREADS, cuda_stream(x)](x, y, one)


def _gated_backward_cuda(dy, x, dx, one):
    n = dy.size
    if n:
        kernel = _cuda_kernels()[1]
        kernel[cuda_grid(n), CUDA_THREADS, cuda_stream(x)](dy, x, dx, one)

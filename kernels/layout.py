"""Copies that change a 4-D array's memory layout, in parallel over its first axis.

The engine keeps images channels-last (scratchvae/ops/conv.py) while a
linear layer after Flatten reads them in PyTorch's (c, h, w) order, so a
conv VAE step transposes a few (N, C, H, W) arrays between the two layouts
(Flatten forward and backward, Reshape's backward, a transposed
convolution's input). ``np.ascontiguousarray`` makes such a copy on one
thread; these kernels make the same copy with one image per task.

Between the two layouts each image is one matrix transposed: a channels-last
image stored (H*W, C) becomes (C, H*W) in C order, and back. That copy
reads the stored image as a C-contiguous 3-D array (N, R, S) and writes
(N, S, R) in order (:func:`_transpose_cpu`): from channels-last to C order
on a conv VAE's (128, 64, 7, 7) arrays, half the time of the 4-D loop over
strides, whose inner loop there runs over the 7 columns of a channel
(benchmarks/RESULTS.md); the same time the other way. The images need not
follow one another (a block of columns of a wider matrix, as the conv CVAE's
Flatten gets its gradient back from the concatenation after it). Any other
strides take :func:`_copy_cpu`, which reads through them.

A copy can also carry a gradient back through a ReLU (``relu_output``):
dx = dy where the ReLU's output y > 0, else 0 (kernels/relu.py's rule), in
the same pass. Flatten and Reshape take a ReLU before them this way
(scratchvae/layers/dense.py, Sequential): the ReLU's backward needs no pass
of its own.

Dispatch (:mod:`kernels._dispatch`): the Numba CPU kernels for 4-D NumPy
float32/float64 arrays; CuPy's own copy for CuPy arrays;
``ascontiguous_reference`` (``xp.ascontiguousarray``) otherwise. All give
the same values: a copy moves numbers without arithmetic.
"""
import numpy as np
from numba import njit, prange

from ._arrays import check_same, get_xp
from ._dispatch import choose
from .relu import _relu_grad, relu_backward, relu_backward_reference


def ascontiguous_reference(a, relu_output=None):
    """``a`` as a C-contiguous array (itself when it already is), in plain xp; with
    ``relu_output`` y, a new array: a where y > 0, else 0."""
    out = get_xp(a).ascontiguousarray(a)
    return out if relu_output is None else relu_backward_reference(out, relu_output)


@njit(parallel=True, cache=True)
def _copy_cpu(src, dst, gate, gated):
    """dst (C-contiguous) = src (any strides), both of one 4-D shape; ``gated``:
    dst = src where gate (dst's shape, C-contiguous) > 0, else 0."""
    N, A, B, C = src.shape
    for n in prange(N):
        for i in range(A):
            for j in range(B):
                if gated:
                    for k in range(C):
                        dst[n, i, j, k] = _relu_grad(src[n, i, j, k], gate[n, i, j, k])
                else:
                    for k in range(C):
                        dst[n, i, j, k] = src[n, i, j, k]


@njit(parallel=True, cache=True)
def _transpose_cpu(src, dst, gate, gated):
    """dst[n, s, r] = src[n, r, s]: each of N (R, S) matrices transposed (each
    C-contiguous, at any distance from the next); ``gated``: dst = that where
    gate (dst's shape, C-contiguous) > 0, else 0."""
    N, R, S = src.shape
    for n in prange(N):
        if gated:
            for s in range(S):
                for r in range(R):
                    dst[n, s, r] = _relu_grad(src[n, r, s], gate[n, s, r])
        else:
            for s in range(S):
                for r in range(R):
                    dst[n, s, r] = src[n, r, s]


#: the storage orders whose images are transposed matrices: storage (N, d2, d3, d1)
#: (a channels-last image read as NCHW) and (N, d3, d1, d2) (the reverse)
_ROTATIONS = ((0, 2, 3, 1), (0, 3, 1, 2))


def _as_transposed_images(a):
    """(src, dst) for :func:`_transpose_cpu` when each image of ``a`` is stored
    C-contiguous in one of :data:`_ROTATIONS` (src (N, R, S) a view of the
    storage, dst a new (N, S, R) array: ``a``'s C-ordered copy, reshaped), else None."""
    if a.size == 0:
        return None
    N = a.shape[0]
    for order in _ROTATIONS:
        stored = a.transpose(order)
        if not stored[:1].flags.c_contiguous:     # one image: its own strides only
            continue
        _, e1, e2, e3 = stored.shape
        R, S = (e1, e2 * e3) if order[1] == 3 else (e1 * e2, e3)
        size = a.itemsize
        src = np.lib.stride_tricks.as_strided(stored, shape=(N, R, S),
                                              strides=(stored.strides[0], S * size, size))
        return src, np.empty((N, S, R), dtype=a.dtype)
    return None


def ascontiguous(a, relu_output=None):
    """``np.ascontiguousarray(a)``: ``a`` itself when C-contiguous, else a C-ordered copy.

    ``relu_output``: the output y of the ReLU that ``a`` (a gradient) goes back
    through, an array of ``a``'s shape and dtype: returns a new C-contiguous
    array, ``a`` where y > 0, else 0 (kernels.relu.relu_backward's values), in
    the copy's pass when y is C-contiguous.
    """
    gated = relu_output is not None
    if gated:
        check_same("ascontiguous", "array", a, "relu_output", relu_output)
    if a.flags.c_contiguous:
        return relu_backward(a, relu_output) if gated else a
    if a.ndim != 4 or choose(a, strided=True) != "cpu":    # "cuda": CuPy's copy
        out = ascontiguous_reference(a)
        return relu_backward(out, relu_output) if gated else out
    if gated and not relu_output.flags.c_contiguous:
        return relu_backward(ascontiguous(a), relu_output)
    images = _as_transposed_images(a)
    if images is not None:
        src, dst = images
        gate = relu_output.reshape(dst.shape) if gated else np.empty((0, 0, 0), a.dtype)
        _transpose_cpu(src, dst, gate, gated)
        return dst.reshape(a.shape)
    out = np.empty(a.shape, dtype=a.dtype)
    _copy_cpu(a, out, relu_output if gated else np.empty((0, 0, 0, 0), a.dtype), gated)
    return out

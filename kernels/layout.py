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
(benchmarks/RESULTS.md); the same time the other way. Any other strides take
:func:`_copy_cpu`, which reads through them.

Dispatch (:mod:`kernels._dispatch`): the Numba CPU kernels for 4-D NumPy
float32/float64 arrays; CuPy's own copy for CuPy arrays;
``ascontiguous_reference`` (``xp.ascontiguousarray``) otherwise. All give
the same values: a copy moves numbers without arithmetic.
"""
import numpy as np
from numba import njit, prange

from ._arrays import get_xp
from ._dispatch import choose


def ascontiguous_reference(a):
    """``a`` as a C-contiguous array (itself when it already is), in plain xp."""
    return get_xp(a).ascontiguousarray(a)


@njit(parallel=True, cache=True)
def _copy_cpu(src, dst):
    """dst (C-contiguous) = src (any strides), both of one 4-D shape."""
    N, A, B, C = src.shape
    for n in prange(N):
        for i in range(A):
            for j in range(B):
                for k in range(C):
                    dst[n, i, j, k] = src[n, i, j, k]


@njit(parallel=True, cache=True)
def _transpose_cpu(src, dst):
    """dst[n, s, r] = src[n, r, s]: each of N C-contiguous (R, S) matrices transposed."""
    N, R, S = src.shape
    for n in prange(N):
        for s in range(S):
            for r in range(R):
                dst[n, s, r] = src[n, r, s]


#: the storage orders whose images are transposed matrices: storage (N, d2, d3, d1)
#: (a channels-last image read as NCHW) and (N, d3, d1, d2) (the reverse)
_ROTATIONS = ((0, 2, 3, 1), (0, 3, 1, 2))


def _as_transposed_images(a):
    """(src, dst) for :func:`_transpose_cpu` when ``a``'s storage is C-contiguous in
    one of :data:`_ROTATIONS` (src a view of it, dst a new array shaped to be
    ``a``'s C-ordered copy), else None."""
    N, d1, d2, d3 = a.shape
    for order in _ROTATIONS:
        stored = a.transpose(order)
        if stored.flags.c_contiguous:
            R = stored.shape[1] if order[1] == 3 else stored.shape[1] * stored.shape[2]
            src = stored.reshape(N, R, -1)
            return src, np.empty((N, src.shape[2], R), dtype=a.dtype)
    return None


def ascontiguous(a):
    """``np.ascontiguousarray(a)``: ``a`` itself when C-contiguous, else a C-ordered copy."""
    if a.flags.c_contiguous:
        return a
    if a.ndim != 4 or choose(a, strided=True) != "cpu":    # "cuda": CuPy's copy
        return ascontiguous_reference(a)
    images = _as_transposed_images(a)
    if images is not None:
        src, dst = images
        _transpose_cpu(src, dst)
        return dst.reshape(a.shape)
    out = np.empty(a.shape, dtype=a.dtype)
    _copy_cpu(a, out)
    return out

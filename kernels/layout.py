"""Copies that change a 4-D array's memory layout, in parallel over its first axis.

The engine keeps images channels-last (scratchvae/ops/conv.py) while a
linear layer after Flatten reads them in PyTorch's (c, h, w) order, so a
conv VAE step transposes a few (N, C, H, W) arrays between the two layouts
(Flatten forward and backward, Reshape's backward, a transposed
convolution's input). ``np.ascontiguousarray`` makes such a copy on one
thread; this kernel makes the same copy with one image per task.

Dispatch (:mod:`kernels._dispatch`): a Numba CPU kernel for 4-D NumPy
float32/float64 arrays of any strides (it writes the new C-contiguous array
in order and reads the source through its strides); CuPy's own copy for
CuPy arrays; ``ascontiguous_reference`` (``xp.ascontiguousarray``) otherwise.
All three give the same values: a copy moves numbers without arithmetic.
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


def ascontiguous(a):
    """``np.ascontiguousarray(a)``: ``a`` itself when C-contiguous, else a C-ordered copy."""
    if a.flags.c_contiguous:
        return a
    if a.ndim != 4 or choose(a, strided=True) != "cpu":    # "cuda": CuPy's copy
        return ascontiguous_reference(a)
    out = np.empty(a.shape, dtype=a.dtype)
    _copy_cpu(a, out)
    return out

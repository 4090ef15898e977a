"""Nearest-code search of a vector quantiser: for each row z_m, the code k
minimising the squared distance to the codebook row e_k.

Shapes: z (M, D) vectors, codebook (K, D). Returns ``(indices, sqdist)``:
indices int64 (M,), sqdist float64 (M,), the minimum squared distance.

Math. The squared distance is expanded as

    ||z - e_k||^2 = ||z||^2 - 2 z.e_k + ||e_k||^2,

so that the CPU search reads each z once (the CUDA kernel re-reads its
row of z, from cache, for every code) and each code's norm ||e_k||^2 is
computed once per call (K numbers), not once per (m, k) pair. The argmin
is taken on the fly, in the same pass that forms the distances: the CPU
kernel holds one row of K dot products per thread, never the (M, K)
distance matrix of the batch. Ties go to the lowest index (a strict ``<``
while scanning k upwards, the rule of ``argmin``).

Precision and identical tie-breaking (chosen). Everything is evaluated in
float64 in a fixed order, the same in all three implementations:

    zz    = (((z_0 z_0) + z_1 z_1) + z_2 z_2) + ...        (d = 0, 1, ..., D-1)
    dot_k = (((z_0 e_k0) + z_1 e_k1) + z_2 e_k2) + ...
    ee_k  = (((e_k0 e_k0) + e_k1 e_k1) + ...)              (:func:`code_sq_norms`)
    dist  = (zz - 2 dot_k) + ee_k                          (:func:`squared_distance`)

Each step is one IEEE float64 operation (Numba does not reassociate or fuse
them without ``fastmath``), so the CPU kernel, the CUDA simulator and the
xp reference produce *bit-identical* distances, hence identical indices,
including on exact and near ties. (On a real GPU, NVVM may fuse a multiply
and an add into an FMA; distances can then differ in the last float64 bit
and a near-tie closer than that may resolve differently. Exact ties, e.g.
duplicated codes, still go to the lowest index.)

The expansion suffers cancellation when z is far from the origin compared
with its distance to the code: float64 keeps ~16 digits, far more than the
float32 inputs carry. ``sqdist`` is that expanded value (it can be a tiny
negative number for z equal to a code); the VQ losses recompute
||z - e_k||^2 directly from the difference.
"""
import functools
import math

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from ._arrays import check_float, check_shape, get_xp
from ._dispatch import CUDA_THREADS, choose, cuda_grid, cuda_stream

#: rows handled by one task of the CPU kernel (each task owns one (K,) buffer)
ROW_CHUNK = 64


def _check(op, z, codebook):
    check_shape(op, "codebook", codebook, (None, None))
    check_float(op, "codebook", codebook)
    K, D = codebook.shape
    if K < 1:
        raise ValueError(f"{op}: expected a codebook with at least one code, got shape "
                         f"{tuple(codebook.shape)}")
    check_shape(op, "vectors", z, (None, D))
    check_float(op, "vectors", z, codebook.dtype)


@register_jitable
def squared_distance(zz, dot, ee):
    """||z - e||^2 = (||z||^2 - 2 z.e) + ||e||^2, from its three parts, in this
    order; for numbers in the kernels, for arrays (broadcast) in the reference."""
    return (zz - 2.0 * dot) + ee


def code_sq_norms(codebook):
    """||e_k||^2 for every code, float64 (K,), summed over d in increasing order.

    Shared by all implementations so that they add the same numbers in the
    same order (a K x D loop: negligible next to the search).
    """
    xp = get_xp(codebook)
    e = codebook.astype(xp.float64)
    ee = xp.zeros(e.shape[0], dtype=xp.float64)
    for d in range(e.shape[1]):
        ee += e[:, d] * e[:, d]
    return ee


# --------------------------------------------------------------------------
# reference (plain xp)
# --------------------------------------------------------------------------

def nearest_code_reference(z, codebook):
    """``(indices, sqdist)`` in plain xp: the full (M, K) distance matrix, then argmin.

    Obviously right, and allocates M x K float64 values; the kernels do not.
    """
    _check("nearest_code", z, codebook)
    xp = get_xp(z)
    z64, e64 = z.astype(xp.float64), codebook.astype(xp.float64)
    M, D = z64.shape
    zz = xp.zeros(M, dtype=xp.float64)
    dot = xp.zeros((M, e64.shape[0]), dtype=xp.float64)
    for d in range(D):                                  # the kernels' summation order
        zz += z64[:, d] * z64[:, d]
        dot += z64[:, d, None] * e64[None, :, d]
    dist = squared_distance(zz[:, None], dot, code_sq_norms(codebook)[None, :])
    if M == 0:
        return xp.zeros(0, dtype=xp.int64), xp.zeros(0, dtype=xp.float64)
    indices = xp.argmin(dist, axis=1).astype(xp.int64)  # first minimum: lowest index
    return indices, dist[xp.arange(M), indices]


# --------------------------------------------------------------------------
# Numba CPU kernel: tasks of ROW_CHUNK rows, one (K,) dot-product buffer each
# --------------------------------------------------------------------------

@njit(parallel=True, fastmath=False, cache=True)
def _nearest_cpu(z, eT, ee, indices, sqdist):
    """indices[m], sqdist[m] for every row m (chunks of rows in parallel).

    eT is the codebook transposed, float64 (D, K): the innermost loop runs
    over k with unit stride and independent accumulators dot[k], which the
    compiler vectorises without changing any summation order.
    """
    M, D = z.shape
    K = eT.shape[1]
    n_chunks = (M + ROW_CHUNK - 1) // ROW_CHUNK
    for c in prange(n_chunks):
        dot = np.empty(K, dtype=np.float64)
        for m in range(c * ROW_CHUNK, min(M, (c + 1) * ROW_CHUNK)):
            zz = 0.0
            for k in range(K):
                dot[k] = 0.0
            for d in range(D):
                zd = np.float64(z[m, d])
                zz += zd * zd
                for k in range(K):
                    dot[k] += zd * eT[d, k]
            best = np.inf
            best_k = 0
            for k in range(K):
                dist = squared_distance(zz, dot[k], ee[k])
                if dist < best:                      # strict: ties keep the lower k
                    best = dist
                    best_k = k
            indices[m] = best_k
            sqdist[m] = best


# --------------------------------------------------------------------------
# public function
# --------------------------------------------------------------------------

def nearest_code(z, codebook):
    """Nearest code of every row of z: ``(indices int64 (M,), sqdist float64 (M,))``.

    z (M, D) and codebook (K, D) of one float dtype. Dispatch as for every
    kernel (:mod:`kernels._dispatch`); all paths give the same indices.
    """
    _check("nearest_code", z, codebook)
    impl = choose(z, codebook)
    if impl == "reference":
        return nearest_code_reference(z, codebook)
    xp = get_xp(z)
    M = z.shape[0]
    eT = xp.ascontiguousarray(codebook.astype(xp.float64).T)    # (D, K), small
    ee = code_sq_norms(codebook)
    indices = xp.empty(M, dtype=xp.int64)
    sqdist = xp.empty(M, dtype=xp.float64)
    if M:
        if impl == "cpu":
            _nearest_cpu(z, eT, ee, indices, sqdist)
        else:
            _nearest_cuda(z, eT, ee, indices, sqdist)
    return indices, sqdist


# --------------------------------------------------------------------------
# CUDA kernel: one thread per row (grid-stride), codes scanned in order
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _cuda_kernel():
    # ``cuda`` is bound as a module global: the CUDA simulator
    # (NUMBA_ENABLE_CUDASIM=1, used by the tests) swaps the global it sees.
    global cuda
    from numba import cuda
    from numba import float64

    @cuda.jit
    def nearest_kernel(z, eT, ee, indices, sqdist):
        """Thread m: zz, then for k = 0..K-1 the dot product over d and the
        running minimum, held in registers; z's row (once per code) and
        eT (D x K, a few KB) are read from global memory, served by the
        cache."""
        M, D = z.shape
        K = eT.shape[1]
        for m in range(cuda.grid(1), M, cuda.gridsize(1)):
            zz = 0.0
            for d in range(D):
                zd = float64(z[m, d])   # not float(): numba-cuda's keeps float32
                zz += zd * zd
            best = math.inf
            best_k = 0
            for k in range(K):
                dot = 0.0
                for d in range(D):
                    dot += float64(z[m, d]) * eT[d, k]
                dist = squared_distance(zz, dot, ee[k])
                if dist < best:                      # strict: ties keep the lower k
                    best = dist
                    best_k = k
            indices[m] = best_k
            sqdist[m] = best

    return nearest_kernel


def _nearest_cuda(z, eT, ee, indices, sqdist):
    """Launch on device arrays (CuPy, or NumPy under cudasim); M >= 1."""
    kernel = _cuda_kernel()
    kernel[cuda_grid(z.shape[0]), CUDA_THREADS, cuda_stream(z)](z, eT, ee, indices, sqdist)


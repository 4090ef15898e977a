"""Nearest-code search of a vector quantiser: for each row z_m, the code k
minimising the squared distance to the codebook row e_k.

Shapes: z (M, D) vectors, codebook (K, D). Returns ``(indices, sqdist)``:
indices int64 (M,), sqdist float64 (M,), the minimum squared distance.

Math. The squared distance is expanded as

    ||z - e_k||^2 = ||z||^2 - 2 z.e_k + ||e_k||^2,

so that the CPU search reads each z once (the CUDA kernel re-reads its
row of z, from cache, for every code) and each code's norm ||e_k||^2 is
computed once per call (K numbers), not once per (m, k) pair. The argmin
is taken row by row as the distances are formed: the CPU kernel holds one
row of K distances per thread, never the (M, K) distance matrix of the
batch. Ties go to the lowest index (the result of a strict ``<`` while
scanning k upwards, the rule of ``argmin``).

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
# Numba CPU kernel: tasks of ROW_CHUNK rows, one (K,) distance buffer each
# --------------------------------------------------------------------------

@njit(inline="always")
def _dot_products(z, m, eT, dot):
    """dot[k] = z_m . e_k for every k, each summed over d = 0, 1, ... in order.

    The innermost loop runs over k with unit stride (vectorised, independent
    accumulators); d is taken four at a time, the four products added in
    turn, ((((dot + p0) + p1) + p2) + p3): the same sum, in the same order,
    stored once per four terms instead of once per term (one d at a time,
    the stores of dot[] bound the loop).
    """
    D, K = eT.shape
    for k in range(K):
        dot[k] = 0.0
    D4 = D - D % 4
    for d in range(0, D4, 4):
        z0, z1 = np.float64(z[m, d]), np.float64(z[m, d + 1])
        z2, z3 = np.float64(z[m, d + 2]), np.float64(z[m, d + 3])
        e0, e1, e2, e3 = eT[d], eT[d + 1], eT[d + 2], eT[d + 3]
        for k in range(K):
            dot[k] = (((dot[k] + z0 * e0[k]) + z1 * e1[k]) + z2 * e2[k]) + z3 * e3[k]
    for d in range(D4, D):
        zd = np.float64(z[m, d])
        ed = eT[d]
        for k in range(K):
            dot[k] += zd * ed[k]


@njit(inline="always")
def _first_minimum(dist):
    """(k, dist[k]) for the lowest k holding the minimum (NaNs never win; all
    NaN: (0, inf)), as a scan of k upwards with a strict ``<`` finds it.

    Four running minima over k = 0, 1, 2, 3 (mod 4), each a strict-``<``
    scan of its own k's (independent chains: one compare-and-select chain
    would wait on itself at every k); then the smallest of the four values,
    on equal values the lowest index: the first minimum of the whole scan.
    """
    K = dist.shape[0]
    b0 = b1 = b2 = b3 = np.inf
    k0 = k1 = k2 = k3 = 0
    K4 = K - K % 4
    for k in range(0, K4, 4):
        if dist[k] < b0:
            b0, k0 = dist[k], k
        if dist[k + 1] < b1:
            b1, k1 = dist[k + 1], k + 1
        if dist[k + 2] < b2:
            b2, k2 = dist[k + 2], k + 2
        if dist[k + 3] < b3:
            b3, k3 = dist[k + 3], k + 3
    for k in range(K4, K):           # the last K mod 4 codes join the first scan
        if dist[k] < b0:
            b0, k0 = dist[k], k
    best, best_k = b0, k0
    if b1 < best or (b1 == best and k1 < best_k):
        best, best_k = b1, k1
    if b2 < best or (b2 == best and k2 < best_k):
        best, best_k = b2, k2
    if b3 < best or (b3 == best and k3 < best_k):
        best, best_k = b3, k3
    return best_k, best


@njit(parallel=True, fastmath=False, cache=True)
def _nearest_cpu(z, eT, ee, indices, sqdist):
    """indices[m], sqdist[m] for every row m (chunks of rows in parallel).

    eT is the codebook transposed, float64 (D, K): the dot products of a row
    with every code are formed together (:func:`_dot_products`), turned
    into distances in place, and their first minimum taken
    (:func:`_first_minimum`).
    """
    M, D = z.shape
    K = eT.shape[1]
    n_chunks = (M + ROW_CHUNK - 1) // ROW_CHUNK
    for c in prange(n_chunks):
        dist = np.empty(K, dtype=np.float64)
        for m in range(c * ROW_CHUNK, min(M, (c + 1) * ROW_CHUNK)):
            zz = 0.0
            for d in range(D):
                zd = np.float64(z[m, d])
                zz += zd * zd
            _dot_products(z, m, eT, dist)
            for k in range(K):
                dist[k] = squared_distance(zz, dist[k], ee[k])
            indices[m], sqdist[m] = _first_minimum(dist)


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


"""Per-code sums and counts of a vector quantiser's assignments, and the
dead-code restart drawn from the counter-based generator.

Shapes: ``indices`` (M,) int64 codes in [0, K), ``values`` (M, D) floats,
``codebook`` (K, D).

- ``segment_sum(indices, values, K)``: s[k] = sum_{m: indices[m] = k} values[m],
  accumulated in float64 in the order m = 0, 1, ..., M - 1 and returned in
  values' dtype; ``code_counts(indices, K)``: n[k] = #{m: indices[m] = k}.
  Reference: ``bincount`` (NumPy's sums its weights in float64 in that same
  order, so the kernels' sums are the same bits). The CPU kernel makes one
  pass over the rows (the reference calls ``bincount`` once per column, each
  on a strided copy of it: 0.20 ms against 0.03 for a VQ-VAE batch, 6,272
  rows of 16). The CUDA kernels exist because CuPy's ``bincount`` reads
  max(indices) back to the host to size its output, which a captured CUDA
  graph cannot do: thread (k, d) scans all M rows, summing those of code k
  (no atomics, so the order, and with it the result, is fixed).
- ``restart_dead_codes(codebook, unused_steps, rows, counts, restart_after,
  seed, stream, counter)``: first ``unused_steps[k] = 0`` if counts[k] > 0
  else ``unused_steps[k] + 1``; then the codes with ``unused_steps >=
  restart_after``, in increasing k (at most M of them), take distinct rows
  of ``rows``, chosen by a partial Fisher-Yates shuffle of 0..M-1 whose r-th
  swap draws the uniform u_r of element r of the counter-based generator
  (kernels/counter_rng.py) keyed (seed, stream, counter[0]):
  j = r + min(floor(u_r (M - r)), M - r - 1), swap perm[r] and perm[j],
  code -> row perm[r]; their ``unused_steps`` go back to 0. The same picks
  on the host and on the device, no host value read: a captured training
  step can restart codes (the host path of the VQ-VAE draws its rows with
  NumPy's ``Generator.choice`` instead). The CUDA kernel is one block: its
  threads update the counters, thread 0 shuffles (min(K, M) swaps at most), then
  its threads copy the picked rows.
"""
import functools

import numpy as np
from numba import njit

from ._arrays import get_xp, is_cupy
from ._dispatch import (CUDA_THREADS, choose, cuda_grid, cuda_kernels_available, cuda_stream,
                        forced_reference)
from .counter_rng import _MASK, splitmix64, stream_key


def _on_cuda(a):
    """Whether the CUDA kernels run for the CuPy array ``a`` (kernels._dispatch's rule)."""
    return is_cupy(a) and not forced_reference() and cuda_kernels_available()


def segment_sum(indices, values, num_codes):
    """s[k] = sum of the rows values[m] with indices[m] == k; (M,), (M, D) -> (K, D)."""
    xp = get_xp(values)
    idx = indices.reshape(-1)
    out = xp.empty((num_codes, values.shape[1]), dtype=values.dtype)
    impl = choose(values)
    if impl == "cuda" and _on_cuda(idx):
        if out.size:
            _segment_sum_cuda(idx, xp.ascontiguousarray(values), out)
        return out
    if impl == "cpu" and not is_cupy(idx):
        sums = np.zeros(out.shape, dtype=np.float64)
        bad = _segment_sum_cpu(idx, values, sums)
        if bad >= 0:
            raise ValueError(f"segment_sum: expected indices in [0, {num_codes}), got "
                             f"{int(idx[bad])} at position {bad}")
        out[...] = sums
        return out
    for d in range(values.shape[1]):
        out[:, d] = xp.bincount(idx, weights=values[:, d], minlength=num_codes)
    return out


@njit(cache=True)
def _segment_sum_cpu(idx, values, sums):
    """sums[idx[m]] += values[m] in float64, m = 0, 1, ...: bincount's order. Returns
    the first m whose index is outside [0, K), or -1 (nothing added from it on)."""
    K, D = sums.shape
    for m in range(idx.shape[0]):
        k = idx[m]
        if k < 0 or k >= K:
            return m
        for d in range(D):
            sums[k, d] += values[m, d]
    return -1


def code_counts(indices, num_codes):
    """n[k] = number of entries of ``indices`` equal to k, int64 (K,)."""
    idx = indices.reshape(-1)
    xp = get_xp(idx)
    if not _on_cuda(idx):
        return xp.bincount(idx, minlength=num_codes)
    out = xp.empty(num_codes, dtype=xp.int64)
    if num_codes:
        _counts_cuda(idx, out)
    return out


def fisher_yates_picks(n, m, seed, stream, counter):
    """The rows (n,) int64 that n dead codes take from m rows (module docstring)."""
    key = splitmix64((stream_key(seed, stream) + int(counter)) & _MASK)
    perm = np.arange(m, dtype=np.int64)
    for r in range(n):
        u = float(splitmix64((key + 2 * r + 1) & _MASK) >> 11) * 2.0 ** -53
        j = r + min(int(u * (m - r)), m - r - 1)
        perm[r], perm[j] = perm[j], perm[r]
    return perm[:n].copy()


def restart_dead_codes_reference(codebook, unused_steps, rows, counts, restart_after, seed,
                                 stream, counter):
    """The restart of the module docstring on NumPy arrays, in place (``counter`` an int)."""
    unused_steps[...] = np.where(counts > 0, 0, unused_steps + 1)
    dead = np.flatnonzero(unused_steps >= restart_after)[:rows.shape[0]]
    picks = fisher_yates_picks(dead.size, rows.shape[0], seed, stream, counter)
    codebook[dead] = rows[picks]
    unused_steps[dead] = 0


def restart_dead_codes(codebook, unused_steps, rows, counts, restart_after, seed, stream,
                       counter):
    """Restart the dead codes of ``codebook`` in place (module docstring);
    ``counter``: a one-element int64 array on the arrays' device."""
    if not _on_cuda(codebook):
        xp = get_xp(codebook)
        if xp is np:
            restart_dead_codes_reference(codebook, unused_steps, rows, counts, restart_after,
                                         seed, stream, int(counter[0]))
            return
        c, u = codebook.get(), unused_steps.get()   # CuPy without Numba's CUDA: on the host
        restart_dead_codes_reference(c, u, rows.get(), counts.get(), restart_after, seed,
                                     stream, int(counter.get()[0]))
        codebook[...], unused_steps[...] = xp.asarray(c), xp.asarray(u)
        return
    xp = get_xp(codebook)
    _restart_cuda(codebook, unused_steps, xp.ascontiguousarray(rows), counts,
                  int(restart_after), np.uint64(stream_key(seed, stream)), counter,
                  xp.empty(rows.shape[0], dtype=xp.int64),
                  xp.empty(codebook.shape[0], dtype=xp.int64))


@functools.lru_cache(maxsize=None)
def _cuda_kernels():
    # numba.cuda as a module global: see kernels/adam.py
    global cuda
    from numba import cuda, float64, uint64

    from .counter_rng import _cuda_mix

    mix = _cuda_mix()
    s11, one, two = uint64(11), uint64(1), uint64(2)

    @cuda.jit
    def segment_sum_kernel(idx, values, out):
        K, D = out.shape
        for i in range(cuda.grid(1), K * D, cuda.gridsize(1)):
            k, d = i // D, i % D
            total = 0.0
            for m in range(idx.shape[0]):
                if idx[m] == k:
                    total += float64(values[m, d])
            out[k, d] = total

    @cuda.jit
    def counts_kernel(idx, out):
        for k in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            n = 0
            for m in range(idx.shape[0]):
                if idx[m] == k:
                    n += 1
            out[k] = n

    @cuda.jit
    def restart_kernel(codebook, unused, rows, counts, restart_after, key0, counter, perm,
                       picks):
        t, T = cuda.threadIdx.x, cuda.blockDim.x
        K, D = codebook.shape
        M = rows.shape[0]
        for k in range(t, K, T):
            unused[k] = 0 if counts[k] > 0 else unused[k] + 1
            picks[k] = -1
        for m in range(t, M, T):
            perm[m] = m
        cuda.syncthreads()
        if t == 0:
            key = mix(key0 + uint64(counter[0]))
            r = 0
            for k in range(K):
                if unused[k] >= restart_after and r < M:
                    u = float64(mix(key + two * uint64(r) + one) >> s11) * 2.0 ** -53
                    j = r + min(int(u * (M - r)), M - r - 1)
                    held = perm[r]
                    perm[r] = perm[j]
                    perm[j] = held
                    picks[k] = perm[r]
                    r += 1
        cuda.syncthreads()
        for i in range(t, K * D, T):
            k, d = i // D, i % D
            if picks[k] >= 0:
                codebook[k, d] = rows[picks[k], d]
        for k in range(t, K, T):
            if picks[k] >= 0:
                unused[k] = 0

    return segment_sum_kernel, counts_kernel, restart_kernel


# launchers: device arrays (CuPy, or NumPy under the simulator)

def _segment_sum_cuda(idx, values, out):
    kernel = _cuda_kernels()[0]
    kernel[cuda_grid(out.size), CUDA_THREADS, cuda_stream(values)](idx, values, out)


def _counts_cuda(idx, out):
    kernel = _cuda_kernels()[1]
    kernel[cuda_grid(out.size), CUDA_THREADS, cuda_stream(idx)](idx, out)


def _restart_cuda(codebook, unused, rows, counts, restart_after, key, counter, perm, picks):
    """One block: the shuffle is sequential, the updates and copies are the threads'."""
    kernel = _cuda_kernels()[2]
    kernel[1, CUDA_THREADS, cuda_stream(codebook)](codebook, unused, rows, counts,
                                                   restart_after, key, counter, perm, picks)

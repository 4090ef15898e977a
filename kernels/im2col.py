"""im2col and col2im on channels-last images: the data movement behind convolutions.

(A long file, on purpose: im2col and its adjoint col2im, in each of their
implementations and CPU strategies, are kept side by side, each loop next to
its adjoint and its reference.)

Images here are channels-last, x of shape (N, H, W, C) (the memory order
PyTorch calls ``channels_last``; the conv ops keep the usual NCHW *shapes*
and pass ``x.transpose(0, 2, 3, 1)`` down, which is free for a
channels-last array). A 2-D convolution with kernel (KH, KW), stride
(SH, SW) and zero padding (PH, PW) reads, for output pixel (oh, ow), the
window x[n, oh*SH + i - PH, ow*SW + j - PW, c], 0 <= i < KH, 0 <= j < KW
(out-of-range positions read as 0). ``im2col`` copies those windows into a
matrix, one row per output pixel, so that the convolution becomes a single
matrix product:

    cols[(n, oh, ow), (i, j, c)] = x[n, oh*SH + i - PH, ow*SW + j - PW, c]

    cols has shape (N*OH*OW, KH*KW*C),
    OH = (H + 2 PH - KH) // SH + 1,   OW = (W + 2 PW - KW) // SW + 1.

Why this layout (rows = output pixels (n, oh, ow), columns = (i, j, c)):

- within a window row i, the entries (j, c) for consecutive j are
  *contiguous* in a channels-last image: im2col copies runs of KW*C
  values (128 floats for a 4-wide kernel over 32 channels) instead of
  gathering single pixels with a stride, which is what makes it cheap (the
  NCHW layout (C*KH*KW, N*OH*OW) copies runs of only OW values, strided
  by SW: on the conv-VAE shapes its im2col is about 3x and its col2im
  about 4x slower);
- ``cols @ Wm.T`` is one large GEMM (N*OH*OW rows) whose result, of shape
  (N*OH*OW, O), *is* the channels-last output: no transpose afterwards;
- every gradient is again one GEMM on the same two operands
  (dW = dY^T cols, dcols = dY Wm), BLAS handling the transposes.

``col2im`` is the adjoint (transpose) of ``im2col``: it sums every column
entry back onto the pixel it was read from,

    x[n, h, w, c] = sum over (oh, ow, i, j) with oh*SH + i - PH = h and
                    ow*SW + j - PW = w  of  cols[(n, oh, ow), (i, j, c)].

It is written as a *gather*: the output pixel, or the output image row
that one task owns, collects its own contributions; no two tasks write the
same element, so there are no atomics and the result is deterministic. The
contributions to each pixel are added in increasing (i, j) order starting
from 0, exactly the order of the reference's loop over kernel offsets, so
kernels and reference agree bit for bit.

Three implementations each (:mod:`kernels._dispatch`): Numba CPU
kernels, a Numba CUDA kernel for CuPy arrays, and a plain ``xp`` reference
looping over the KH*KW kernel offsets. The CUDA kernels run on a 3-D grid (a
column or channel along x, a row along y, an image along z), each thread
walking one row of its image, so no index is divided per element: 64-bit
integer division costs tens of instructions on a GPU, more than the copy. Each
thread also keeps several loads in flight (four entries of im2col, two
contributions of col2im, loaded before they are stored or added): one load at a
time would leave the copy bound by the memory's latency. The
CPU and the CUDA kernels walk the windows differently (whole runs per image
row; one column entry per thread and row) and share the geometry,
:func:`conv_output_size`, compiled into both. The CPU loops are written for a range of images (the
``*_block`` functions); the parallel kernels here give each task one image,
and kernels/conv_gemm.py runs them a few images at a time inside each
thread, fused with the matrix products, which is how the engine's
convolutions use them on the CPU. There are two strategies, chosen by the
number of channels:

- C > 3 (hidden layers): im2col copies whole runs of KW*C contiguous
  values; col2im adds each pixel's C channels as one vector (C >= 16) or
  in one strided loop per channel (C < 16);
- C <= 3 (grey or colour images: a network's input and output layers): the
  runs are only KW*C values long, and the loops around them cost more than
  the copies. Instead, one image's windows are described once by an index
  table, as the geometry alone fixes them: for im2col, the source offset of
  every entry of the image's column block (-1 for padding); for col2im, for
  every image element, the list of column-block entries that add onto it,
  in increasing (i, j) order. The kernels then run one long loop over the
  table per image. For these layers the tables make im2col and col2im
  about twice as fast as the runs (benchmarks/RESULTS.md, the conv VAE's
  first and last layers); from C = 4 on the runs are as fast or faster.

col2im's blocks start each pixel from a given vector of C values instead of
0 when asked (``init``): the fused transposed convolution adds its bias so.
"""
import functools

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from ._arrays import get_xp
from ._dispatch import CUDA_THREADS, choose, cuda_stream, scalar


@register_jitable
def conv_output_size(size, kernel, stride, padding):
    """Output length of a convolution along one axis: (size + 2p - k) // s + 1.

    One function for Python, the CPU kernels and the CUDA kernels."""
    return (size + 2 * padding - kernel) // stride + 1


def _geometry(name, x_shape, kernel_size, stride, padding):
    """Validate the (N, H, W, C) image shape and hyper-parameters; return (OH, OW)."""
    if len(x_shape) != 4:
        raise ValueError(f"{name}: expected a 4-D (N, H, W, C) image shape, "
                         f"got {tuple(x_shape)}")
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"{name}: expected kernel_size >= 1, stride >= 1, padding >= 0, "
                         f"got kernel_size={kernel_size}, stride={stride}, padding={padding}")
    H, W = x_shape[1], x_shape[2]
    OH = conv_output_size(H, kh, sh, ph)
    OW = conv_output_size(W, kw, sw, pw)
    if OH < 1 or OW < 1:
        raise ValueError(f"{name}: expected a positive output size, got ({OH}, {OW}) from "
                         f"input ({H}, {W}), kernel_size={kernel_size}, stride={stride}, "
                         f"padding={padding}")
    return OH, OW


def _check_cols(name, cols, shape):
    if tuple(cols.shape) != tuple(shape):
        raise ValueError(f"{name}: expected columns of shape {tuple(shape)}, "
                         f"got {tuple(cols.shape)}")


# --------------------------------------------------------------------------
# references (plain xp: NumPy or CuPy)
# --------------------------------------------------------------------------

def im2col_reference(x, kernel_size, stride, padding):
    """im2col by slicing a zero-padded copy once per kernel offset (i, j)."""
    xp = get_xp(x)
    N, H, W, C = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    OH, OW = _geometry("im2col", x.shape, kernel_size, stride, padding)
    xpad = xp.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype=x.dtype)
    xpad[:, ph:ph + H, pw:pw + W] = x
    cols = xp.empty((N, OH, OW, kh, kw, C), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j] = xpad[:, i:i + sh * (OH - 1) + 1:sh,
                                       j:j + sw * (OW - 1) + 1:sw]
    return cols.reshape(N * OH * OW, kh * kw * C)


def col2im_reference(cols, x_shape, kernel_size, stride, padding):
    """col2im by adding each kernel offset's slab into a zero-padded image."""
    xp = get_xp(cols)
    N, H, W, C = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    OH, OW = _geometry("col2im", x_shape, kernel_size, stride, padding)
    _check_cols("col2im", cols, (N * OH * OW, kh * kw * C))
    cols6 = cols.reshape(N, OH, OW, kh, kw, C)
    xpad = xp.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xpad[:, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw] += cols6[:, :, :, i, j]
    return xp.ascontiguousarray(xpad[:, ph:ph + H, pw:pw + W])


# --------------------------------------------------------------------------
# Numba CPU kernels: serial loops over a range of images ("blocks"), which the
# parallel kernels below run one image per task, and which kernels/conv_gemm.py
# runs per thread on a few images at a time, fused with the matrix product
# --------------------------------------------------------------------------

@njit(inline="always")
def _valid_range(k, stride, pad, size, out_size):
    """Output positions o in [lo, hi) whose input o*stride + k - pad is in [0, size)."""
    lo = 0                                   # smallest o with o*stride + k - pad >= 0
    if pad - k > 0:
        lo = (pad - k + stride - 1) // stride
    hi = 0                                   # smallest o with o*stride + k - pad >= size
    if size + pad - k > 0:
        hi = (size + pad - k + stride - 1) // stride
    return min(lo, out_size), min(hi, out_size)


@register_jitable
def kernel_offsets(p, stride, kernel):
    """(start, stop) of the kernel offsets k = start, start + stride, ... < stop
    through which an output position o = (p - k) / stride >= 0 reads the
    padded input position p: start = p mod stride, stop = min(kernel, p + 1).
    col2im's CPU and CUDA kernels both gather a pixel's contributions so
    (the minimum is spelled out: Numba's CUDA target does not compile min)."""
    return p % stride, (p + 1 if p + 1 < kernel else kernel)


#: col2im adds a pixel's C channels as one vector when C is at least this;
#: for fewer channels it runs one strided loop over the pixels per channel
_FEW_CHANNELS = 16


@njit(cache=True)
def im2col_block(x, n0, n1, cols, kh, kw, sh, sw, ph, pw):
    """The column rows of images n0..n1-1 of x (N, H, W, C), written to cols
    ((n1-n0)*OH*OW, KH*KW*C): exactly those images' rows; both C-contiguous.

    For each output pixel and kernel row i, the KW*C values
    x[n, h, w0:w0+KW, :] are one contiguous run of the input (w0 = ow*SW - PW),
    copied by one zero-based loop over slice views (which LLVM vectorises).
    Windows entirely inside the image take a branch-free path; for the others
    the part outside is written as 0.
    """
    N, H, W, C = x.shape
    OH = conv_output_size(H, kh, sh, ph)
    OW = conv_output_size(W, kw, sw, pw)
    xf = x.reshape(N, H, W * C)              # image rows, flat
    run = kw * C                             # one kernel row of one window
    for n in range(n0, n1):
        for oh in range(OH):
            row = (n - n0) * OH + oh
            h0 = oh * sh - ph
            ilo = max(0, -h0)                # kernel rows inside the image: [ilo, ihi)
            ihi = min(kh, H - h0)
            for ow in range(OW):
                out = cols[row * OW + ow]    # the window of output pixel (n, oh, ow)
                w0 = ow * sw - pw
                a = max(0, -w0) * C          # the part of a run inside the image: [a, e)
                e = min(kw, W - w0) * C
                if ilo == 0 and ihi == kh and a == 0 and e == run:
                    for i in range(kh):      # interior window
                        dst = out[i * run:(i + 1) * run]
                        src = xf[n, h0 + i, w0 * C:w0 * C + run]
                        for t in range(run):
                            dst[t] = src[t]
                    continue
                for i in range(kh):          # a window overlapping the border
                    dst = out[i * run:(i + 1) * run]
                    if i < ilo or i >= ihi or a >= e:
                        for t in range(run):
                            dst[t] = 0
                        continue
                    for t in range(a):
                        dst[t] = 0
                    part = dst[a:e]
                    src = xf[n, h0 + i, w0 * C + a:w0 * C + e]
                    for t in range(e - a):
                        part[t] = src[t]
                    for t in range(e, run):
                        dst[t] = 0


@njit(cache=True)
def col2im_block(cols, n0, n1, x, kh, kw, sh, sw, ph, pw, init):
    """Images n0..n1-1 of x (N, H, W, C) from cols ((n1-n0)*OH*OW, KH*KW*C),
    exactly those images' column rows; a gather.

    Each image row x[n, h] is filled with ``init`` (C values: zeros, or a
    bias), then for each kernel row i that reaches h (i = (h+PH) mod SH,
    + SH, ..., with oh = (h+PH-i)/SH in [0, OH)) and each kernel column j
    the in-range pixels of cols[(n, oh, :), (i, j, :)] are added onto it.
    Each pixel is so a sum over its own (i, j) in increasing order.
    """
    N, H, W, C = x.shape
    OH = conv_output_size(H, kh, sh, ph)
    OW = conv_output_size(W, kw, sw, pw)
    xf = x.reshape(N * H, W * C)             # image rows, flat
    run = kw * C
    for n in range(n0, n1):
        for h in range(H):
            out = xf[n * H + h]
            for w in range(W):
                for c in range(C):
                    out[w * C + c] = init[c]
            hp = h + ph
            i0, i1 = kernel_offsets(hp, sh, kh)
            for i in range(i0, i1, sh):
                oh = (hp - i) // sh
                if oh >= OH:
                    continue
                base = ((n - n0) * OH + oh) * OW
                slab = cols[base:base + OW]      # output row (n, oh): (OW, KH*KW*C)
                for j in range(kw):
                    ow_lo, ow_hi = _valid_range(j, sw, pw, W, OW)
                    if ow_lo >= ow_hi:
                        continue
                    s0 = i * run + j * C
                    d0 = (ow_lo * sw + j - pw) * C   # first pixel reached, flat
                    if C < _FEW_CHANNELS:            # strided loops over ow, one per channel
                        step = sw * C
                        for c in range(C):
                            dst = out[d0 + c:]
                            src = slab[ow_lo:ow_hi, s0 + c]
                            for t in range(ow_hi - ow_lo):
                                dst[t * step] += src[t]
                    else:                            # many channels: a vector add per pixel
                        for ow in range(ow_lo, ow_hi):
                            d = d0 + (ow - ow_lo) * sw * C
                            dst = out[d:d + C]
                            src = slab[ow, s0:s0 + C]
                            for c in range(C):
                                dst[c] += src[c]


# Images with few channels: index tables per image ---------------------------

#: images with at most this many channels take the index-table kernels
TABLE_CHANNELS = 3


@functools.lru_cache(maxsize=16)
def window_offsets(H, W, C, kh, kw, sh, sw, ph, pw):
    """Where each entry of one image's column block is read from.

    Returns int64 (OH*OW*KH*KW*C,): entry ((oh, ow), (i, j, c)) of the
    block (the rows of cols that belong to one image, flattened) holds
    the flat offset (h*W + w)*C + c of x[h, w, c] in that image, with
    h = oh*SH + i - PH and w = ow*SW + j - PW, or -1 where (h, w) is
    padding. Built with NumPy broadcasting from the geometry alone, and
    cached; read-only.
    """
    OH = conv_output_size(H, kh, sh, ph)
    OW = conv_output_size(W, kw, sw, pw)
    oh, ow, i, j, c = np.ix_(np.arange(OH), np.arange(OW), np.arange(kh), np.arange(kw),
                             np.arange(C))
    h, w = oh * sh - ph + i, ow * sw - pw + j
    inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)
    offsets = np.where(inside, (h * W + w) * C + c, -1).reshape(-1).astype(np.int64)
    offsets.flags.writeable = False
    return offsets


@functools.lru_cache(maxsize=16)
def contributions(H, W, C, kh, kw, sh, sw, ph, pw):
    """The transpose of :func:`window_offsets`, for col2im's gather.

    Returns ``(starts, entries)``, int64: the column-block entries that add
    onto image element q (flat (h*W + w)*C + c) are
    entries[starts[q]:starts[q + 1]], ordered by kernel offset (i, j)
    increasing, the reference's order of summation.
    """
    offsets = window_offsets(H, W, C, kh, kw, sh, sw, ph, pw)
    entry = np.flatnonzero(offsets >= 0)
    target = offsets[entry]
    kernel_offset = (entry % (kh * kw * C)) // C          # i*KW + j
    order = np.lexsort((kernel_offset, target))           # by element, then (i, j)
    counts = np.bincount(target, minlength=H * W * C)
    starts = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    entries = entry[order].astype(np.int64)
    starts.flags.writeable = entries.flags.writeable = False
    return starts, entries


@njit(cache=True)
def im2col_table_block(x, n0, n1, cols, offsets):
    """As :func:`im2col_block`, through ``offsets`` (0 where -1): one long loop per image."""
    N = x.shape[0]
    image = x.size // max(N, 1)
    block = offsets.size
    xf = x.reshape(-1)
    cf = cols.reshape(-1)
    for n in range(n0, n1):
        base = (n - n0) * block
        for e in range(block):
            src = offsets[e]
            if src >= 0:
                cf[base + e] = xf[n * image + src]
            else:
                cf[base + e] = 0


@njit(cache=True)
def col2im_table_block(cols, n0, n1, x, starts, entries, init):
    """As :func:`col2im_block`: each element of image n sums its column-block
    entries, starting from init[c] and adding in increasing (i, j)."""
    N, C = x.shape[0], x.shape[3]
    image = x.size // max(N, 1)
    block = cols.size // max(n1 - n0, 1)     # one image's column entries
    xf = x.reshape(-1)
    cf = cols.reshape(-1)
    for n in range(n0, n1):
        base = (n - n0) * block
        for q in range(image):
            acc = init[q % C]
            for t in range(starts[q], starts[q + 1]):
                acc += cf[base + entries[t]]
            xf[n * image + q] = acc


# The parallel kernels: one image per task ------------------------------------

@njit(parallel=True, cache=True)
def _im2col_cpu(x, cols, kh, kw, sh, sw, ph, pw):
    """x (N, H, W, C) -> cols (N*OH*OW, KH*KW*C), both C-contiguous (runs of KW*C)."""
    N, H, W, C = x.shape
    P = conv_output_size(H, kh, sh, ph) * conv_output_size(W, kw, sw, pw)
    for n in prange(N):
        im2col_block(x, n, n + 1, cols[n * P:(n + 1) * P], kh, kw, sh, sw, ph, pw)


@njit(parallel=True, cache=True)
def _col2im_cpu(cols, x, kh, kw, sh, sw, ph, pw):
    """cols (N*OH*OW, KH*KW*C) -> x (N, H, W, C), both C-contiguous; a gather."""
    N, H, W, C = x.shape
    P = conv_output_size(H, kh, sh, ph) * conv_output_size(W, kw, sw, pw)
    zeros = np.zeros(C, x.dtype)
    for n in prange(N):
        col2im_block(cols[n * P:(n + 1) * P], n, n + 1, x, kh, kw, sh, sw, ph, pw, zeros)


@njit(parallel=True, cache=True)
def _im2col_table_cpu(x, cols, offsets):
    """cols block of image n = x[n] read through ``offsets``, parallel over images."""
    block = offsets.size
    for n in prange(x.shape[0]):
        im2col_table_block(x, n, n + 1, cols.reshape(-1)[n * block:(n + 1) * block], offsets)


@njit(parallel=True, cache=True)
def _col2im_table_cpu(cols, x, starts, entries, zero):
    """Each element of image n sums its column-block entries (a gather),
    starting from ``zero`` (0 in x's dtype), parallel over images."""
    N = x.shape[0]
    block = cols.size // max(N, 1)
    init = np.full(x.shape[3], zero)
    for n in prange(N):
        col2im_table_block(cols.reshape(-1)[n * block:(n + 1) * block], n, n + 1, x,
                           starts, entries, init)


def cpu_tables(shape, kernel_size, stride, padding, gather):
    """The CPU strategy for images of ``shape`` (N, H, W, C): the index tables
    (im2col's ``window_offsets``, or col2im's ``contributions`` when
    ``gather``) for at most TABLE_CHANNELS channels, else None (the runs)."""
    N, H, W, C = shape
    if C > TABLE_CHANNELS:
        return None
    geometry = (H, W, C, *kernel_size, *stride, *padding)
    return contributions(*geometry) if gather else window_offsets(*geometry)


def _im2col_on_cpu(x, cols, kh, kw, sh, sw, ph, pw):
    """The CPU strategy for this image: index table for few channels, else runs."""
    table = cpu_tables(x.shape, (kh, kw), (sh, sw), (ph, pw), gather=False)
    if table is not None:
        _im2col_table_cpu(x, cols, table)
    else:
        _im2col_cpu(x, cols, kh, kw, sh, sw, ph, pw)


def _col2im_on_cpu(cols, x, kh, kw, sh, sw, ph, pw):
    """As :func:`_im2col_on_cpu`, for col2im."""
    table = cpu_tables(x.shape, (kh, kw), (sh, sw), (ph, pw), gather=True)
    if table is not None:
        _col2im_table_cpu(cols, x, *table, scalar(0, x.dtype))
    else:
        _col2im_cpu(cols, x, kh, kw, sh, sw, ph, pw)


# --------------------------------------------------------------------------
# Numba CUDA kernels (built on first use, so numba.cuda is imported only then)
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _cuda_kernels():
    # ``cuda`` must be a module global, not a closure variable: the CUDA
    # simulator (NUMBA_ENABLE_CUDASIM=1) swaps the kernel's global ``cuda``.
    global cuda
    from numba import cuda

    @cuda.jit(device=True)
    def window_entry(x, n, h, w, c, inside, W, zero):
        # x[n, h, w, c], or 0 where (h, w) is padding (``inside``: h is in range)
        return x[n, h, w, c] if inside and w >= 0 and w < W else zero

    @cuda.jit
    def im2col_kernel(x, cols, kh, kw, sh, sw, ph, pw, zero):
        # block (bx, by) of grid (., OH, N): thread x owns column k = (i, j, c) of cols,
        # decomposed once; it walks output row oh of image n, ow = thread y, + by, ...
        # No division per element: consecutive threads write consecutive columns.
        # Four entries at a time, their loads issued before their stores: a thread
        # that waited on each load before the next would be bound by the memory's
        # latency, not its bandwidth.
        N, H, W, C = x.shape
        OH = conv_output_size(H, kh, sh, ph)
        OW = conv_output_size(W, kw, sw, pw)
        k = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if k < cols.shape[1]:
            c = k % C
            t = k // C
            j = t % kw
            i = t // kw
            by = cuda.blockDim.y
            for n in range(cuda.blockIdx.z, N, cuda.gridDim.z):
                for oh in range(cuda.blockIdx.y, OH, cuda.gridDim.y):
                    h = oh * sh + i - ph
                    row = (n * OH + oh) * OW
                    inside = h >= 0 and h < H
                    ow = cuda.threadIdx.y
                    while ow + 3 * by < OW:
                        w = ow * sw + j - pw
                        v0 = window_entry(x, n, h, w, c, inside, W, zero)
                        v1 = window_entry(x, n, h, w + by * sw, c, inside, W, zero)
                        v2 = window_entry(x, n, h, w + 2 * by * sw, c, inside, W, zero)
                        v3 = window_entry(x, n, h, w + 3 * by * sw, c, inside, W, zero)
                        cols[row + ow, k] = v0
                        cols[row + ow + by, k] = v1
                        cols[row + ow + 2 * by, k] = v2
                        cols[row + ow + 3 * by, k] = v3
                        ow += 4 * by
                    while ow < OW:
                        cols[row + ow, k] = window_entry(x, n, h, ow * sw + j - pw, c,
                                                         inside, W, zero)
                        ow += by

    @cuda.jit
    def col2im_kernel(cols, x, kh, kw, sh, sw, ph, pw, zero):
        # block (bx, by) of grid (., H, N): thread x owns channel c; it walks image row
        # h of image n, w = thread y, + by, ..., gathering each pixel's contributions
        # (kernel offsets i, j read output positions oh, ow, which step down by one).
        # Two offsets j at a time, both loads issued before the two additions (in
        # their order: the sum's bits do not change); an output position past the
        # last adds 0, which leaves the sum as it is.
        N, H, W, C = x.shape
        OH = conv_output_size(H, kh, sh, ph)
        OW = conv_output_size(W, kw, sw, pw)
        c = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if c < C:
            for n in range(cuda.blockIdx.z, N, cuda.gridDim.z):
                for h in range(cuda.blockIdx.y, H, cuda.gridDim.y):
                    hp = h + ph
                    i0, i1 = kernel_offsets(hp, sh, kh)
                    oh0 = (hp - i0) // sh
                    for w in range(cuda.threadIdx.y, W, cuda.blockDim.y):
                        wp = w + pw
                        j0, j1 = kernel_offsets(wp, sw, kw)
                        ow0 = (wp - j0) // sw
                        acc = zero
                        oh = oh0
                        for i in range(i0, i1, sh):
                            if oh < OH:
                                r = (n * OH + oh) * OW
                                base = i * kw * C + c
                                ow = ow0
                                j = j0
                                while j + sw < j1:
                                    a = cols[r + ow, base + j * C] if ow < OW else zero
                                    b = (cols[r + ow - 1, base + (j + sw) * C]
                                         if ow - 1 < OW else zero)
                                    acc += a
                                    acc += b
                                    j += 2 * sw
                                    ow -= 2
                                if j < j1 and ow < OW:
                                    acc += cols[r + ow, base + j * C]
                            oh -= 1
                        x[n, h, w, c] = acc

    return im2col_kernel, col2im_kernel


def _launch_shape(inner, rows, images):
    """(grid, block) of the im2col/col2im kernels: ``inner`` entries along the
    block's x (a power of two up to CUDA_THREADS), the rest of CUDA_THREADS
    along y; the grid's y and z walk ``rows`` and ``images`` (CUDA's limit of
    65535 on those axes: the kernels stride over the rest)."""
    bx = 1
    while bx < inner and bx < CUDA_THREADS:
        bx *= 2
    grid = ((inner + bx - 1) // bx, max(1, min(rows, 65535)), max(1, min(images, 65535)))
    return grid, (bx, CUDA_THREADS // bx)


def _im2col_cuda(x, cols, kernel_size, stride, padding):
    """Launch the CUDA im2col on device arrays (CuPy, or NumPy under cudasim)."""
    if cols.size:
        kernel = _cuda_kernels()[0]
        OH, _ = _geometry("im2col", x.shape, kernel_size, stride, padding)
        grid, block = _launch_shape(cols.shape[1], OH, x.shape[0])
        kernel[grid, block, cuda_stream(x)](x, cols, *kernel_size, *stride, *padding,
                                            scalar(0, x.dtype))


def _col2im_cuda(cols, x, kernel_size, stride, padding):
    """Launch the CUDA col2im (gather) on device arrays."""
    if x.size:
        kernel = _cuda_kernels()[1]
        N, H, W, C = x.shape
        grid, block = _launch_shape(C, H, N)
        kernel[grid, block, cuda_stream(cols)](
            cols, x, *kernel_size, *stride, *padding, scalar(0, x.dtype))


# --------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------

def im2col(x, kernel_size, stride=(1, 1), padding=(0, 0)):
    """Columns of a convolution's input windows.

    x : channels-last image (N, H, W, C). ``kernel_size``, ``stride``,
    ``padding`` are (h, w) pairs of ints. Returns a new C-contiguous array
    of shape (N*OH*OW, KH*KW*C) with
    cols[(n, oh, ow), (i, j, c)] = x[n, oh*SH + i - PH, ow*SW + j - PW, c]
    (0 outside the image).
    """
    OH, OW = _geometry("im2col", x.shape, kernel_size, stride, padding)
    impl = choose(x)
    if impl == "reference":
        return im2col_reference(x, kernel_size, stride, padding)
    N, H, W, C = x.shape
    kh, kw = kernel_size
    cols = get_xp(x).empty((N * OH * OW, kh * kw * C), dtype=x.dtype)
    if impl == "cpu":
        _im2col_on_cpu(x, cols, kh, kw, *stride, *padding)
    else:
        _im2col_cuda(x, cols, kernel_size, stride, padding)
    return cols


def col2im(cols, x_shape, kernel_size, stride=(1, 1), padding=(0, 0)):
    """Adjoint of :func:`im2col`: sum columns back into an (N, H, W, C) image.

    cols : (N*OH*OW, KH*KW*C), with OH, OW those of :func:`im2col` for
    ``x_shape``. Returns a new C-contiguous array of shape ``x_shape``.
    """
    N, H, W, C = x_shape
    OH, OW = _geometry("col2im", x_shape, kernel_size, stride, padding)
    kh, kw = kernel_size
    _check_cols("col2im", cols, (N * OH * OW, kh * kw * C))
    impl = choose(cols)
    if impl == "reference":
        return col2im_reference(cols, x_shape, kernel_size, stride, padding)
    x = get_xp(cols).empty(tuple(x_shape), dtype=cols.dtype)
    if impl == "cpu":
        _col2im_on_cpu(cols, x, kh, kw, *stride, *padding)
    else:
        _col2im_cuda(cols, x, kernel_size, stride, padding)
    return x

"""im2col and col2im: the data movement behind convolutions.

A 2-D convolution with kernel (KH, KW), stride (SH, SW) and zero padding
(PH, PW) reads, for every output pixel (oh, ow), the input window

    x[n, c, oh*SH + i - PH, ow*SW + j - PW],   0 <= i < KH, 0 <= j < KW

(out-of-range positions read as 0). ``im2col`` copies those windows into a
matrix so that the convolution becomes one matrix product:

    cols[(c, i, j), (n, oh, ow)] = x[n, c, oh*SH + i - PH, ow*SW + j - PW]

    cols has shape (C*KH*KW, N*OH*OW),
    OH = (H + 2 PH - KH) // SH + 1,   OW = (W + 2 PW - KW) // SW + 1.

Why this layout (rows (c, i, j), columns (n, oh, ow)):

- the row index (c, i, j) is the flattening order of a PyTorch weight
  (O, C, KH, KW), so ``W.reshape(O, -1) @ cols`` needs no weight copy;
- the long dimension N*OH*OW is the contiguous one, so each product is a
  single large, contiguous GEMM (BLAS parallelises over it) and each row of
  ``cols`` is written by im2col as long unit-stride runs of OW elements;
- the product (O, N*OH*OW) keeps each (o, n) output image contiguous, so
  going back to NCHW is a block transpose with unit-stride runs of OH*OW
  elements (cheap, and fused with the bias add by the caller).

``col2im`` is the adjoint (transpose) of ``im2col``: it sums every column
entry back onto the input pixel it was read from,

    x[n, c, h, w] = sum over (i, j, oh, ow) with oh*SH + i - PH = h and
                    ow*SW + j - PW = w  of  cols[(c, i, j), (n, oh, ow)].

It is written as a *gather*: each input pixel (h, w) enumerates its own
contributions, i = (h + PH) mod SH, + SH, ... up to min(KH - 1, h + PH)
(so that oh = (h + PH - i)/SH >= 0) keeping those with oh < OH, and
likewise for j. No two threads write the same element, so
there are no atomics and the result is deterministic. The contributions are
added in increasing (i, j) order, starting from 0, which is exactly the
order of the reference's loop over kernel offsets: kernel and reference
agree bit for bit.

Three implementations each (see :mod:`kernels._dispatch`): a Numba CPU
kernel parallel over the N*C (image, channel) planes, a Numba CUDA kernel
(one thread per output element, grid-stride loop) for CuPy arrays, and a
plain ``xp`` reference looping over the KH*KW kernel offsets.
"""
import functools

import numpy as np
from numba import njit, prange

from scratchvae.backend import get_xp

from ._dispatch import CUDA_THREADS, choose, cuda_grid, scalar


def conv_output_size(size, kernel, stride, padding):
    """Output length of a convolution along one axis: (size + 2p - k) // s + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def _geometry(name, x_shape, kernel_size, stride, padding):
    """Validate the 4-D input shape and hyper-parameters; return (OH, OW)."""
    if len(x_shape) != 4:
        raise ValueError(f"{name}: expected a 4-D (N, C, H, W) image shape, got {tuple(x_shape)}")
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"{name}: expected kernel_size >= 1, stride >= 1, padding >= 0, "
                         f"got kernel_size={kernel_size}, stride={stride}, padding={padding}")
    H, W = x_shape[2], x_shape[3]
    OH = conv_output_size(H, kh, sh, ph)
    OW = conv_output_size(W, kw, sw, pw)
    if OH < 1 or OW < 1:
        raise ValueError(f"{name}: expected a positive output size, got ({OH}, {OW}) from "
                         f"input ({H}, {W}), kernel_size={kernel_size}, stride={stride}, "
                         f"padding={padding}")
    return OH, OW


# --------------------------------------------------------------------------
# references (plain xp: NumPy or CuPy)
# --------------------------------------------------------------------------

def im2col_reference(x, kernel_size, stride, padding):
    """im2col by slicing a zero-padded copy once per kernel offset (i, j)."""
    xp = get_xp(x)
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    OH, OW = _geometry("im2col", x.shape, kernel_size, stride, padding)
    xpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
    xpad[:, :, ph:ph + H, pw:pw + W] = x
    cols = xp.empty((C, kh, kw, N, OH, OW), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = xpad[:, :, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw]
            cols[:, i, j] = window.transpose(1, 0, 2, 3)  # (N, C, OH, OW) -> (C, N, OH, OW)
    return cols.reshape(C * kh * kw, N * OH * OW)


def col2im_reference(cols, x_shape, kernel_size, stride, padding):
    """col2im by adding each kernel offset's slab into a zero-padded image."""
    xp = get_xp(cols)
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    OH, OW = _geometry("col2im", x_shape, kernel_size, stride, padding)
    _check_cols("col2im", cols, (C * kh * kw, N * OH * OW))
    cols6 = cols.reshape(C, kh, kw, N, OH, OW)
    xpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            window = xpad[:, :, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw]
            window += cols6[:, i, j].transpose(1, 0, 2, 3)
    return xp.ascontiguousarray(xpad[:, :, ph:ph + H, pw:pw + W])


def _check_cols(name, cols, shape):
    if tuple(cols.shape) != tuple(shape):
        raise ValueError(f"{name}: expected columns of shape {tuple(shape)}, "
                         f"got {tuple(cols.shape)}")


# --------------------------------------------------------------------------
# Numba CPU kernels
# --------------------------------------------------------------------------

@njit(inline="always")
def _valid_range(k, stride, pad, size, out_size):
    """Output positions o in [lo, hi) whose input o*stride + k - pad is in [0, size)."""
    # smallest o with o*stride + k - pad >= 0
    lo = 0
    if pad - k > 0:
        lo = (pad - k + stride - 1) // stride
    # smallest o with o*stride + k - pad >= size
    hi = 0
    if size + pad - k > 0:
        hi = (size + pad - k + stride - 1) // stride
    return min(lo, out_size), min(hi, out_size)


@njit(parallel=True, cache=True)
def _im2col_cpu(x, cols, kh, kw, sh, sw, ph, pw):
    """x (N, C, H, W) -> cols (C, KH, KW, N, OH, OW); parallel over (c, n) planes.

    Each task reads one H x W plane (cache resident) and writes KH*KW
    contiguous runs of OH*OW. Padding is written as explicit zeros only at
    the borders, so the inner copy loop has no branches.
    """
    N, C, H, W = x.shape
    OH, OW = cols.shape[4], cols.shape[5]
    for cn in prange(C * N):
        c = cn // N
        n = cn - c * N
        for i in range(kh):
            oh_lo, oh_hi = _valid_range(i, sh, ph, H, OH)
            for j in range(kw):
                ow_lo, ow_hi = _valid_range(j, sw, pw, W, OW)
                out = cols[c, i, j, n]
                for oh in range(OH):
                    if oh < oh_lo or oh >= oh_hi:
                        for ow in range(OW):
                            out[oh, ow] = 0
                        continue
                    h = oh * sh + i - ph
                    for ow in range(ow_lo):
                        out[oh, ow] = 0
                    for ow in range(ow_lo, ow_hi):
                        out[oh, ow] = x[n, c, h, ow * sw + j - pw]
                    for ow in range(ow_hi, OW):
                        out[oh, ow] = 0


@njit(parallel=True, cache=True)
def _col2im_cpu(cols, x, kh, kw, sh, sw, ph, pw, zero):
    """cols (C, KH, KW, N, OH, OW) -> x (N, C, H, W) by gathering.

    Parallel over (n, c) planes; pixel (h, w) adds cols[c, i, j, n, oh, ow]
    for i = (h+PH) mod SH, +SH, ... <= min(KH-1, h+PH) (so that
    oh = (h+PH-i)/SH >= 0) with oh < OH, and j
    likewise, in increasing (i, j) order. ``zero`` is 0 in the array dtype,
    so float32 is summed in float32 (as the reference does).
    """
    N, C, H, W = x.shape
    OH, OW = cols.shape[4], cols.shape[5]
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        for h in range(H):
            hp = h + ph
            for w in range(W):
                wp = w + pw
                acc = zero
                # i <= hp keeps oh >= 0; oh < OH is tested
                for i in range(hp % sh, min(kh, hp + 1), sh):
                    oh = (hp - i) // sh
                    if oh < OH:
                        for j in range(wp % sw, min(kw, wp + 1), sw):
                            ow = (wp - j) // sw
                            if ow < OW:
                                acc += cols[c, i, j, n, oh, ow]
                x[n, c, h, w] = acc


# --------------------------------------------------------------------------
# Numba CUDA kernels (built on first use, so numba.cuda is imported only then)
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _cuda_kernels():
    # ``cuda`` must be a module global, not a closure variable: the CUDA
    # simulator (NUMBA_ENABLE_CUDASIM=1) swaps the kernel's global ``cuda``.
    global cuda
    from numba import cuda

    @cuda.jit
    def im2col_kernel(x, cols, kh, kw, sh, sw, ph, pw):
        # one thread per entry of cols (C, KH, KW, N, OH, OW), grid-stride loop
        N, C, H, W = x.shape
        OH = cols.shape[4]
        OW = cols.shape[5]
        for idx in range(cuda.grid(1), cols.size, cuda.gridsize(1)):
            ow = idx % OW
            t = idx // OW
            oh = t % OH
            t = t // OH
            n = t % N
            t = t // N
            j = t % kw
            t = t // kw
            i = t % kh
            c = t // kh
            h = oh * sh + i - ph
            w = ow * sw + j - pw
            if h >= 0 and h < H and w >= 0 and w < W:
                cols[c, i, j, n, oh, ow] = x[n, c, h, w]
            else:
                cols[c, i, j, n, oh, ow] = 0

    @cuda.jit
    def col2im_kernel(cols, x, kh, kw, sh, sw, ph, pw, zero):
        # one thread per input pixel x[n, c, h, w]: gathers its contributions
        N, C, H, W = x.shape
        OH = cols.shape[4]
        OW = cols.shape[5]
        for idx in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            w = idx % W
            t = idx // W
            h = t % H
            t = t // H
            c = t % C
            n = t // C
            hp = h + ph
            wp = w + pw
            acc = zero
            for i in range(hp % sh, min(kh, hp + 1), sh):
                oh = (hp - i) // sh
                if oh < OH:
                    for j in range(wp % sw, min(kw, wp + 1), sw):
                        ow = (wp - j) // sw
                        if ow < OW:
                            acc += cols[c, i, j, n, oh, ow]
            x[n, c, h, w] = acc

    return im2col_kernel, col2im_kernel


def _im2col_cuda(x, cols6, kernel_size, stride, padding):
    """Launch the CUDA im2col on device arrays (CuPy, or NumPy under cudasim)."""
    if cols6.size:
        kernel = _cuda_kernels()[0]
        kernel[cuda_grid(cols6.size), CUDA_THREADS](x, cols6, *kernel_size, *stride, *padding)


def _col2im_cuda(cols6, x, kernel_size, stride, padding):
    """Launch the CUDA col2im (gather) on device arrays."""
    if x.size:
        kernel = _cuda_kernels()[1]
        kernel[cuda_grid(x.size), CUDA_THREADS](cols6, x, *kernel_size, *stride, *padding,
                                               scalar(0, x.dtype))


# --------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------

def im2col(x, kernel_size, stride=(1, 1), padding=(0, 0)):
    """Columns of a convolution's input windows.

    x : (N, C, H, W).  ``kernel_size``, ``stride``, ``padding`` are (h, w)
    pairs of ints. Returns a new C-contiguous array of shape
    (C*KH*KW, N*OH*OW) with cols[(c, i, j), (n, oh, ow)] =
    x[n, c, oh*SH + i - PH, ow*SW + j - PW] (0 outside the image).
    """
    OH, OW = _geometry("im2col", x.shape, kernel_size, stride, padding)
    impl = choose(x)
    if impl == "reference":
        return im2col_reference(x, kernel_size, stride, padding)
    N, C = x.shape[:2]
    kh, kw = kernel_size
    cols6 = get_xp(x).empty((C, kh, kw, N, OH, OW), dtype=x.dtype)
    if impl == "cpu":
        _im2col_cpu(x, cols6, kh, kw, *stride, *padding)
    else:
        _im2col_cuda(x, cols6, kernel_size, stride, padding)
    return cols6.reshape(C * kh * kw, N * OH * OW)


def col2im(cols, x_shape, kernel_size, stride=(1, 1), padding=(0, 0)):
    """Adjoint of :func:`im2col`: sum columns back into an (N, C, H, W) image.

    cols : (C*KH*KW, N*OH*OW) with OH, OW those of :func:`im2col` for
    ``x_shape``. Returns a new C-contiguous array of shape ``x_shape``.
    """
    N, C, H, W = x_shape
    OH, OW = _geometry("col2im", x_shape, kernel_size, stride, padding)
    kh, kw = kernel_size
    _check_cols("col2im", cols, (C * kh * kw, N * OH * OW))
    impl = choose(cols)
    if impl == "reference":
        return col2im_reference(cols, x_shape, kernel_size, stride, padding)
    cols6 = cols.reshape(C, kh, kw, N, OH, OW)  # a view: cols is C-contiguous
    x = get_xp(cols).empty(tuple(x_shape), dtype=cols.dtype)
    if impl == "cpu":
        _col2im_cpu(cols6, x, kh, kw, *stride, *padding, scalar(0, cols.dtype))
    else:
        _col2im_cuda(cols6, x, kernel_size, stride, padding)
    return x

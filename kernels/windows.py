"""Convolution windows grouped by the padding they reach: columns of in-image taps only.

A window of a padded convolution that overlaps the border reads zeros: its
row of im2col(x) (kernels/im2col.py) holds them, and a matrix product over
that row multiplies them. Along one axis, output position o reads input
o*S - P + i for the kernel offsets 0 <= i < K; those inside the image form
one range [lo(o), hi(o)), so the taps of window (oh, ow) that read the
image are a rectangle of the kernel,

    [ilo, ihi) x [jlo, jhi),   (ilo, ihi) = range of oh,  (jlo, jhi) = range of ow.

Windows with the same rectangle form a *class*. For a 4x4 kernel, stride 2,
padding 1 on a 14x14 image (7x7 windows) the rows give three ranges, [1, 4)
for oh = 0, [0, 4) for oh = 1..5 and [0, 3) for oh = 6, the columns the
same: nine classes (the interior, four edges, four corners), and 13.8% of
the column matrix is padding (18% for a 3x3 kernel with padding 1 on 7x7).

Each class has a column matrix of its own, (windows, (ihi-ilo)(jhi-jlo)C),
its columns (i, j, c) in im2col's order restricted to the rectangle, and
meets the matching columns of the weight matrix (:func:`pack_columns`):
one product per class, and no multiply by padding. kernels/conv_gemm.py
builds its products so. A window may lie wholly in the padding (a padding
as wide as the kernel): its class has width 0, and its outputs are the bias.

    window_classes(H, W, C, kh, kw, sh, sw, ph, pw)   the classes of a geometry
    class_im2col / class_col2im_add                  one class's columns of some images
    class_rows                                       the rows of a matrix of its windows
    classes_im2col_reference                         the same from im2col_reference
    pack_columns(M, classes)                         M[:, class columns], per class: the
                                                     reference of conv_gemm's packing

The loops are serial (``*_block`` style, as kernels/im2col.py's), run per
thread by kernels/conv_gemm.py on a few images at a time.
"""
import functools
from collections import namedtuple

import numpy as np
from numba import njit

from .im2col import conv_output_size, im2col_reference

#: The classes of one geometry (int64 arrays, read-only, cached):
#:   bounds  (classes, 4)   ilo, ihi, jlo, jhi of each class's kernel rectangle
#:   starts  (classes + 1)  class k's windows are pixels[starts[k]:starts[k + 1]]
#:   pixels  (OH*OW,)       window indices oh*OW + ow, by class, increasing within one
#:   columns (sum widths)   class k's im2col columns (i*KW + j)*C + c are
#:                          columns[col_starts[k]:col_starts[k + 1]], in order
#:   col_starts (classes + 1)
WindowClasses = namedtuple("WindowClasses", "bounds starts pixels columns col_starts")


def _tap_ranges(size, kernel, stride, padding, out_size):
    """{(lo, hi): [o, ...]}: the output positions o grouped by their in-image
    kernel offsets [lo, hi) (hi = lo when none), in increasing o."""
    groups = {}
    for o in range(out_size):
        start = o * stride - padding
        lo = max(0, -start)
        hi = max(lo, min(kernel, size - start))
        groups.setdefault((lo, hi), []).append(o)
    return groups


def _frozen(values, shape=None):
    a = np.array(values, dtype=np.int64)
    a = a.reshape(shape) if shape is not None else a
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=64)
def window_classes(H, W, C, kh, kw, sh, sw, ph, pw):
    """The window classes of a convolution of (H, W, C) images (:data:`WindowClasses`).

    Classes run over the row ranges, then the column ranges, each in order of
    its first window; together they hold every window once.
    """
    OH, OW = conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw)
    rows = _tap_ranges(H, kh, sh, ph, OH)
    cols = _tap_ranges(W, kw, sw, pw, OW)
    bounds, starts, pixels, columns, col_starts = [], [0], [], [], [0]
    for (ilo, ihi), ohs in rows.items():
        for (jlo, jhi), ows in cols.items():
            bounds.append((ilo, ihi, jlo, jhi))
            pixels += [oh * OW + ow for oh in ohs for ow in ows]
            starts.append(len(pixels))
            columns += [(i * kw + j) * C + c for i in range(ilo, ihi)
                        for j in range(jlo, jhi) for c in range(C)]
            col_starts.append(len(columns))
    return WindowClasses(_frozen(bounds, (-1, 4)), _frozen(starts), _frozen(pixels),
                         _frozen(columns), _frozen(col_starts))


def pack_columns(M, classes):
    """(packed, offsets): M[:, class k's columns] for every class k, each
    C-contiguous (rows of M, width_k), one after the other in ``packed``
    (1-D), class k's from ``offsets[k]`` (elements).

    M is a weight matrix whose columns are im2col's (i, j, c): Wm (O, KH*KW*C)
    of a convolution, or Wm (C, KH*KW*O) of a transposed one.
    """
    rows = M.shape[0]
    packed = np.empty(rows * classes.columns.shape[0], M.dtype)
    offsets = np.empty(classes.bounds.shape[0], np.int64)
    for k in range(classes.bounds.shape[0]):
        c0, c1 = classes.col_starts[k], classes.col_starts[k + 1]
        offsets[k] = rows * c0
        np.take(M, classes.columns[c0:c1], axis=1,
                out=packed[rows * c0:rows * c1].reshape(rows, c1 - c0))
    return packed, offsets


@njit(inline="always")
def _class_runs(img, n0, n1, cols, pixels, p0, p1, OW, ilo, ihi, jlo, jhi, sh, sw, ph, pw,
                gather):
    """The runs of one class's windows over images n0..n1-1 of img (N, H, W, C), in
    the order of the 1-D ``cols``: row (n - n0, q - p0) for the windows q in
    [p0, p1) of ``pixels``, its (ihi-ilo)(jhi-jlo)C columns (i, j, c) in order.
    ``gather``: cols <- the runs (im2col); else the runs += cols (col2im).

    Every tap of the rectangle reads the image, so each kernel row i of a
    window is one contiguous run img[n, h0 + i, w0 + jlo : w0 + jhi, :] and no
    entry is tested for padding. Windows of one class may overlap; the loop is
    serial.
    """
    N, H, W, C = img.shape
    flat = img.reshape(N * H, W * C)         # image rows, flat
    run = (jhi - jlo) * C
    at = 0
    for n in range(n0, n1):
        for q in range(p0, p1):
            p = pixels[q]
            oh = p // OW
            h = n * H + oh * sh - ph
            a = ((p - oh * OW) * sw - pw + jlo) * C
            for i in range(ilo, ihi):
                pixels_run = flat[h + i, a:a + run]
                block = cols[at:at + run]
                if gather:
                    for t in range(run):
                        block[t] = pixels_run[t]
                else:
                    for t in range(run):
                        pixels_run[t] += block[t]
                at += run


@njit(inline="always")
def class_im2col(x, n0, n1, cols, pixels, p0, p1, OW, ilo, ihi, jlo, jhi, sh, sw, ph, pw):
    """One class's column rows of images n0..n1-1 of x (N, H, W, C), into the 1-D
    ``cols`` (:func:`_class_runs`'s order)."""
    _class_runs(x, n0, n1, cols, pixels, p0, p1, OW, ilo, ihi, jlo, jhi, sh, sw, ph, pw, True)


@njit(inline="always")
def class_col2im_add(cols, n0, n1, y, pixels, p0, p1, OW, ilo, ihi, jlo, jhi, sh, sw, ph,
                     pw):
    """The adjoint of :func:`class_im2col`: each entry of ``cols`` added onto the
    pixel of y (N, H, W, C) it would have been read from (y += col2im of one class)."""
    _class_runs(y, n0, n1, cols, pixels, p0, p1, OW, ilo, ihi, jlo, jhi, sh, sw, ph, pw, False)


@njit(inline="always")
def class_rows(R, n0, n1, P, pixels, p0, p1, out):
    """The rows of R (N*P, D), one per window, of one class's windows q in [p0, p1)
    over images n0..n1-1, into the 1-D ``out`` in :func:`class_im2col`'s row order;
    returns their number."""
    D = R.shape[1]
    r = 0
    for n in range(n0, n1):
        for q in range(p0, p1):
            src = R[n * P + pixels[q]]
            dst = out[r * D:(r + 1) * D]
            for d in range(D):
                dst[d] = src[d]
            r += 1
    return r


def classes_im2col_reference(x, kernel_size, stride, padding):
    """[cols_k for each class k]: im2col_reference(x)'s rows of class k's windows
    (image by image) and its columns, (N * windows_k, width_k); what
    :func:`class_im2col` writes, from the plain reference."""
    N, H, W, C = x.shape
    cls = window_classes(H, W, C, *kernel_size, *stride, *padding)
    full = im2col_reference(x, kernel_size, stride, padding)
    P = cls.pixels.shape[0]
    full = full.reshape(N, P, -1)
    out = []
    for k in range(cls.bounds.shape[0]):
        pix = cls.pixels[cls.starts[k]:cls.starts[k + 1]]
        taps = cls.columns[cls.col_starts[k]:cls.col_starts[k + 1]]
        out.append(full[:, pix][:, :, taps].reshape(N * pix.shape[0], taps.shape[0]))
    return out

"""The three products of a convolution, with im2col / col2im fused into the GEMM.

A convolution and its gradients are three kinds of product (scratchvae/ops/conv.py
derives them), for an image x (N, H, W, C) channels-last, its column matrix
im2col(x) (N*OH*OW, KH*KW*C) (kernels/im2col.py), and a weight matrix Wm:

    forward     Y  = im2col(x) Wm^T + b   Conv2d forward; ConvTranspose2d's input gradient
    transposed  y  = col2im(X Wm) + b     ConvTranspose2d forward; Conv2d's input gradient
    weight      dW = R^T im2col(x)        both weight gradients (R = dY, or the input X)

Unfused, each product writes its column matrix whole and reads it back (or
the reverse): one row per output pixel, KH*KW*C columns, 12.8 MB for the
conv VAE's middle layers, several times the cores' caches, so the columns
travel to memory and back between the two passes. Here each thread takes an
equal share of the images, and a few images at a time (a chunk, sized by
:data:`CHUNK_BYTES` so that its columns stay in the core's cache) builds
their columns and multiplies them at once, or multiplies and gathers them:
no column matrix exists whole. The column code is kernels/im2col.py's (its
serial ``*_block`` loops, run kernels or index tables by channel count) and
the products are BLAS ``gemm`` calls (kernels/gemm.py), so each chunk's
arithmetic is the unfused one's. The weight gradient sums over all pixels:
each thread adds its chunks into its own partial product (BLAS beta = 1),
and the partial products are added at the end, as in kernels.gemm's cut
along K. Results agree with the unfused products to float rounding. A
transposed convolution's backward needs two products of one column matrix,
im2col(dy) Wm^T and X^T im2col(dy): :func:`conv_forward_and_weight_products`
builds each chunk once for both.

Fusing takes about a fifth off a conv-VAE or VQ-VAE training step against
the unfused products (benchmarks/RESULTS.md). A Conv2d keeps x for its
backward, not its column matrix (4x smaller here).

A padded convolution of images with more than TABLE_CHANNELS channels goes
by *window classes* (kernels/windows.py): windows that reach the same part of
the padding share a column matrix holding only their in-image taps, so no
product multiplies the padding's zeros (13.8% of a conv VAE middle layer's
columns, 18% of a 3x3 layer's with padding 1 on 7x7 images). Each thread
takes the classes one by one, each in chunks of its own size; a forward
product's rows are written to their places in Y with the bias and the
epilogue, a weight product's classes add onto their columns of the thread's
partial product, a transposed product's onto the thread's images. A class's
weight columns are a block of Wm's when its windows reach no padding at the
left or right (a range of kernel rows, all columns: addressed in place), else
a copy packed at each call. The per-class sums group the additions
differently from one product over all columns: the results agree with the
references to float rounding, not bit for bit with the unclassed kernels.

A 1x1 convolution (kernel 1, stride 1, padding 0) has the image itself as
its columns: its products are plain :func:`kernels.gemm.matmul` calls.

Dispatch (:mod:`kernels._dispatch`): the fused Numba kernels for NumPy
arrays; for CuPy arrays, kernels/im2col.py's CUDA kernels and cuBLAS
(through :func:`kernels.gemm.matmul`), unfused (a GPU's memory bandwidth makes the column matrix cheap); and
``*_reference``, the unfused composition of the xp references.
"""
import functools
from collections import namedtuple

import numpy as np
from numba import get_num_threads, njit, prange

from . import im2col as columns           # its CUDA launchers, looked up at call time
from ._arrays import get_xp
from ._dispatch import choose, scalar
from .gemm import _gemm_addresses, gemm_rows, matmul
from .im2col import (_geometry, col2im_block, col2im_reference, col2im_table_block,
                     conv_output_size, cpu_tables, im2col_block, im2col_reference,
                     im2col_table_block)
from .relu import _relu, _relu_grad, add_bias, relu_backward, relu_forward
from .windows import class_col2im_add, class_im2col, class_rows, window_classes

#: a chunk's column rows take about this many bytes (its images' columns are
#: built, multiplied or gathered while they stay in the core's cache: 2 MB of
#: L2 per core on the project's machine); a chunk holds at least one image
CHUNK_BYTES = 768 << 10
#: the same for the weight gradient, whose chunks are multiplied into a
#: partial product that stays in cache too
WEIGHT_CHUNK_BYTES = 384 << 10
#: padded products of images with more than TABLE_CHANNELS channels go by
#: window classes; False runs them as one product over the full columns, with
#: the padding's zeros (benchmarks/bench_window_classes.py times the two)
BY_CLASSES = True


def _is_pointwise(kernel, stride, padding):
    return tuple(kernel) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0)


def _images_per_chunk(pixels, width, itemsize, budget):
    return max(1, budget // max(1, pixels * width * itemsize))


def _table_args(table):
    """(use the index tables?, im2col offsets or col2im starts, col2im entries)
    as the fused kernels take them: empty arrays stand for an unused table."""
    empty = np.empty(0, np.int64)
    if table is None:
        return False, empty, empty
    if isinstance(table, tuple):                 # col2im: (starts, entries)
        return True, table[0], table[1]
    return True, table, empty                    # im2col: offsets


# --------------------------------------------------------------------------
# serial helpers: one chunk of images
# --------------------------------------------------------------------------

@njit(inline="always")
def _im2col_chunk(x, n0, n1, cols, kh, kw, sh, sw, ph, pw, use_table, offsets):
    if use_table:
        im2col_table_block(x, n0, n1, cols, offsets)
    else:
        im2col_block(x, n0, n1, cols, kh, kw, sh, sw, ph, pw)


@njit(inline="always")
def _col2im_chunk(cols, n0, n1, y, kh, kw, sh, sw, ph, pw, use_table, starts, entries, init):
    if use_table:
        col2im_table_block(cols, n0, n1, y, starts, entries, init)
    else:
        col2im_block(cols, n0, n1, y, kh, kw, sh, sw, ph, pw, init)


@njit(inline="always")
def _relu_epilogue(block, relu, gated, gate):
    """On a block of a product's result while it is in cache (2-D, C-contiguous):
    max(v, 0) (``relu``), or v where the ReLU output ``gate`` (the block's
    shape) is > 0, else 0 (``gated``): kernels/relu.py's rules, element for element."""
    if relu:
        for r in range(block.shape[0]):
            for c in range(block.shape[1]):
                block[r, c] = _relu(block[r, c])
    elif gated:
        for r in range(block.shape[0]):
            for c in range(block.shape[1]):
                block[r, c] = _relu_grad(block[r, c], gate[r, c])


# --------------------------------------------------------------------------
# the fused CPU kernels. ``threads`` is Numba's thread count, read by the
# caller (calling get_num_threads in here would keep them from being cached);
# ``one`` and ``zero`` are the BLAS scalars in the arrays' dtype; sizes of the
# gemm calls count elements, addresses bytes
# --------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _columns_cpu(gemm, x, kh, kw, sh, sw, ph, pw, use_table, offsets, chunk, threads, one,
                 zero, forward, Wm, bias, has_bias, out, relu, gated, gate, weight, R, parts):
    """The products of im2col(x) (x (N, H, W, C)), each chunk's columns built once:

    - ``forward``: out (N*OH*OW, O) = im2col(x) Wm^T (+ bias), Wm (O, KH*KW*C),
      then :func:`_relu_epilogue` (``relu``, or ``gated`` by ``gate``, out's shape);
    - ``weight``: parts[t] (D, KH*KW*C) = R_t^T im2col(x_t) over thread t's
      images, R (N*OH*OW, D); the caller adds the partial products.

    The arrays of a product not asked for are not touched (empty ones will do).
    """
    N, H, W, C = x.shape
    P = conv_output_size(H, kh, sh, ph) * conv_output_size(W, kw, sw, pw)
    width = kh * kw * C
    O, D = Wm.shape[0], R.shape[1]
    size = x.itemsize
    w_at, out_at = np.int64(Wm.ctypes.data), np.int64(out.ctypes.data)
    r_at, parts_at = np.int64(R.ctypes.data), np.int64(parts.ctypes.data)
    for t in prange(threads):
        lo, hi = t * N // threads, (t + 1) * N // threads
        if weight and hi <= lo:                   # no images: a zero partial product
            parts[t] = 0
        cols = np.empty((chunk * P, width), x.dtype)
        cols_at = np.int64(cols.ctypes.data)
        beta = zero                               # the first chunk writes, the others add
        for n0 in range(lo, hi, chunk):
            n1 = min(n0 + chunk, hi)
            rows = (n1 - n0) * P
            _im2col_chunk(x, n0, n1, cols[:rows], kh, kw, sh, sw, ph, pw, use_table, offsets)
            if forward:
                block = out[n0 * P:n1 * P]
                forward_beta = zero
                if has_bias:                      # out rows start as the bias: beta = 1
                    for r in range(rows):
                        for o in range(O):
                            block[r, o] = bias[o]
                    forward_beta = one
                # block (rows, O) = cols (rows, width) @ Wm^T (width, O)
                gemm_rows(gemm, True, False, rows, O, width, one, cols_at, width, w_at, width,
                          forward_beta, out_at + n0 * P * O * size, O)
                _relu_epilogue(block, relu, gated, gate[n0 * P:n1 * P])
            if weight:
                # parts[t] (D, width) += R[n0*P:n1*P]^T (D, rows) @ cols (rows, width)
                gemm_rows(gemm, False, True, D, width, rows, one, r_at + n0 * P * D * size,
                          D, cols_at, width, beta, parts_at + t * D * width * size, width)
                beta = one


@njit(parallel=True, cache=True)
def _transposed_cpu(gemm, X, Wm, init, y, P, kh, kw, sh, sw, ph, pw, use_table, starts,
                    entries, chunk, threads, one, zero, relu, gated, gate):
    """y (N, OH, OW, O) = col2im(X Wm) + init, then :func:`_relu_epilogue` on
    each chunk's images (``gate``: (N*OH*OW, O)); X (N*P, C), P input pixels
    per image, Wm (C, KH*KW*O)."""
    N = y.shape[0]
    Q = y.shape[1] * y.shape[2]                   # output pixels per image
    pixels = y.reshape(N * Q, y.shape[3])
    C, width = Wm.shape
    size = X.itemsize
    w_at, x_at = np.int64(Wm.ctypes.data), np.int64(X.ctypes.data)
    for t in prange(threads):
        lo, hi = t * N // threads, (t + 1) * N // threads
        cols = np.empty((chunk * P, width), X.dtype)
        cols_at = np.int64(cols.ctypes.data)
        for n0 in range(lo, hi, chunk):
            n1 = min(n0 + chunk, hi)
            rows = (n1 - n0) * P
            # cols (rows, width) = X[n0*P:n1*P] (rows, C) @ Wm (C, width)
            gemm_rows(gemm, True, True, rows, width, C, one, x_at + n0 * P * C * size, C,
                      w_at, width, zero, cols_at, width)
            _col2im_chunk(cols[:rows], n0, n1, y, kh, kw, sh, sw, ph, pw, use_table, starts,
                          entries, init)
            _relu_epilogue(pixels[n0 * Q:n1 * Q], relu, gated, gate[n0 * Q:n1 * Q])


@njit(inline="always")
def _class_weights(wm_at, wp_at, offset, ilo, run, full, width, size):
    """(address, leading dimension) of class k's weight columns: a block of Wm's
    own columns from kernel row ``ilo`` (``run`` = KW*C columns a kernel row, Wm's
    rows ``full`` long) when ``offset`` < 0, else its packed copy in Wp
    (rows ``width`` long)."""
    if offset < 0:
        return wm_at + ilo * run * size, full
    return wp_at + offset * size, width


@njit(inline="always")
def _class_row(dst, src, bias, has_bias, relu, gated, gate, row):
    """One row of a class's forward product into its place in the output:
    dst = src (+ bias), then :func:`_relu_epilogue`'s rule (``gate[row]``)."""
    if has_bias:
        for o in range(dst.shape[0]):
            dst[o] = src[o] + bias[o]
    else:
        for o in range(dst.shape[0]):
            dst[o] = src[o]
    if relu:
        for o in range(dst.shape[0]):
            dst[o] = _relu(dst[o])
    elif gated:
        g = gate[row]
        for o in range(dst.shape[0]):
            dst[o] = _relu_grad(dst[o], g[o])


@njit(parallel=True, cache=True)
def _class_columns_cpu(gemm, x, kw, sh, sw, ph, pw, OW, bounds, starts, pixels, chunks, sizes,
                       threads, one, zero, forward, Wm, Wp, w_offsets, bias, has_bias, out,
                       relu, gated, gate, weight, R, parts):
    """:func:`_columns_cpu` by window classes (kernels/windows.py): each class's
    columns hold only its in-image taps and meet only the matching weights.

    Thread t takes its share of the images and, class by class, chunks of
    ``chunks[k]`` images. ``forward``: out (N*P, O) = im2col(x) Wm^T (+ bias),
    class k's block of rows by one product with its weight columns Wm_k (O,
    width_k) (:func:`_class_weights`: a block of Wm, or its copy packed at
    Wp[w_offsets[k]:]), then written to its rows of out with the bias and
    :func:`_relu_epilogue`'s rule. ``weight``: parts[t] (D, KH*KW*C)
    = R^T im2col(x_t) over thread t's images, class k adding R_k^T cols_k (R_k
    the rows of R of its windows) onto its columns: one product, or one per
    kernel row when the class's columns are not one block (they are when
    jlo = 0 and jhi = KW); the caller adds the partial products. ``sizes``:
    the largest columns, product and rows of R a chunk holds (elements).
    """
    N, C = x.shape[0], x.shape[3]
    P = pixels.shape[0]
    O, D = out.shape[1], R.shape[1]
    size = x.itemsize
    wm_at, wp_at = np.int64(Wm.ctypes.data), np.int64(Wp.ctypes.data)
    parts_at = np.int64(parts.ctypes.data)
    full = Wm.shape[1] if forward else parts.shape[2]     # KH*KW*C
    for t in prange(threads):
        lo, hi = t * N // threads, (t + 1) * N // threads
        cols = np.empty(sizes[0], x.dtype)
        prod = np.empty(sizes[1], x.dtype)
        rows_of_r = np.empty(sizes[2], x.dtype)
        cols_at, prod_at = np.int64(cols.ctypes.data), np.int64(prod.ctypes.data)
        rr_at = np.int64(rows_of_r.ctypes.data)
        part_at = parts_at + t * D * full * size
        if weight:
            parts[t] = 0                              # classes add onto their columns
        for k in range(bounds.shape[0]):
            ilo, ihi, jlo, jhi = bounds[k, 0], bounds[k, 1], bounds[k, 2], bounds[k, 3]
            width = (ihi - ilo) * (jhi - jlo) * C
            p0, p1 = starts[k], starts[k + 1]
            count = p1 - p0
            for n0 in range(lo, hi, chunks[k]):
                n1 = min(n0 + chunks[k], hi)
                rows = (n1 - n0) * count
                class_im2col(x, n0, n1, cols, pixels, p0, p1, OW, ilo, ihi, jlo, jhi, sh, sw,
                             ph, pw)
                if forward:
                    if width > 0:   # prod (rows, O) = cols_k (rows, width) @ Wm_k^T (width, O)
                        w_at, ldw = _class_weights(wm_at, wp_at, w_offsets[k], ilo, kw * C,
                                                   full, width, size)
                        gemm_rows(gemm, True, False, rows, O, width, one, cols_at, width,
                                  w_at, ldw, zero, prod_at, O)
                    else:
                        prod[:rows * O] = 0
                    r = 0
                    for n in range(n0, n1):
                        for q in range(p0, p1):
                            row = n * P + pixels[q]
                            _class_row(out[row], prod[r * O:(r + 1) * O], bias, has_bias, relu,
                                       gated, gate, row)
                            r += 1
                if weight and width > 0:
                    class_rows(R, n0, n1, P, pixels, p0, p1, rows_of_r)
                    # parts[t][:, class k's columns] += R_k^T (D, rows) @ cols_k (rows, width)
                    run = (jhi - jlo) * C
                    if jlo == 0 and jhi == kw:            # one block of columns
                        gemm_rows(gemm, False, True, D, width, rows, one, rr_at, D, cols_at,
                                  width, one, part_at + ilo * run * size, full)
                    else:                                 # a block per kernel row
                        for i in range(ilo, ihi):
                            gemm_rows(gemm, False, True, D, run, rows, one, rr_at, D,
                                      cols_at + (i - ilo) * run * size, width, one,
                                      part_at + (i * kw + jlo) * C * size, full)


@njit(parallel=True, cache=True)
def _class_transposed_cpu(gemm, X, Wm, Wp, w_offsets, init, y, kw, sh, sw, ph, pw, OW,
                          bounds, starts, pixels, chunks, sizes, threads, one, zero, relu,
                          gated, gate):
    """:func:`_transposed_cpu` by window classes: y (N, OH', OW', O) = col2im(X Wm)
    + init, then the epilogue. Thread t starts its images from ``init``, then,
    class by class and ``chunks[k]`` images at a time, adds class k's columns
    X_k Wm_k onto their pixels (X_k the rows of X of the class's windows, Wm_k
    (C, width_k) its weight columns, :func:`_class_weights`): no product for the
    taps in the padding. ``OW`` windows per row; ``sizes``: the largest columns
    and rows of X a chunk holds (elements). The thread's images stay in memory
    between the classes, so the epilogue is one pass over them at the end."""
    N, O = y.shape[0], y.shape[3]
    Q = y.shape[1] * y.shape[2]                   # output pixels per image
    out = y.reshape(N * Q, O)
    P, C = pixels.shape[0], X.shape[1]
    size, full = X.itemsize, Wm.shape[1]
    wm_at, wp_at = np.int64(Wm.ctypes.data), np.int64(Wp.ctypes.data)
    for t in prange(threads):
        lo, hi = t * N // threads, (t + 1) * N // threads
        cols = np.empty(sizes[0], X.dtype)
        rows_of_x = np.empty(sizes[1], X.dtype)
        cols_at, rx_at = np.int64(cols.ctypes.data), np.int64(rows_of_x.ctypes.data)
        for m in range(lo * Q, hi * Q):
            for o in range(O):
                out[m, o] = init[o]
        for k in range(bounds.shape[0]):
            ilo, ihi, jlo, jhi = bounds[k, 0], bounds[k, 1], bounds[k, 2], bounds[k, 3]
            width = (ihi - ilo) * (jhi - jlo) * O
            if width == 0:
                continue
            p0, p1 = starts[k], starts[k + 1]
            for n0 in range(lo, hi, chunks[k]):
                n1 = min(n0 + chunks[k], hi)
                r = class_rows(X, n0, n1, P, pixels, p0, p1, rows_of_x)
                # cols_k (rows, width) = X_k (rows, C) @ Wm_k (C, width)
                w_at, ldw = _class_weights(wm_at, wp_at, w_offsets[k], ilo, kw * O, full,
                                           width, size)
                gemm_rows(gemm, True, True, r, width, C, one, rx_at, C, w_at, ldw, zero,
                          cols_at, width)
                class_col2im_add(cols, n0, n1, y, pixels, p0, p1, OW, ilo, ihi, jlo, jhi, sh,
                                 sw, ph, pw)
        _relu_epilogue(out[lo * Q:hi * Q], relu, gated, gate[lo * Q:hi * Q])


@njit(parallel=True, cache=True)
def _pack_columns(M, bounds, kw, C, w_offsets, packed):
    """Class k's columns of M (rows of M, width_k), C-contiguous, at
    packed[w_offsets[k]:], for the classes with w_offsets[k] >= 0: one run of
    (jhi-jlo)*C columns per kernel row i, copied whole (the same values as
    :func:`kernels.windows.pack_columns`)."""
    for r in prange(M.shape[0]):
        src = M[r]
        for k in range(bounds.shape[0]):
            if w_offsets[k] < 0:
                continue
            ilo, ihi, jlo, jhi = bounds[k, 0], bounds[k, 1], bounds[k, 2], bounds[k, 3]
            run = (jhi - jlo) * C
            at = w_offsets[k] + r * (ihi - ilo) * run
            for i in range(ilo, ihi):
                a = (i * kw + jlo) * C
                dst = packed[at:at + run]
                for m in range(run):
                    dst[m] = src[a + m]
                at += run


#: How a fused product goes by window classes for one geometry (cached):
#:   classes    kernels.windows.WindowClasses
#:   chunks     images per chunk of each class
#:   sizes      the thread buffers, elements: the largest columns of a chunk,
#:              then its rows times each of ``per_row``
#:   w_offsets  where each class's weights start in the packed copy, -1 for a
#:              class whose columns are one block of Wm's (jlo = 0, jhi = KW)
#:   packed     the packed copy's size per row of Wm
ClassPlan = namedtuple("ClassPlan", "classes chunks sizes w_offsets packed")


@functools.lru_cache(maxsize=256)
def _class_plan(H, W, C, kh, kw, sh, sw, ph, pw, images, budget, itemsize, per_row):
    """The :data:`ClassPlan` of a geometry: chunks of at most ``images`` images
    whose columns take about ``budget`` bytes."""
    classes = window_classes(H, W, C, kh, kw, sh, sw, ph, pw)
    counts = np.diff(classes.starts)
    widths = np.diff(classes.col_starts)
    chunks = np.array([min(images, _images_per_chunk(c, max(w, 1), itemsize, budget))
                       for c, w in zip(counts, widths)], np.int64)
    rows = int((chunks * counts).max())
    sizes = np.array([max(1, int((chunks * counts * widths).max()))]
                     + [max(1, rows * n) for n in per_row], np.int64)
    w_offsets, packed = np.full(len(chunks), -1, np.int64), 0
    for k, (ilo, ihi, jlo, jhi) in enumerate(classes.bounds):
        if (jlo, jhi) != (0, kw) and widths[k]:
            w_offsets[k], packed = packed, packed + int(widths[k])
    for a in (chunks, sizes, w_offsets):
        a.flags.writeable = False
    return ClassPlan(classes, chunks, sizes, w_offsets, packed)


def _packed(M, plan, kw, C):
    """(packed copy, offsets in elements) of M's class columns (:func:`_pack_columns`)."""
    rows = M.shape[0]
    packed = np.empty(max(1, rows * plan.packed), M.dtype)
    offsets = np.where(plan.w_offsets < 0, -1, rows * plan.w_offsets)
    _pack_columns(M, plan.classes.bounds, kw, C, offsets, packed)
    return packed, offsets


def _by_classes(table, padding):
    """Whether the fused products go by window classes (kernels/windows.py): for
    padded convolutions of images that take the runs (no index tables), unless
    :data:`BY_CLASSES` is off."""
    return BY_CLASSES and table is None and any(padding)


def _class_products_cpu(x, kernel_size, stride, padding, Wm, bias, R, relu, relu_output):
    """:func:`_column_products_cpu`'s products by :func:`_class_columns_cpu`."""
    N, H, W, C = x.shape
    OW = conv_output_size(W, kernel_size[1], stride[1], padding[1])
    dtype = x.dtype
    threads = get_num_threads()
    O = Wm.shape[0] if Wm is not None else 0
    D = R.shape[1] if R is not None else 0
    plan = _class_plan(H, W, C, *kernel_size, *stride, *padding, max(1, -(-N // threads)),
                       WEIGHT_CHUNK_BYTES if R is not None else CHUNK_BYTES, x.itemsize,
                       (O, D))
    classes = plan.classes
    empty1, empty2 = np.empty(0, dtype), np.empty((0, 0), dtype)
    out = np.empty((N * classes.pixels.shape[0], O), dtype) if Wm is not None else empty2
    Wp, w_offsets = (_packed(Wm, plan, kernel_size[1], C) if Wm is not None
                     else (empty1, plan.w_offsets))
    parts = (np.empty((threads, D, kernel_size[0] * kernel_size[1] * C), dtype)
             if R is not None else np.empty((0, 0, 0), dtype))
    _class_columns_cpu(_gemm_addresses()[dtype], x, kernel_size[1], *stride, *padding, OW,
                       classes.bounds, classes.starts, classes.pixels, plan.chunks, plan.sizes,
                       threads, *_blas_scalars(dtype), Wm is not None,
                       Wm if Wm is not None else empty2, Wp, w_offsets,
                       bias if bias is not None else empty1, bias is not None, out,
                       *_epilogue_args(relu, relu_output, dtype),
                       R is not None, R if R is not None else empty2, parts)
    return _column_results(out, parts, Wm is not None, R is not None)


def _class_transposed_product_cpu(X, Wm, y_shape, kernel_size, stride, padding, bias, relu,
                                  relu_output):
    """:func:`conv_transposed_product`'s fused kernel by window classes."""
    N, OH, OW, O = y_shape
    threads = get_num_threads()
    plan = _class_plan(OH, OW, O, *kernel_size, *stride, *padding, max(1, -(-N // threads)),
                       CHUNK_BYTES, X.itemsize, (X.shape[1],))
    classes = plan.classes
    y = np.empty(tuple(y_shape), dtype=X.dtype)
    init = bias if bias is not None else np.zeros(O, X.dtype)
    Wp, w_offsets = _packed(Wm, plan, kernel_size[1], O)
    gate = relu_output.reshape(N * OH * OW, O) if relu_output is not None else None
    _class_transposed_cpu(_gemm_addresses()[X.dtype], X, Wm, Wp, w_offsets, init, y,
                          kernel_size[1], *stride, *padding,
                          conv_output_size(OW, kernel_size[1], stride[1], padding[1]),
                          classes.bounds, classes.starts, classes.pixels, plan.chunks,
                          plan.sizes, threads, *_blas_scalars(X.dtype),
                          *_epilogue_args(relu, gate, X.dtype))
    return y


def _epilogue_args(relu, relu_output, dtype):
    """(relu, gated, gate) as the fused kernels take the epilogue: ``gate`` the
    ReLU output, C-contiguous, or an empty array when there is none."""
    gated = relu_output is not None
    return relu, gated, relu_output if gated else np.empty((0, 0), dtype)


def _column_results(out, parts, forward, weight):
    """(Y or None, dW or None) of a columns kernel: dW the threads' partial
    products ``parts`` added in order."""
    dW = None
    if weight:
        dW = parts[0] if parts.shape[0] == 1 else parts.sum(axis=0)
    return (out if forward else None), dW


def _column_products_cpu(x, kernel_size, stride, padding, Wm=None, bias=None, R=None,
                         relu=False, relu_output=None):
    """(im2col(x) Wm^T + bias or None, R^T im2col(x) or None) by :func:`_columns_cpu`:
    the forward product when Wm is given (``relu``, ``relu_output``: see
    :func:`conv_forward_product`), the weight product when R is."""
    table = cpu_tables(x.shape, kernel_size, stride, padding, gather=False)
    if _by_classes(table, padding):
        return _class_products_cpu(x, kernel_size, stride, padding, Wm, bias, R, relu,
                                   relu_output)
    N, H, W, C = x.shape
    OH, OW = _geometry("conv products", x.shape, kernel_size, stride, padding)
    kh, kw = kernel_size
    width = kh * kw * C
    dtype = x.dtype
    threads = get_num_threads()
    empty2 = np.empty((0, 0), dtype)
    out = np.empty((N * OH * OW, Wm.shape[0]), dtype) if Wm is not None else empty2
    parts = (np.empty((threads, R.shape[1], width), dtype) if R is not None
             else np.empty((0, 0, 0), dtype))
    use_table, offsets, _ = _table_args(table)
    budget = WEIGHT_CHUNK_BYTES if R is not None else CHUNK_BYTES
    chunk = _images_per_chunk(OH * OW, width, x.itemsize, budget)
    _columns_cpu(_gemm_addresses()[dtype], x, kh, kw, *stride, *padding, use_table, offsets,
                 chunk, threads, *_blas_scalars(dtype),
                 Wm is not None, Wm if Wm is not None else empty2,
                 bias if bias is not None else np.empty(0, dtype), bias is not None, out,
                 *_epilogue_args(relu, relu_output, dtype),
                 R is not None, R if R is not None else empty2, parts)
    return _column_results(out, parts, Wm is not None, R is not None)


# --------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------

def _check_2d(name, what, a, shape):
    if a.ndim != 2 or any(want is not None and got != want for got, want in zip(a.shape, shape)):
        raise ValueError(f"{name}: expected {what} of shape "
                         f"({', '.join('*' if d is None else str(d) for d in shape)}), "
                         f"got {tuple(a.shape)}")


def _check_bias(name, bias, channels):
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"{name}: expected a bias of shape ({channels},), got "
                         f"{tuple(bias.shape)}")


def _check_epilogue(name, relu, relu_output, shape, dtype):
    """``relu`` and ``relu_output`` (one at most): the latter of the result's shape
    and dtype, C-contiguous (the fused kernels read it by rows)."""
    if relu_output is None:
        return
    if relu:
        raise ValueError(f"{name}: expected relu=True or a relu_output, not both")
    if tuple(relu_output.shape) != tuple(shape) or relu_output.dtype != dtype:
        raise ValueError(f"{name}: expected a relu_output of shape {tuple(shape)} and dtype "
                         f"{np.dtype(dtype)} (the result's), got {tuple(relu_output.shape)} "
                         f"and {relu_output.dtype}")
    if not relu_output.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous relu_output")


def _epilogue_unfused(y, relu, relu_output):
    """The fused kernels' epilogue as a separate pass of kernels/relu.py (same values):
    max(y, 0) in place, or y where relu_output > 0, else 0."""
    if relu:
        return relu_forward(y, out=y)
    if relu_output is not None:
        return relu_backward(y, relu_output)
    return y


def _bias_and_epilogue(y, bias, relu, relu_output):
    """y + bias, then :func:`_epilogue_unfused`, on a new C-contiguous product y
    (channels on its last axis): the bias and a ReLU after it in one pass of
    kernels.relu.add_bias (the same values as the add, then the ReLU)."""
    if bias is not None:
        add_bias(y.reshape(-1, y.shape[-1]), bias, relu=relu)
        relu = False
    return _epilogue_unfused(y, relu, relu_output)


def _blas_scalars(dtype):
    return scalar(1, dtype), scalar(0, dtype)


def conv_forward_product_reference(x, Wm, kernel_size, stride, padding, bias=None):
    """im2col(x) @ Wm.T (+ bias), unfused, in plain xp."""
    Y = im2col_reference(x, kernel_size, stride, padding) @ Wm.T
    return Y if bias is None else Y + bias


def conv_transposed_product_reference(X, Wm, y_shape, kernel_size, stride, padding,
                                      bias=None):
    """col2im(X @ Wm, y_shape) (+ bias), unfused, in plain xp."""
    y = col2im_reference(X @ Wm, y_shape, kernel_size, stride, padding)
    return y if bias is None else y + bias


def conv_weight_product_reference(x, R, kernel_size, stride, padding):
    """R.T @ im2col(x), unfused, in plain xp."""
    return R.T @ im2col_reference(x, kernel_size, stride, padding)


def conv_forward_product(x, Wm, kernel_size, stride, padding, bias=None, relu=False,
                         relu_output=None):
    """Y = im2col(x) @ Wm.T (+ bias): the output of a convolution, channels-last, flattened.

    x : (N, H, W, C) channels-last image; Wm : (O, KH*KW*C) weight matrix (rows
    O, columns (i, j, c) as im2col's); bias : (O,) or None. ``kernel_size``,
    ``stride``, ``padding`` are (h, w) pairs. Returns a new C-contiguous
    (N*OH*OW, O) array.

    The epilogue, applied to each chunk of Y while it is in cache (one pass
    over memory fewer than a separate ReLU): ``relu=True`` returns max(Y, 0)
    (the ReLU that follows a layer); ``relu_output`` r, an array of Y's
    shape, returns Y where r > 0, else 0 (a gradient carried back through
    the ReLU whose output r is). Both follow kernels/relu.py's rules exactly.
    """
    name = "conv_forward_product"
    OH, OW = _geometry(name, x.shape, kernel_size, stride, padding)
    N, H, W, C = x.shape
    kh, kw = kernel_size
    _check_2d(name, "a weight matrix", Wm, (None, kh * kw * C))
    _check_bias(name, bias, Wm.shape[0])
    _check_epilogue(name, relu, relu_output, (N * OH * OW, Wm.shape[0]), x.dtype)
    if _is_pointwise(kernel_size, stride, padding):          # the columns are x itself
        Y = matmul(x.reshape(N * H * W, C), Wm.T)
        return _bias_and_epilogue(Y, bias, relu, relu_output)
    impl = choose(x, Wm, bias)
    if impl != "cpu":
        return _epilogue_unfused(_forward_unfused(impl, x, Wm, kernel_size, stride, padding,
                                                  bias), relu, relu_output)
    return _column_products_cpu(x, kernel_size, stride, padding, Wm=Wm, bias=bias, relu=relu,
                                relu_output=relu_output)[0]


def conv_transposed_product(X, Wm, y_shape, kernel_size, stride, padding, bias=None,
                            relu=False, relu_output=None):
    """y = col2im(X @ Wm, y_shape) (+ bias): a transposed convolution, channels-last.

    X : (N*H*W, C), the input image channels-last and flattened; Wm :
    (C, KH*KW*O); ``y_shape`` : (N, OH, OW, O), the output image, whose
    im2col has N*H*W rows; bias : (O,) or None. Returns a new C-contiguous
    array of shape ``y_shape``. ``relu``, ``relu_output`` (of shape
    ``y_shape``): the epilogue of :func:`conv_forward_product`, on each
    chunk of images once gathered.
    """
    name = "conv_transposed_product"
    N, OH, OW, O = y_shape
    H, W = _geometry(name, y_shape, kernel_size, stride, padding)
    kh, kw = kernel_size
    _check_2d(name, "an input", X, (N * H * W, None))
    _check_2d(name, "a weight matrix", Wm, (X.shape[1], kh * kw * O))
    _check_bias(name, bias, O)
    _check_epilogue(name, relu, relu_output, y_shape, X.dtype)
    if _is_pointwise(kernel_size, stride, padding):
        y = matmul(X, Wm).reshape(y_shape)
        return _bias_and_epilogue(y, bias, relu, relu_output)
    impl = choose(X, Wm, bias)
    if impl == "reference":
        return _epilogue_unfused(conv_transposed_product_reference(
            X, Wm, y_shape, kernel_size, stride, padding, bias), relu, relu_output)
    if impl == "cuda":                                              # cuBLAS, then col2im
        y = get_xp(X).empty(tuple(y_shape), dtype=X.dtype)
        columns._col2im_cuda(matmul(X, Wm), y, kernel_size, stride, padding)
        return _bias_and_epilogue(y, bias, relu, relu_output)
    table = cpu_tables(y_shape, kernel_size, stride, padding, gather=True)
    if _by_classes(table, padding):
        return _class_transposed_product_cpu(X, Wm, y_shape, kernel_size, stride, padding,
                                             bias, relu, relu_output)
    y = np.empty(tuple(y_shape), dtype=X.dtype)
    init = bias if bias is not None else np.zeros(O, X.dtype)
    use_table, starts, entries = _table_args(table)
    chunk = _images_per_chunk(H * W, kh * kw * O, X.itemsize, CHUNK_BYTES)
    gate = relu_output.reshape(N * OH * OW, O) if relu_output is not None else None
    _transposed_cpu(_gemm_addresses()[X.dtype], X, Wm, init, y, H * W, kh, kw, *stride,
                    *padding, use_table, starts, entries, chunk, get_num_threads(),
                    *_blas_scalars(X.dtype), *_epilogue_args(relu, gate, X.dtype))
    return y


def conv_weight_product(x, R, kernel_size, stride, padding):
    """R.T @ im2col(x), shape (D, KH*KW*C): a weight gradient in matrix form.

    x : (N, H, W, C) channels-last image; R : (N*OH*OW, D), one row per
    column row of im2col(x) (the output gradient dY of a convolution of x,
    or the input X of a transposed convolution whose output gradient is x).
    Returns a new C-contiguous array.
    """
    name = "conv_weight_product"
    OH, OW = _geometry(name, x.shape, kernel_size, stride, padding)
    N, H, W, C = x.shape
    kh, kw = kernel_size
    _check_2d(name, "a matrix R", R, (N * OH * OW, None))
    if _is_pointwise(kernel_size, stride, padding):
        return matmul(R.T, x.reshape(N * H * W, C))
    impl = choose(x, R)
    if impl != "cpu":
        return _weight_unfused(impl, x, R, kernel_size, stride, padding)
    return _column_products_cpu(x, kernel_size, stride, padding, R=R)[1]


def conv_forward_and_weight_products(x, Wm, R, kernel_size, stride, padding,
                                     relu_output=None):
    """(im2col(x) @ Wm.T, R.T @ im2col(x)): both products of one column matrix.

    What a transposed convolution's backward needs (x = dy, R = its input X):
    its input gradient and its weight gradient. Equal to
    (:func:`conv_forward_product`, :func:`conv_weight_product`), with each
    chunk's columns built once for both; ``relu_output`` is the first
    product's epilogue, as in :func:`conv_forward_product`.
    """
    name = "conv_forward_and_weight_products"
    OH, OW = _geometry(name, x.shape, kernel_size, stride, padding)
    N, H, W, C = x.shape
    kh, kw = kernel_size
    _check_2d(name, "a weight matrix", Wm, (None, kh * kw * C))
    _check_2d(name, "a matrix R", R, (N * OH * OW, None))
    _check_epilogue(name, False, relu_output, (N * OH * OW, Wm.shape[0]), x.dtype)
    if _is_pointwise(kernel_size, stride, padding):
        return (conv_forward_product(x, Wm, kernel_size, stride, padding,
                                     relu_output=relu_output),
                conv_weight_product(x, R, kernel_size, stride, padding))
    impl = choose(x, Wm, R)
    if impl != "cpu":
        return (_epilogue_unfused(_forward_unfused(impl, x, Wm, kernel_size, stride, padding,
                                                   None), False, relu_output),
                _weight_unfused(impl, x, R, kernel_size, stride, padding))
    return _column_products_cpu(x, kernel_size, stride, padding, Wm=Wm, R=R,
                                relu_output=relu_output)


def _columns_cuda(x, kernel_size, stride, padding):
    N, H, W, C = x.shape
    OH, OW = _geometry("im2col", x.shape, kernel_size, stride, padding)
    cols = get_xp(x).empty((N * OH * OW, kernel_size[0] * kernel_size[1] * C), dtype=x.dtype)
    columns._im2col_cuda(x, cols, kernel_size, stride, padding)
    return cols


def _forward_unfused(impl, x, Wm, kernel_size, stride, padding, bias):
    """The forward product as ``impl`` ("reference" or "cuda") computes it."""
    if impl == "reference":
        return conv_forward_product_reference(x, Wm, kernel_size, stride, padding, bias)
    Y = matmul(_columns_cuda(x, kernel_size, stride, padding), Wm.T)   # cuBLAS
    return Y if bias is None else _add(Y, bias)


def _weight_unfused(impl, x, R, kernel_size, stride, padding):
    """The weight product as ``impl`` ("reference" or "cuda") computes it."""
    if impl == "reference":
        return conv_weight_product_reference(x, R, kernel_size, stride, padding)
    return matmul(R.T, _columns_cuda(x, kernel_size, stride, padding))


def _add(a, bias):
    a += bias                                  # channels on the last axis
    return a

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

A 1x1 convolution (kernel 1, stride 1, padding 0) has the image itself as
its columns: its products are plain :func:`kernels.gemm.matmul` calls.

Dispatch (:mod:`kernels._dispatch`): the fused Numba kernels for NumPy
arrays; for CuPy arrays, kernels/im2col.py's CUDA kernels and cuBLAS
(through :func:`kernels.gemm.matmul`), unfused (a GPU's memory bandwidth makes the column matrix cheap); and
``*_reference``, the unfused composition of the xp references.
"""
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

#: a chunk's column rows take about this many bytes (its images' columns are
#: built, multiplied or gathered while they stay in the core's cache: 2 MB of
#: L2 per core on the project's machine); a chunk holds at least one image
CHUNK_BYTES = 768 << 10
#: the same for the weight gradient, whose chunks are multiplied into a
#: partial product that stays in cache too
WEIGHT_CHUNK_BYTES = 384 << 10


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


def _column_products_cpu(x, kernel_size, stride, padding, Wm=None, bias=None, R=None,
                         relu=False, relu_output=None):
    """(im2col(x) Wm^T + bias or None, R^T im2col(x) or None) by :func:`_columns_cpu`:
    the forward product when Wm is given (``relu``, ``relu_output``: see
    :func:`conv_forward_product`), the weight product when R is."""
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
    use_table, offsets, _ = _table_args(cpu_tables(x.shape, kernel_size, stride, padding,
                                                   gather=False))
    budget = WEIGHT_CHUNK_BYTES if R is not None else CHUNK_BYTES
    chunk = _images_per_chunk(OH * OW, width, x.itemsize, budget)
    _columns_cpu(_gemm_addresses()[dtype], x, kh, kw, *stride, *padding, use_table, offsets,
                 chunk, threads, *_blas_scalars(dtype),
                 Wm is not None, Wm if Wm is not None else empty2,
                 bias if bias is not None else np.empty(0, dtype), bias is not None, out,
                 relu, relu_output is not None,
                 relu_output if relu_output is not None else empty2,
                 R is not None, R if R is not None else empty2, parts)
    dW = None
    if R is not None:                          # the partial products, added in order
        dW = parts[0] if threads == 1 else parts.sum(axis=0)
    return (out if Wm is not None else None), dW


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
    y = np.empty(tuple(y_shape), dtype=X.dtype)
    init = bias if bias is not None else np.zeros(O, X.dtype)
    use_table, starts, entries = _table_args(cpu_tables(y_shape, kernel_size, stride,
                                                        padding, gather=True))
    chunk = _images_per_chunk(H * W, kh * kw * O, X.itemsize, CHUNK_BYTES)
    gate = (relu_output.reshape(N * OH * OW, O) if relu_output is not None
            else np.empty((0, 0), X.dtype))
    _transposed_cpu(_gemm_addresses()[X.dtype], X, Wm, init, y, H * W, kh, kw, *stride,
                    *padding, use_table, starts, entries, chunk, get_num_threads(),
                    *_blas_scalars(X.dtype), relu, relu_output is not None, gate)
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

"""2-D convolution and transposed convolution, PyTorch shapes and semantics.

Shapes (no groups, no dilation):

- Conv2d:          x (N, C, H, W),  W (O, C, KH, KW),  b (O,)  ->  y (N, O, OH, OW)
                   OH = (H + 2 PH - KH) // SH + 1   (likewise OW)
- ConvTranspose2d: x (N, C, H, W),  W (C, O, KH, KW),  b (O,)  ->  y (N, O, OH, OW)
                   OH = (H - 1) SH - 2 PH + KH + OPH   (likewise OW)

Memory layout: channels-last. Arrays have the usual NCHW *shape*, but the
outputs (y, and dx in backward) are returned as views
``a.transpose(0, 3, 1, 2)`` of C-contiguous (N, H, W, C) arrays, which is
what PyTorch calls the ``channels_last`` memory format. NumPy treats them as
ordinary arrays (elementwise ops keep the layout; ``reshape`` copies when it
must). Inputs may have any layout; channels-last ones are used without a
copy, so a chain conv -> activation -> conv never transposes. The reason is
speed: in channels-last memory a window row of the kernel is one contiguous
run of KW*C values (see kernels/im2col.py).

Both ops are one matrix product plus a data rearrangement. With the weight
as a matrix Wm = W.transpose(0, 2, 3, 1).reshape(W.shape[0], -1), i.e.
rows = dim 0 of W, columns = (i, j, dim 1), and images channels-last:

    Conv2d:          Y = im2col(x) @ Wm^T + b        Y (N*OH*OW, O), Wm (O, KH*KW*C)
    ConvTranspose2d: y = col2im(X @ Wm) + b          X (N*H*W, C),   Wm (C, KH*KW*O)

``col2im`` is the adjoint of ``im2col``, so the two ops are adjoint to each
other (without bias, for the same weight W of shape (A, B, KH, KW)):

    <conv2d(x; W), y> = <x, conv_transpose2d(y; W)>,

and each backward reuses the other op's forward: the input gradient of a
convolution is a transposed convolution of dy with the same weight, and
vice versa. With the weight gradients, every pass is one of three products
(kernels/conv_gemm.py): im2col(x) Wm^T, col2im(X Wm), and R^T im2col(x).
They are computed with im2col / col2im fused into the matrix product, a few
images at a time, so no column matrix is ever built whole; 1x1
convolutions (kernel 1, stride 1, padding 0) skip im2col/col2im: the
columns are the image itself, reshaped.

Masked convolution (PixelCNN, van den Oord et al. 2016) is Conv2d with the
weight W * M for a fixed 0/1 mask M (:func:`pixelcnn_mask`); it reuses the
Conv2d pair and adds no conv code path.

Registry entries (gradient checks over a grid of strides, paddings and
kernels; generated tests; docs/derivations.md): scratchvae/gradcheck/conv.py,
masked convolution in scratchvae/gradcheck/pixelcnn.py.
"""
import numpy as np

from kernels.conv_gemm import (conv_forward_and_weight_products, conv_forward_product,
                                conv_transposed_product, conv_weight_product)
from kernels.gemm import matmul
from kernels.im2col import conv_output_size
from kernels.layout import ascontiguous

from ..backend import check_float, check_int, check_shape, get_xp


# --------------------------------------------------------------------------
# argument handling and validation
# --------------------------------------------------------------------------

def as_pair(op, name, value, minimum):
    """An int or a pair of ints -> (h, w), each >= minimum; else ValueError."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    if (len(pair) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair)
            or min(pair) < minimum):
        raise ValueError(f"{op}: expected {name} to be an int >= {minimum} or a pair of "
                         f"them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_weight(op, W):
    check_shape(op, "weight", W, (None, None, None, None))
    check_float(op, "weight", W)
    return W.shape


def _check_bias(op, b, channels, dtype):
    if b is not None:
        check_shape(op, "bias", b, (channels,))
        check_float(op, "bias", b, dtype)


def _check_output(op, out_hw, in_hw, kernel, stride, padding):
    if out_hw[0] < 1 or out_hw[1] < 1:
        raise ValueError(f"{op}: expected a positive output size, got {tuple(out_hw)} from "
                         f"input size {tuple(in_hw)} with kernel_size={kernel}, "
                         f"stride={stride}, padding={padding}")


# --------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------

def _channels_last(x):
    """(N, C, H, W)-shaped x -> a C-contiguous (N, H, W, C) array.

    Free (a view) when x is already channels-last in memory, else one copy
    (kernels.layout, parallel over images).
    """
    return ascontiguous(x.transpose(0, 2, 3, 1))


def _nchw_view(x_nhwc):
    """A C-contiguous (N, H, W, C) array seen with the NCHW shape (a view)."""
    return x_nhwc.transpose(0, 3, 1, 2)


def _weight_matrix(W):
    """W (A, B, KH, KW) -> Wm (A, KH*KW*B): rows dim 0, columns (i, j, dim 1).

    The column order matches the (i, j, c) columns of channels-last im2col.
    A small copy (the weight), made once per forward and kept in the cache.
    """
    A = W.shape[0]
    return get_xp(W).ascontiguousarray(W.transpose(0, 2, 3, 1)).reshape(A, -1)


def _weight_from_matrix(dWm, shape):
    """Inverse of :func:`_weight_matrix`: (A, KH*KW*B) -> C-contiguous (A, B, KH, KW)."""
    A, B, KH, KW = shape
    return get_xp(dWm).ascontiguousarray(dWm.reshape(A, KH, KW, B).transpose(0, 3, 1, 2))


def _column_sums(a):
    """a.sum(axis=0) of a 2-D array as a product with a row of ones.

    The bias gradient. A BLAS product is several times faster here than
    NumPy's reduction over the outer axis of a (pixels, channels) array, and
    its blocked float32 accumulation is no less accurate.
    """
    return matmul(get_xp(a).ones((1, a.shape[0]), dtype=a.dtype), a)[0]


# --------------------------------------------------------------------------
# Conv2d
# --------------------------------------------------------------------------

def conv2d_forward(x, W, b=None, stride=1, padding=0, relu=False):
    """y[n, o, p, q] = b[o] + sum_{c,i,j} W[o, c, i, j] x[n, c, p*SH + i - PH, q*SW + j - PW]

    (x read as 0 outside the image). x (N, C, H, W), W (O, C, KH, KW),
    b (O,) or None; ``stride`` and ``padding`` are ints or (h, w) pairs.
    Computed as Y = X Wm^T + b with X = im2col(x) (N*OH*OW, KH*KW*C), one
    GEMM (fused with im2col: kernels/conv_gemm.py). Returns ``(y, cache)``,
    y channels-last in memory; the cache holds x channels-last (itself when
    it already is: x must not be changed before the backward) and Wm, what
    the gradients need.

    ``relu=True`` returns max(y, 0) instead, the ReLU that follows the layer
    applied in the product's epilogue (ops.activations.relu_forward's values);
    the cache is the same, and the ReLU's backward stays the ReLU's.
    """
    op = "Conv2d"
    stride = as_pair(op, "stride", stride, 1)
    padding = as_pair(op, "padding", padding, 0)
    O, C, KH, KW = _check_weight(op, W)
    check_shape(op, "input", x, (None, C, None, None))
    check_float(op, "input", x, W.dtype)
    _check_bias(op, b, O, W.dtype)
    N, _, H, Wd = x.shape
    OH = conv_output_size(H, KH, stride[0], padding[0])
    OW = conv_output_size(Wd, KW, stride[1], padding[1])
    _check_output(op, (OH, OW), (H, Wd), (KH, KW), stride, padding)
    Wm = _weight_matrix(W)
    x_nhwc = _channels_last(x)
    Y = conv_forward_product(x_nhwc, Wm, (KH, KW), stride, padding, bias=b, relu=relu)
    y = _nchw_view(Y.reshape(N, OH, OW, O))      # rows of Y are pixels, columns channels
    return y, (x_nhwc, Wm, tuple(W.shape), stride, padding)


def conv2d_backward(dy, cache, need_dx=True, input_relu=False):
    """Gradients given dy = dL/dy of shape (N, O, OH, OW) (any memory layout).

    Forward: Y = X Wm^T + 1 b^T with X = im2col(x) (N*OH*OW, KH*KW*C) and
    Y = y channels-last (N*OH*OW, O). As for a linear layer:

    - dWm = dY^T X                       (one GEMM, X rebuilt from the cached
                                          x chunk by chunk; dW is dWm rearranged)
    - db  = dY^T 1 = sum of dy over n, p, q
    - dX  = dY Wm, and since X = im2col(x) is linear in x, the input
      gradient is its adjoint applied to dX:  dx = col2im(dY Wm),
      which is exactly conv_transpose2d(dy; W) (same weight, no bias).

    ``input_relu=True``: x is the output of a ReLU, x = max(u, 0); the
    gradient returned is dL/du = dx 1[u > 0] = dx 1[x > 0] instead (the
    ReLU's backward, ops.activations.relu_backward, applied in the product's
    epilogue with the cached x). ``need_dx=False`` skips dx (returned as
    None), e.g. for a first layer. Returns ``(dx, dW, db)``; dx is
    channels-last in memory.
    """
    x_nhwc, Wm, w_shape, stride, padding = cache
    O, C, KH, KW = w_shape
    N, H, Wd, _ = x_nhwc.shape
    OH = conv_output_size(H, KH, stride[0], padding[0])
    OW = conv_output_size(Wd, KW, stride[1], padding[1])
    check_shape("Conv2d.backward", "upstream gradient", dy, (N, O, OH, OW))
    check_float("Conv2d.backward", "upstream gradient", dy, Wm.dtype)
    dY = _channels_last(dy).reshape(N * OH * OW, O)
    db = _column_sums(dY)
    dW = _weight_from_matrix(conv_weight_product(x_nhwc, dY, (KH, KW), stride, padding),
                             w_shape)
    dx = None
    if need_dx:
        dx = _nchw_view(conv_transposed_product(dY, Wm, (N, H, Wd, C), (KH, KW), stride,
                                                padding,
                                                relu_output=x_nhwc if input_relu else None))
    return dx, dW, db


def conv2d_init(rng, in_channels, out_channels, kernel_size, dtype, bias=True):
    """PyTorch's default ``nn.Conv2d`` initialisation from a NumPy generator.

    ``kaiming_uniform_(a=sqrt(5))`` on W (O, C, KH, KW) reduces to
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C*KH*KW; the bias is
    drawn from the same interval. W is drawn first, then b.
    """
    kh, kw = as_pair("Conv2d", "kernel_size", kernel_size, 1)
    bound = 1.0 / (in_channels * kh * kw) ** 0.5
    W = rng.uniform(-bound, bound, size=(out_channels, in_channels, kh, kw)).astype(dtype)
    b = rng.uniform(-bound, bound, size=(out_channels,)).astype(dtype) if bias else None
    return W, b


# --------------------------------------------------------------------------
# Masked Conv2d (PixelCNN)
# --------------------------------------------------------------------------

#: the mask types: "A" hides the centre pixel (a first layer), "B" shows it
MASK_TYPES = ("A", "B")


def pixelcnn_mask(kind, out_channels, in_channels, kh, kw, dtype=np.float32):
    """The 0/1 mask M (out, in, KH, KW) of a PixelCNN convolution.

    With the centre (ci, cj) = (KH // 2, KW // 2), a kernel tap (i, j) is kept
    when it lies in a row above the centre, or in the centre row left of the
    centre; type "B" also keeps the centre itself, type "A" does not. With
    stride 1 and padding (KH // 2, KW // 2) the output at pixel p then reads
    only the inputs before p in raster order (A), or at and before p (B).
    Single-stack masks: every input channel sees the same taps. The kernel
    sizes must be odd, so that the centre is the output pixel.
    """
    if kind not in MASK_TYPES:
        raise ValueError(f"pixelcnn_mask: expected kind 'A' or 'B', got {kind!r}")
    out_channels = check_int("pixelcnn_mask", "out_channels", out_channels, 1)
    in_channels = check_int("pixelcnn_mask", "in_channels", in_channels, 1)
    for name, k in (("kh", kh), ("kw", kw)):
        if check_int("pixelcnn_mask", name, k, 1) % 2 == 0:
            raise ValueError(f"pixelcnn_mask: expected an odd {name} (the centre is the "
                             f"output pixel), got {k}")
    ci, cj = kh // 2, kw // 2
    taps = np.zeros((kh, kw), dtype=dtype)
    taps[:ci, :] = 1
    taps[ci, :cj + (kind == "B")] = 1
    return np.ascontiguousarray(np.broadcast_to(taps, (out_channels, in_channels, kh, kw)))


def masked_conv2d_forward(x, W, mask, b=None, stride=1, padding=0):
    """y = conv2d(x; W * M) + b, with M a fixed mask of W's shape and dtype.

    The product W' = W * M is the effective weight; Conv2d computes the rest.
    Returns ``(y, cache)``; the cache is Conv2d's (holding W' as a matrix)
    and the mask.
    """
    op = "MaskedConv2d"
    O, C, _, _ = _check_weight(op, W)
    check_shape(op, "mask", mask, tuple(W.shape))
    check_float(op, "mask", mask, W.dtype)
    check_shape(op, "input", x, (None, C, None, None))
    check_float(op, "input", x, W.dtype)
    _check_bias(op, b, O, W.dtype)
    y, cache = conv2d_forward(x, W * mask, b, stride, padding)
    return y, (cache, mask)


def masked_conv2d_backward(dy, cache, need_dx=True):
    """Gradients of y = conv2d(x; W') + b with W' = W * M, given dy.

    Conv2d's backward gives dL/dW', dx and db for the weight W'. The product
    is elementwise, dW'_k / dW_k = M_k, so by the chain rule

        dW = dL/dW' * M,

    zero outside the mask: those weights get no gradient, and an optimiser
    without weight decay never moves them. dx = conv_transpose2d(dy; W') and
    db are Conv2d's. Returns ``(dx, dW, db)``.
    """
    conv_cache, mask = cache
    dx, dW, db = conv2d_backward(dy, conv_cache, need_dx=need_dx)
    return dx, dW * mask, db


# --------------------------------------------------------------------------
# ConvTranspose2d
# --------------------------------------------------------------------------

def conv_transpose2d_forward(x, W, b=None, stride=1, padding=0, output_padding=0,
                             relu=False):
    """The adjoint of Conv2d (its input gradient), plus a bias:

        y[n, o, h, w] = b[o] + sum over c, i, j, p, q with p*SH + i - PH = h,
                        q*SW + j - PW = w  of  x[n, c, p, q] W[c, o, i, j]

    x (N, C, H, W), W (C, O, KH, KW), b (O,) or None; output size
    OH = (H - 1) SH - 2 PH + KH + OPH, where ``output_padding`` OPH < SH
    lengthens the output by OPH rows (columns) at the bottom (right): there
    only PH - OPH of the padding is cropped instead of PH. Those rows receive
    input contributions like any other; only when OPH > PH do the outermost
    OPH - PH of them get b alone.
    Computed as y = col2im(X Wm) + b with X = x channels-last (N*H*W, C),
    one GEMM (fused with col2im: kernels/conv_gemm.py). Returns
    ``(y, cache)``, y channels-last in memory; the cache holds X and Wm.
    ``relu=True``: max(y, 0), as in :func:`conv2d_forward`.
    """
    op = "ConvTranspose2d"
    stride = as_pair(op, "stride", stride, 1)
    padding = as_pair(op, "padding", padding, 0)
    output_padding = as_pair(op, "output_padding", output_padding, 0)
    if output_padding[0] >= stride[0] or output_padding[1] >= stride[1]:
        raise ValueError(f"{op}: expected output_padding smaller than stride {stride}, "
                         f"got {output_padding}")
    C, O, KH, KW = _check_weight(op, W)
    check_shape(op, "input", x, (None, C, None, None))
    check_float(op, "input", x, W.dtype)
    _check_bias(op, b, O, W.dtype)
    N, _, H, Wd = x.shape
    OH = (H - 1) * stride[0] - 2 * padding[0] + KH + output_padding[0]
    OW = (Wd - 1) * stride[1] - 2 * padding[1] + KW + output_padding[1]
    _check_output(op, (OH, OW), (H, Wd), (KH, KW), stride, padding)
    X = _channels_last(x).reshape(N * H * Wd, C)
    Wm = _weight_matrix(W)
    y = conv_transposed_product(X, Wm, (N, OH, OW, O), (KH, KW), stride, padding, bias=b,
                                relu=relu)
    return _nchw_view(y), (X, Wm, tuple(W.shape), (N, C, H, Wd), (N, O, OH, OW),
                           stride, padding)


def conv_transpose2d_backward(dy, cache, need_dx=True, input_relu=False):
    """Gradients given dy = dL/dy of shape (N, O, OH, OW) (any memory layout).

    Forward: y = col2im(Z) + b with Z = X Wm, X (N*H*W, C), Wm (C, KH*KW*O).
    The adjoint of col2im is im2col, so dZ = im2col(dy) (N*H*W, KH*KW*O);
    then, as for a linear layer Z = X Wm:

    - dWm = X^T dZ                        (one GEMM; dW is dWm rearranged)
    - dX  = dZ Wm^T = im2col(dy) Wm^T, i.e. dx = conv2d(dy; W) (same
      weight, no bias: the very product conv2d_forward computes)
    - db  = sum of dy over n, h, w

    ``input_relu=True``: x is a ReLU's output; dL/du = dx 1[X > 0] is
    returned instead, as in :func:`conv2d_backward`. ``need_dx=False`` skips
    dx (returned as None), e.g. for a first layer. Returns ``(dx, dW, db)``;
    dx is channels-last in memory.
    """
    X, Wm, w_shape, x_shape, y_shape, stride, padding = cache
    C, O, KH, KW = w_shape
    check_shape("ConvTranspose2d.backward", "upstream gradient", dy, y_shape)
    check_float("ConvTranspose2d.backward", "upstream gradient", dy, Wm.dtype)
    N, _, H, Wd = x_shape
    dy_nhwc = _channels_last(dy)
    db = _column_sums(dy_nhwc.reshape(-1, O))
    dx = None
    if need_dx:   # conv2d(dy; W), the product conv2d_forward computes, and dWm at once
        dX, dWm = conv_forward_and_weight_products(dy_nhwc, Wm, X, (KH, KW), stride, padding,
                                                   relu_output=X if input_relu else None)
        dx = _nchw_view(dX.reshape(N, H, Wd, C))
    else:
        dWm = conv_weight_product(dy_nhwc, X, (KH, KW), stride, padding)
    return dx, _weight_from_matrix(dWm, w_shape), db


def conv_transpose2d_init(rng, in_channels, out_channels, kernel_size, dtype, bias=True):
    """PyTorch's default ``nn.ConvTranspose2d`` initialisation.

    The weight has shape (in, out, KH, KW), and PyTorch computes its fan-in
    from dimension 1: fan_in = out_channels*KH*KW (not in_channels). Weight
    and bias are drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), W first.
    """
    kh, kw = as_pair("ConvTranspose2d", "kernel_size", kernel_size, 1)
    bound = 1.0 / (out_channels * kh * kw) ** 0.5
    W = rng.uniform(-bound, bound, size=(in_channels, out_channels, kh, kw)).astype(dtype)
    b = rng.uniform(-bound, bound, size=(out_channels,)).astype(dtype) if bias else None
    return W, b

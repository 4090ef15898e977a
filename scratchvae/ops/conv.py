"""2-D convolution and transposed convolution, PyTorch layouts and semantics.

Shapes (no groups, no dilation):

- Conv2d:          x (N, C, H, W),  W (O, C, KH, KW),  b (O,)  ->  y (N, O, OH, OW)
                   OH = (H + 2 PH - KH) // SH + 1   (likewise OW)
- ConvTranspose2d: x (N, C, H, W),  W (C, O, KH, KW),  b (O,)  ->  y (N, O, OH, OW)
                   OH = (H - 1) SH - 2 PH + KH + OPH   (likewise OW)

Both are one matrix product plus a data rearrangement (kernels/im2col.py):

    Conv2d:          y = W2 @ im2col(x) + b          W2 = W.reshape(O, C*KH*KW)
    ConvTranspose2d: y = col2im(W2^T @ X2) + b       W2 = W.reshape(C, O*KH*KW)

where X2 is x with channels first, shape (C, N*H*W). ``col2im`` is the
adjoint of ``im2col``, so the two ops are adjoint to each other (without
bias, for the same weight W of shape (A, B, KH, KW)):

    <conv2d(x; W), y> = <x, conv_transpose2d(y; W)>.

This is why each backward reuses the other op's forward: the input gradient
of a convolution is a transposed convolution of dy with the same weight, and
vice versa. 1x1 convolutions (kernel 1, stride 1, padding 0) skip im2col:
their columns are just X2.

Column layout: (C*KH*KW, N*OH*OW), see kernels/im2col.py for why. Every
matrix product below is a single GEMM whose long dimension is N*OH*OW (or
N*H*W); the only other passes are block transposes between (N, C, L) and
(C, N, L) with unit-stride runs of L = H*W, one of them fused with the bias.
"""
import numpy as np

from kernels.im2col import col2im, conv_output_size, im2col

from ..backend import check_float, check_shape, get_xp


# --------------------------------------------------------------------------
# argument handling and validation
# --------------------------------------------------------------------------

def as_pair(op, name, value, minimum):
    """An int or a pair of ints -> (h, w), each >= minimum."""
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


def _is_pointwise(kernel, stride, padding):
    return kernel == (1, 1) and stride == (1, 1) and padding == (0, 0)


# --------------------------------------------------------------------------
# layout helpers: (N, C, H, W) <-> (C, N*H*W)
# --------------------------------------------------------------------------

def _channels_first(x):
    """(N, C, H, W) -> a new C-contiguous (C, N*H*W) array (block transpose)."""
    N, C, H, W = x.shape
    xp = get_xp(x)
    return xp.ascontiguousarray(x.reshape(N, C, H * W).transpose(1, 0, 2)).reshape(C, N * H * W)


def _channels_second(y2, N, H, W, b=None):
    """(C, N*H*W) -> a new C-contiguous (N, C, H, W) array, plus b[c] if given.

    The bias add is fused into the transposing copy, so it costs no extra pass.
    """
    xp = get_xp(y2)
    C = y2.shape[0]
    y = xp.empty((N, C, H, W), dtype=y2.dtype)
    src = y2.reshape(C, N, H * W).transpose(1, 0, 2)
    if b is None:
        y.reshape(N, C, H * W)[...] = src
    else:
        xp.add(src, b.reshape(1, C, 1), out=y.reshape(N, C, H * W))
    return y


def _columns(x, kernel, stride, padding):
    """im2col(x) as (C*KH*KW, N*OH*OW); for a 1x1 convolution just x channels-first."""
    if _is_pointwise(kernel, stride, padding):
        return _channels_first(x)
    return im2col(get_xp(x).ascontiguousarray(x), kernel, stride, padding)


def _image(cols, x_shape, kernel, stride, padding):
    """col2im(cols) into ``x_shape``; for a 1x1 convolution a transposing copy."""
    N, C, H, W = x_shape
    if _is_pointwise(kernel, stride, padding):
        return _channels_second(cols, N, H, W)
    return col2im(cols, x_shape, kernel, stride, padding)


# --------------------------------------------------------------------------
# the transposed-convolution product, shared by two passes
# --------------------------------------------------------------------------

def _conv_transpose_product(x2, W, out_shape, stride, padding):
    """col2im(W2^T @ x2): a transposed convolution without bias.

    x2 is the input channels-first, (C, N*H*W); W is (C, O, KH, KW);
    the result has shape ``out_shape`` = (N, O, OH, OW).
    """
    C, O, KH, KW = W.shape
    cols = W.reshape(C, O * KH * KW).T @ x2   # (O*KH*KW, N*H*W), one GEMM
    return _image(cols, out_shape, (KH, KW), stride, padding)


# --------------------------------------------------------------------------
# Conv2d
# --------------------------------------------------------------------------

def conv2d_forward(x, W, b=None, stride=1, padding=0):
    """y[n, o, p, q] = b[o] + sum_{c,i,j} W[o, c, i, j] x[n, c, p*SH + i - PH, q*SW + j - PW]

    (x read as 0 outside the image). x (N, C, H, W), W (O, C, KH, KW),
    b (O,) or None; ``stride`` and ``padding`` are ints or (h, w) pairs.
    Computed as y2 = W2 @ X with X = im2col(x) of shape (C*KH*KW, N*OH*OW).
    Returns ``(y, cache)``; the cache holds X (needed for dW) and W.
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
    cols = _columns(x, (KH, KW), stride, padding)    # (C*KH*KW, N*OH*OW)
    y2 = W.reshape(O, C * KH * KW) @ cols             # (O, N*OH*OW), one GEMM
    y = _channels_second(y2, N, OH, OW, b)
    return y, (cols, W, tuple(x.shape), stride, padding)


def conv2d_backward(dy, cache, need_dx=True):
    """Gradients given dy = dL/dy of shape (N, O, OH, OW).

    Forward: Y2 = W2 X + b 1^T, with X = im2col(x) (C*KH*KW, N*OH*OW) and
    Y2 = y channels-first (O, N*OH*OW). As for a linear layer:

    - dW2 = dY2 X^T                       (one GEMM; dW = dW2 reshaped)
    - db  = dY2 1  = sum of dy over n, p, q
    - dX  = W2^T dY2, and since X = im2col(x) is linear in x, the input
      gradient is its adjoint applied to dX:  dx = col2im(W2^T dY2),
      which is exactly conv_transpose2d(dy; W) (same weight, no bias).

    ``need_dx=False`` skips dx (returned as None), e.g. for a first layer.
    Returns ``(dx, dW, db)``.
    """
    cols, W, x_shape, stride, padding = cache
    O, C, KH, KW = W.shape
    N, _, H, Wd = x_shape
    OH = conv_output_size(H, KH, stride[0], padding[0])
    OW = conv_output_size(Wd, KW, stride[1], padding[1])
    check_shape("Conv2d.backward", "upstream gradient", dy, (N, O, OH, OW))
    check_float("Conv2d.backward", "upstream gradient", dy, W.dtype)
    dy2 = _channels_first(dy)                         # (O, N*OH*OW)
    db = dy2.sum(axis=1)
    dW = (dy2 @ cols.T).reshape(W.shape)
    dx = _conv_transpose_product(dy2, W, x_shape, stride, padding) if need_dx else None
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
# ConvTranspose2d
# --------------------------------------------------------------------------

def conv_transpose2d_forward(x, W, b=None, stride=1, padding=0, output_padding=0):
    """The adjoint of Conv2d (its input gradient), plus a bias:

        y[n, o, h, w] = b[o] + sum over c, i, j, p, q with p*SH + i - PH = h,
                        q*SW + j - PW = w  of  x[n, c, p, q] W[c, o, i, j]

    x (N, C, H, W), W (C, O, KH, KW), b (O,) or None; output size
    OH = (H - 1) SH - 2 PH + KH + OPH, where ``output_padding`` OPH < SH only
    adds rows at the bottom/right that no input reaches (they get b).
    Computed as y = col2im(W2^T X2) + b with X2 = x channels-first.
    Returns ``(y, cache)``; the cache holds X2 (needed for dW) and W.
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
    x2 = _channels_first(x)                           # (C, N*H*W)
    y = _conv_transpose_product(x2, W, (N, O, OH, OW), stride, padding)
    if b is not None:
        y += b.reshape(1, O, 1, 1)
    return y, (x2, W, (N, C, H, Wd), (N, O, OH, OW), stride, padding)


def conv_transpose2d_backward(dy, cache, need_dx=True):
    """Gradients given dy = dL/dy of shape (N, O, OH, OW).

    Forward: y = col2im(Z) + b with Z = W2^T X2, W2 (C, O*KH*KW), X2 (C, N*H*W).
    The adjoint of col2im is im2col, so dZ = im2col(dy) (O*KH*KW, N*H*W); then,
    as for a linear layer Z = W2^T X2:

    - dW2 = X2 dZ^T                       (one GEMM; dW = dW2 reshaped)
    - dX2 = W2 dZ = W2 im2col(dy), i.e. dx = conv2d(dy; W) (same weight,
      no bias: the very product conv2d_forward computes)
    - db  = sum of dy over n, h, w

    ``need_dx=False`` skips dx (returned as None), e.g. for a first layer.
    Returns ``(dx, dW, db)``.
    """
    x2, W, x_shape, y_shape, stride, padding = cache
    C, O, KH, KW = W.shape
    check_shape("ConvTranspose2d.backward", "upstream gradient", dy, y_shape)
    check_float("ConvTranspose2d.backward", "upstream gradient", dy, W.dtype)
    N, _, H, Wd = x_shape
    dcols = _columns(dy, (KH, KW), stride, padding)   # im2col(dy), (O*KH*KW, N*H*W)
    db = dy.reshape(N, O, -1).sum(axis=2).sum(axis=0)
    dW = (x2 @ dcols.T).reshape(W.shape)
    dx = None
    if need_dx:
        dx2 = W.reshape(C, O * KH * KW) @ dcols        # conv2d(dy; W), channels-first
        dx = _channels_second(dx2, N, H, Wd)
    return dx, dW, db


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

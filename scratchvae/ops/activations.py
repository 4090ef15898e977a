"""Elementwise activations. Each backward multiplies the upstream gradient
by the derivative f'(x), written in terms of whatever the forward cached.

Shapes: any; the output has the input's shape, except for the gate, which
maps (N, 2C, ...) to (N, C, ...).

Registry entries (gradient checks, generated tests, docs/derivations.md):
scratchvae/gradcheck/elementwise.py.
"""
import kernels
from kernels.sigmoid import sigmoid

from ..backend import check_float, check_same, check_shape, get_xp


def relu_forward(x, inplace=False):
    """y = max(x, 0).  Caches y (y > 0 exactly where x > 0).

    Computed by the one-pass kernel ``kernels.relu_forward`` (reference:
    ``xp.maximum(x, 0)``). ``inplace``: y overwrites x, which saves an array
    and a pass over memory; only for an x that nothing else holds (the fresh
    output of a linear or convolution layer), as with PyTorch's
    ``ReLU(inplace=True)``.
    """
    check_float("ReLU", "input", x)
    y = kernels.relu_forward(x, out=x if inplace else None)
    return y, y


def relu_backward(dy, y):
    """dx = dy * 1[x > 0]; the kink at 0 gets derivative 0 (PyTorch's choice).

    Computed by the one-pass kernel ``kernels.relu_backward`` (its reference
    is this formula as a selection, dy where y > 0 else 0, with 1[x > 0] =
    1[y > 0]), which also checks that dy matches y in shape and dtype."""
    return kernels.relu_backward(dy, y)


def leaky_relu_forward(x, negative_slope=0.01):
    """y = x if x > 0 else a x.  Caches the mask x > 0, the slope a and x's dtype."""
    check_float("LeakyReLU", "input", x)
    positive = x > 0
    y = get_xp(x).where(positive, x, negative_slope * x)
    return y, (positive, negative_slope, x.dtype)


def leaky_relu_backward(dy, cache):
    """dx = dy * (1 if x > 0 else a)."""
    positive, slope, dtype = cache
    check_shape("LeakyReLU.backward", "upstream gradient", dy, positive.shape)
    check_float("LeakyReLU.backward", "upstream gradient", dy, dtype)
    return get_xp(dy).where(positive, dy, slope * dy)


def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)), computed without overflow.  Caches y.

    For x >= 0 use 1 / (1 + e^-x); for x < 0 use e^x / (1 + e^x): the
    exponent is never positive, so exp never overflows.
    """
    check_float("Sigmoid", "input", x)
    y = sigmoid(x)
    return y, y


def sigmoid_backward(dy, y):
    """sigma'(x) = sigma(x) (1 - sigma(x)), so dx = dy * y (1 - y)."""
    check_same("Sigmoid.backward", "output", y, "upstream gradient", dy)
    return dy * y * (1 - y)


def tanh_forward(x):
    """y = tanh(x).  Caches y."""
    check_float("Tanh", "input", x)
    y = get_xp(x).tanh(x)
    return y, y


def tanh_backward(dy, y):
    """tanh'(x) = 1 - tanh(x)^2, so dx = dy * (1 - y^2), computed in one array
    (y^2, then 1 - y^2, then times dy, each in place)."""
    check_same("Tanh.backward", "output", y, "upstream gradient", dy)
    dx = y * y
    get_xp(y).subtract(1, dx, out=dx)
    dx *= dy
    return dx


def gated_forward(x):
    """y = tanh(a) * sigmoid(b), a = x[:, :C], b = x[:, C:], for x of shape
    (N, 2C, ...); y has shape (N, C, ...).  Caches x.

    Computed by the kernel ``kernels.gated_forward`` (y in x's memory
    layout; on the CPU NumPy's vectorised tanh and exp written in place, on
    CUDA one fused pass; reference: ``tanh(a) * sigmoid(b)`` in plain xp).
    """
    check_float("Gate", "input", x)
    if x.ndim < 2 or x.shape[1] % 2:
        raise ValueError(f"Gate: expected input of shape (N, 2C, ...), an even number of "
                         f"channels, got {tuple(x.shape)}")
    return kernels.gated_forward(x), x


def gated_backward(dy, x):
    """With t = tanh(a), s = sigmoid(b): tanh'(a) = 1 - t^2 and
    sigmoid'(b) = s (1 - s), and y = t s, so by the product rule

        dL/da = dy * s * (1 - t^2),     dL/db = dy * t * s * (1 - s),

    and dx = [dL/da, dL/db] along the channels (x's shape and layout).
    Computed by the kernel ``kernels.gated_backward``, which recomputes t
    and s from the cached x (on CUDA in the same fused pass)."""
    check_float("Gate.backward", "upstream gradient", dy, x.dtype)
    check_shape("Gate.backward", "upstream gradient", dy,
                (x.shape[0], x.shape[1] // 2, *x.shape[2:]))
    return kernels.gated_backward(dy, x)

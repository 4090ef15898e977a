"""Modules around the dense, activation and shape ops.

Each module's forward keeps the op's cache on ``self.cache``; backward hands
it back to the op. Derivations live in the op docstrings (scratchvae/ops).
"""
import numpy as np

from ..backend import check_int, check_rng
from ..ops import activations as A
from ..ops import shape as S
from ..ops.linear import linear_backward, linear_forward, linear_init
from .base import Module, Parameter


class Linear(Module):
    """y = x W^T + b with W of shape (out, in), initialised as PyTorch does.

    ``forward(x, relu=True)``: max(y, 0), the ReLU after it taken with the bias
    (:class:`Sequential`'s fusion).
    """

    fuses_relu_after = True

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32):
        in_features = check_int("Linear", "in_features", in_features, 1)
        out_features = check_int("Linear", "out_features", out_features, 1)
        check_rng("Linear", rng)
        W, b = linear_init(rng, in_features, out_features, dtype, bias)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(W)
        self.bias = Parameter(b) if bias else None
        self.input_grad = True  # False: backward skips dL/dx and returns None
        self.cache = None

    def forward(self, x, relu=False):
        y, self.cache = linear_forward(x, self.weight.data,
                                       None if self.bias is None else self.bias.data,
                                       relu=relu)
        return y

    def backward(self, dy):
        """dL/dx; dW and db written into the parameters' free gradient buffers
        (Parameter.grad_buffer) or new arrays, and accumulated."""
        dx, dW, db = linear_backward(
            dy, self.forward_cache(), need_dx=self.input_grad,
            dW_out=self.weight.grad_buffer(),
            db_out=None if self.bias is None else self.bias.grad_buffer())
        self.weight.accumulate(dW)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features})"


class _Activation(Module):
    """An elementwise op pair without parameters."""

    _forward = _backward = None

    def __init__(self):
        self.cache = None

    def forward(self, x):
        y, self.cache = type(self)._forward(x)
        return y

    def backward(self, dy):
        return type(self)._backward(dy, self.forward_cache())

    def __repr__(self):
        return f"{type(self).__name__}()"


class ReLU(Module):
    """y = max(x, 0). ``inplace=True``: y overwrites x (see ops.activations.relu_forward);
    use it only where x is a fresh layer output that nothing else holds."""

    def __init__(self, inplace=False):
        self.inplace = bool(inplace)
        self.cache = None

    def forward(self, x):
        y, self.cache = A.relu_forward(x, inplace=self.inplace)
        return y

    def backward(self, dy):
        return A.relu_backward(dy, self.forward_cache())

    def record_output(self, y):
        """Keep y = max(x, 0), computed by the layer before in this ReLU's place
        (:class:`Sequential`'s fusion), for the backward."""
        self.cache = y

    def __repr__(self):
        return "ReLU(inplace=True)" if self.inplace else "ReLU()"


class Sigmoid(_Activation):
    _forward, _backward = A.sigmoid_forward, A.sigmoid_backward


class Tanh(_Activation):
    _forward, _backward = A.tanh_forward, A.tanh_backward


class Gate(_Activation):
    """y = tanh(x[:, :C]) * sigmoid(x[:, C:]) for x of shape (N, 2C, ...):
    the gated activation of a gated PixelCNN (ops.activations.gated_forward)."""

    _forward, _backward = A.gated_forward, A.gated_backward


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        self.negative_slope = negative_slope
        self.cache = None

    def forward(self, x):
        y, self.cache = A.leaky_relu_forward(x, self.negative_slope)
        return y

    def backward(self, dy):
        return A.leaky_relu_backward(dy, self.forward_cache())

    def __repr__(self):
        return f"LeakyReLU({self.negative_slope})"


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...).  ``backward(dy, input_relu=True)``: the
    gradient through the ReLU before it, in the same copy (:class:`Sequential`)."""

    fuses_relu_before = True

    def __init__(self):
        self.cache = None

    def forward(self, x):
        y, self.cache = S.flatten_forward(x)
        return y

    def backward(self, dy, input_relu=False):
        return S.flatten_backward(dy, self.forward_cache(), input_relu=input_relu)

    def __repr__(self):
        return "Flatten()"


class Reshape(Module):
    """(N, ...) -> (N, *shape).  ``backward(dy, input_relu=True)``: as Flatten's."""

    fuses_relu_before = True

    def __init__(self, *shape):
        self.shape = tuple(shape)
        self.cache = None

    def forward(self, x):
        y, self.cache = S.reshape_forward(x, self.shape)
        return y

    def backward(self, dy, input_relu=False):
        return S.reshape_backward(dy, self.forward_cache(), input_relu=input_relu)

    def __repr__(self):
        return f"Reshape{self.shape}"


class Concat(Module):
    """Concatenate a list of arrays along ``axis``; backward returns a list."""

    def __init__(self, axis=1):
        self.axis = axis
        self.cache = None

    def forward(self, xs):
        y, self.cache = S.concat_forward(list(xs), self.axis)
        return y

    def backward(self, dy):
        return S.concat_backward(dy, self.forward_cache())

    def __repr__(self):
        return f"Concat(axis={self.axis})"


class Sequential(Module):
    """Modules applied in order; backward visits them in reverse order.

    A ReLU next to a layer that can do its work runs inside that layer, with
    the same values bit for bit (``fuse_relu``, on by default):

    - a ReLU after a layer that ``fuses_relu_after`` (the convolutions, Linear):
      the layer's forward applies max(., 0) to its output while it is in cache
      (a convolution's product epilogue, Linear's bias pass); the ReLU keeps
      that output for its backward as if it had made it;
    - a ReLU before a layer that ``fuses_relu_before`` (the convolutions,
      Flatten, Reshape): the layer's backward returns the gradient through the
      ReLU, dL/du = dL/dx 1[x > 0] with x (the ReLU's output) its own cached
      input, and the ReLU's backward is skipped.

    Each fusion saves one pass over an activation and one array.
    """

    def __init__(self, *layers, fuse_relu=True):
        self.layers = list(layers)
        self.fuse_relu = bool(fuse_relu)

    def _relu_at(self, k):
        return (self.fuse_relu and 0 <= k < len(self.layers)
                and isinstance(self.layers[k], ReLU))

    def forward(self, x):
        i = 0
        while i < len(self.layers):
            layer = self.layers[i]
            if self._relu_at(i + 1) and getattr(layer, "fuses_relu_after", False):
                x = layer.forward(x, relu=True)
                self.layers[i + 1].record_output(x)
                i += 2
            else:
                x = layer.forward(x)
                i += 1
        return x

    def backward(self, dy):
        i = len(self.layers) - 1
        while i >= 0:
            layer = self.layers[i]
            if (self._relu_at(i - 1) and getattr(layer, "fuses_relu_before", False)
                    and getattr(layer, "input_grad", True)):
                dy = layer.backward(dy, input_relu=True)
                i -= 2
            else:
                dy = layer.backward(dy)
                i -= 1
            if dy is None:  # a layer that was told not to compute dL/dx
                return None
        return dy

    def no_input_grad(self):
        """Skip dL/dinput: the first layer with parameters computes only their
        gradients (layers before it have none). Use on a network's first block."""
        for layer in self.layers:
            if hasattr(layer, "input_grad"):
                layer.input_grad = False
                return self
            if layer.parameters():
                raise ValueError(f"no_input_grad: {layer!r} has parameters but cannot skip "
                                 f"its input gradient")
        return self

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __repr__(self):
        inner = "\n".join(f"  ({i}) {layer!r}".replace("\n", "\n  ")
                          for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"

"""Convolution modules around the op pairs of scratchvae/ops/conv.py.

Layouts, initialisation and output sizes are PyTorch's (``nn.Conv2d``,
``nn.ConvTranspose2d`` without groups or dilation). Derivations live in the
op docstrings.

``input_grad``: set it to False on a module whose input needs no gradient
(the first layer of a network, fed with data); its backward then skips the
input-gradient product and returns None.

``fuses_relu_after``, ``fuses_relu_before``: Conv2d and ConvTranspose2d
take ``forward(x, relu=True)`` (a ReLU applied to the output in the product's
epilogue) and ``backward(dy, input_relu=True)`` (the gradient carried back
through the ReLU whose output x is): :class:`~scratchvae.layers.dense.Sequential`
uses them for the ReLUs next to a convolution.
"""
import numpy as np

from ..backend import check_int, check_rng, get_xp
from ..ops.conv import (as_pair, conv2d_backward, conv2d_forward, conv2d_init,
                        conv_transpose2d_backward, conv_transpose2d_forward,
                        conv_transpose2d_init, masked_conv2d_backward, masked_conv2d_forward,
                        pixelcnn_mask)
from .base import Module, Parameter


class Conv2d(Module):
    """y = conv2d(x; W) + b with W (out, in, KH, KW) and b (out,)."""

    fuses_relu_after = fuses_relu_before = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 bias=True, rng=None, dtype=np.float32):
        self.in_channels = check_int("Conv2d", "in_channels", in_channels, 1)
        self.out_channels = check_int("Conv2d", "out_channels", out_channels, 1)
        self.kernel_size = as_pair("Conv2d", "kernel_size", kernel_size, 1)
        self.stride = as_pair("Conv2d", "stride", stride, 1)
        self.padding = as_pair("Conv2d", "padding", padding, 0)
        check_rng("Conv2d", rng)
        W, b = conv2d_init(rng, self.in_channels, self.out_channels, self.kernel_size, dtype,
                           bias)
        self.weight = Parameter(W)
        self.bias = Parameter(b) if bias else None
        self.input_grad = True
        self.cache = None

    def forward(self, x, relu=False):
        y, self.cache = conv2d_forward(x, self.weight.data,
                                       None if self.bias is None else self.bias.data,
                                       self.stride, self.padding, relu=relu)
        return y

    def backward(self, dy, input_relu=False):
        dx, dW, db = conv2d_backward(dy, self.forward_cache(), need_dx=self.input_grad,
                                     input_relu=input_relu)
        self.weight.accumulate(dW)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def __repr__(self):
        return (f"Conv2d({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None})")


class MaskedConv2d(Module):
    """y = conv2d(x; W * M) + b: a PixelCNN convolution of ``mask_type`` "A" or "B".

    W (out, in, KH, KW), b (out,) initialised as Conv2d's (the whole W is
    drawn; the entries outside the mask M are multiplied by 0 in the forward
    and get a gradient of 0, so they never change).
    The mask M = ``pixelcnn_mask(mask_type, out, in, KH, KW)`` is a constant
    of the module, not a parameter. Stride 1; ``padding`` defaults to
    (KH // 2, KW // 2), which keeps the image size and puts the kernel's
    centre on the output pixel.
    """

    def __init__(self, in_channels, out_channels, kernel_size, mask_type, padding=None,
                 bias=True, rng=None, dtype=np.float32):
        op = "MaskedConv2d"
        self.in_channels = check_int(op, "in_channels", in_channels, 1)
        self.out_channels = check_int(op, "out_channels", out_channels, 1)
        self.kernel_size = as_pair(op, "kernel_size", kernel_size, 1)
        self.mask_type = mask_type
        mask = pixelcnn_mask(mask_type, self.out_channels, self.in_channels,
                             *self.kernel_size, dtype=dtype)
        kh, kw = self.kernel_size
        self.padding = as_pair(op, "padding", (kh // 2, kw // 2) if padding is None
                               else padding, 0)
        check_rng(op, rng)
        W, b = conv2d_init(rng, self.in_channels, self.out_channels, self.kernel_size, dtype,
                           bias)
        self.weight = Parameter(W)
        self.bias = Parameter(b) if bias else None
        self.mask = mask
        self.input_grad = True
        self.cache = None

    def forward(self, x):
        W = self.weight.data
        if self.mask.dtype != W.dtype or type(self.mask) is not type(W):
            self.mask = self._mask_like(W)      # after astype() or a move to the GPU
        y, self.cache = masked_conv2d_forward(x, W, self.mask,
                                              None if self.bias is None else self.bias.data,
                                              1, self.padding)
        return y

    def _mask_like(self, W):
        """The mask in W's array module and dtype."""
        return get_xp(W).asarray(pixelcnn_mask(self.mask_type, self.out_channels,
                                               self.in_channels, *self.kernel_size,
                                               dtype=W.dtype))

    def backward(self, dy):
        dx, dW, db = masked_conv2d_backward(dy, self.forward_cache(), need_dx=self.input_grad)
        self.weight.accumulate(dW)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def __repr__(self):
        return (f"MaskedConv2d({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, mask_type={self.mask_type!r}, "
                f"padding={self.padding}, bias={self.bias is not None})")


class ConvTranspose2d(Module):
    """y = conv_transpose2d(x; W) + b with W (in, out, KH, KW) and b (out,)."""

    fuses_relu_after = fuses_relu_before = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, bias=True, rng=None, dtype=np.float32):
        op = "ConvTranspose2d"
        self.in_channels = check_int(op, "in_channels", in_channels, 1)
        self.out_channels = check_int(op, "out_channels", out_channels, 1)
        self.kernel_size = as_pair(op, "kernel_size", kernel_size, 1)
        self.stride = as_pair(op, "stride", stride, 1)
        self.padding = as_pair(op, "padding", padding, 0)
        self.output_padding = as_pair(op, "output_padding", output_padding, 0)
        check_rng(op, rng)
        W, b = conv_transpose2d_init(rng, self.in_channels, self.out_channels,
                                     self.kernel_size, dtype, bias)
        self.weight = Parameter(W)
        self.bias = Parameter(b) if bias else None
        self.input_grad = True
        self.cache = None

    def forward(self, x, relu=False):
        y, self.cache = conv_transpose2d_forward(
            x, self.weight.data, None if self.bias is None else self.bias.data,
            self.stride, self.padding, self.output_padding, relu=relu)
        return y

    def backward(self, dy, input_relu=False):
        dx, dW, db = conv_transpose2d_backward(dy, self.forward_cache(), need_dx=self.input_grad,
                                               input_relu=input_relu)
        self.weight.accumulate(dW)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def __repr__(self):
        return (f"ConvTranspose2d({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, output_padding={self.output_padding}, "
                f"bias={self.bias is not None})")

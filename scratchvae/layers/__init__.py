"""Modules: parameters plus the op pairs of scratchvae.ops."""
from .base import Module, Parameter
from .dense import (Concat, Flatten, LeakyReLU, Linear, ReLU, Reshape, Sequential,
                    Sigmoid, Tanh)

__all__ = ["Module", "Parameter", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
           "Flatten", "Reshape", "Concat", "Sequential"]
try:  # the convolution modules (kept separate: they need the im2col kernels)
    from .conv import Conv2d, ConvTranspose2d  # noqa: F401
    __all__ += ["Conv2d", "ConvTranspose2d"]
except ImportError:  # pragma: no cover - while conv.py is being written
    pass

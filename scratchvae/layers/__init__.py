"""Modules: parameters plus the op pairs of scratchvae.ops."""
from .base import Module, Parameter
from .dense import (Concat, Flatten, LeakyReLU, Linear, ReLU, Reshape, Sequential,
                    Sigmoid, Tanh)

__all__ = ["Module", "Parameter", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh",
           "Flatten", "Reshape", "Concat", "Sequential"]
from .conv import Conv2d, ConvTranspose2d

__all__ += ["Conv2d", "ConvTranspose2d"]

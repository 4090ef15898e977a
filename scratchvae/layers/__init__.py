"""Modules: parameters plus the op pairs of scratchvae.ops."""
from .base import Module, Parameter
from .conv import Conv2d, ConvTranspose2d, MaskedConv2d
from .dense import (Concat, Flatten, Gate, LeakyReLU, Linear, ReLU, Reshape, Sequential,
                    Sigmoid, Tanh)
from .embedding import ClassBias, Embedding

__all__ = ["Module", "Parameter", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Gate",
           "Flatten", "Reshape", "Concat", "Sequential", "Conv2d", "ConvTranspose2d",
           "MaskedConv2d", "Embedding", "ClassBias"]

"""Registry entries of Conv2d and ConvTranspose2d (scratchvae/ops/conv.py).

The cases cover a small grid of configurations: stride > 1, padding,
rectangular kernels and images, output_padding, 1x1 (the im2col-free
path), with and without bias, and every CPU strategy of the fused products
(kernels/conv_gemm.py: index tables for images of at most TABLE_CHANNELS = 3
channels; above, window classes when padded, runs of KW*C values when not;
the image is x for Conv2d, y for ConvTranspose2d), so that each op's forward
and backward is checked through all three (tests/test_conv.py counts the
kernel calls). Convolutions are linear in each argument, so the
central difference is exact up to round-off: a correct backward lands at
1e-8 to 1e-10, while a wrong one (a missing kernel flip, a factor 2) is
off by O(1).
"""
import numpy as np
from kernels import conv_gemm
from kernels.im2col import col2im_reference, im2col_reference

from ..layers import Flatten, Linear, ReLU, Reshape, Sequential
from ..layers.conv import Conv2d, ConvTranspose2d
from ..ops import conv as C
from .core import check_module
from .problems import Problem
from .spec import Case, Check, OpSpec

#: (N, C, H, W, O, kernel, stride, padding, bias)
CONV2D_CASES = (
    (2, 3, 7, 6, 4, (3, 2), (2, 1), (1, 0), True),   # rectangular, mixed stride/padding
    (3, 2, 8, 7, 3, 4, 2, 1, True),                  # the conv-VAE shape, small
    (1, 2, 5, 6, 2, 3, 3, 2, False),                 # padding > kernel/2, stride 3, no bias
    (2, 3, 4, 5, 2, 1, 1, 0, True),                  # 1x1: no im2col
    (2, 5, 6, 5, 4, (3, 2), 2, 1, True),             # C = 5 > TABLE_CHANNELS: window classes
    (2, 5, 6, 5, 4, (3, 2), 2, 0, True),             # C = 5, no padding: the run kernels
)

#: (N, C, H, W, O, kernel, stride, padding, output_padding, bias)
CONV_TRANSPOSE2D_CASES = (
    (2, 3, 4, 3, 2, (3, 2), (2, 3), (1, 0), (1, 2), True),   # rectangular, output_padding
    (2, 3, 3, 4, 2, 4, 2, 1, 0, True),                       # the conv-VAE shape, small
    (1, 2, 3, 3, 3, 3, 3, 2, 1, False),                      # stride 3, padding 2, no bias
    (2, 3, 4, 5, 2, 1, 1, 0, 0, True),                       # 1x1: no col2im
    (2, 4, 3, 3, 5, (3, 2), 2, 1, 1, True),                  # O = 5: window classes
    (2, 4, 3, 3, 5, (3, 2), 2, 0, 1, True),                  # O = 5, no padding: the runs
)


def _pair(k):
    return (k, k) if np.isscalar(k) else k


def _conv2d_case(case):
    N, C_in, H, W, O, k, s, p, bias = case

    def make(rng):
        kh, kw = _pair(k)
        return Problem({"x": rng.standard_normal((N, C_in, H, W)),
                        "W": rng.standard_normal((O, C_in, kh, kw)),
                        "b": rng.standard_normal(O) if bias else None,
                        "stride": s, "padding": p}, ("x", "W", "b" if bias else None))
    return Case(f"conv2d op N={N} C={C_in} {H}x{W} O={O} k={k} s={s} p={p} bias={bias}", make)


def _conv_transpose2d_case(case):
    N, C_in, H, W, O, k, s, p, op, bias = case

    def make(rng):
        kh, kw = _pair(k)
        return Problem({"x": rng.standard_normal((N, C_in, H, W)),
                        "W": rng.standard_normal((C_in, O, kh, kw)),
                        "b": rng.standard_normal(O) if bias else None,
                        "stride": s, "padding": p, "output_padding": op},
                       ("x", "W", "b" if bias else None))
    return Case(f"conv_transpose2d op N={N} C={C_in} {H}x{W} O={O} k={k} s={s} p={p} "
                f"op={op} bias={bias}", make)


def _module_check(name, build, x_shape):
    """The Module ``build(rng)`` (built first) on a float64 input of ``x_shape``."""
    def run(rng):
        module = build(rng)
        return check_module(name, module, rng.standard_normal(x_shape), rng=rng)
    return Check(name, run)


KERNELS = (conv_gemm.conv_forward_product, conv_gemm.conv_transposed_product,
           conv_gemm.conv_weight_product, conv_gemm.conv_forward_and_weight_products)
REFERENCES = (conv_gemm.conv_forward_product_reference,
              conv_gemm.conv_transposed_product_reference,
              conv_gemm.conv_weight_product_reference, im2col_reference, col2im_reference)
TESTS = ("tests/test_conv.py", "tests/test_kernels_conv_gemm.py", "tests/test_kernels_im2col.py")


def _fused_relu_stack(rng):
    """Every ReLU next to a convolution, fused by Sequential: after a Conv2d
    (columns from the index tables) and a ConvTranspose2d (col2im's runs, O = 4);
    before a Conv2d (col2im's tables, C = 3), a ConvTranspose2d (the runs, dy of
    4 channels) and a 1x1 Conv2d (no columns)."""
    kw = dict(rng=rng, dtype=np.float64)
    return Sequential(Conv2d(2, 3, 3, stride=2, padding=1, **kw), ReLU(inplace=True),
                      Conv2d(3, 5, (3, 2), padding=1, **kw), ReLU(),
                      ConvTranspose2d(5, 4, 4, stride=2, padding=1, **kw), ReLU(inplace=True),
                      Conv2d(4, 3, 1, **kw))


def _fused_relu_dense_stack(rng):
    """The ReLUs next to the dense and shape layers, fused by Sequential: after a
    Linear (with its bias) and a 1x1 Conv2d; before a Reshape (its gradient
    arriving channels-last from the convolution) and a Flatten (of a
    channels-last ReLU output)."""
    kw = dict(rng=rng, dtype=np.float64)
    return Sequential(Linear(5, 24, **kw), ReLU(inplace=True), Reshape(4, 3, 2),
                      Conv2d(4, 3, 1, **kw), ReLU(inplace=True), Flatten(), Linear(18, 3, **kw))


SPECS = (
    OpSpec(
        "conv2d", C.conv2d_forward, C.conv2d_backward,
        cases=tuple(_conv2d_case(c) for c in CONV2D_CASES),
        checks=(_module_check("Conv2d(3, 4, (3, 2), stride=(2, 1), padding=1)",
                              lambda rng: Conv2d(3, 4, (3, 2), stride=(2, 1), padding=1,
                                                 rng=rng, dtype=np.float64), (2, 3, 6, 5)),
                _module_check("Sequential(Conv2d, ReLU, Conv2d, ReLU, ConvTranspose2d, ReLU, "
                              "Conv2d 1x1), ReLUs fused", _fused_relu_stack, (2, 2, 6, 5)),
                _module_check("Sequential(Linear, ReLU, Reshape, Conv2d 1x1, ReLU, Flatten, "
                              "Linear), ReLUs fused", _fused_relu_dense_stack, (3, 5))),
        implementations=("reference", "cpu", "cuda"), kernels=KERNELS, references=REFERENCES,
        derivation=C, wrapper=Conv2d, tests=TESTS),
    OpSpec(
        "conv_transpose2d", C.conv_transpose2d_forward, C.conv_transpose2d_backward,
        cases=tuple(_conv_transpose2d_case(c) for c in CONV_TRANSPOSE2D_CASES),
        checks=(_module_check("ConvTranspose2d(3, 2, 4, stride=2, padding=1, output_padding=1)",
                              lambda rng: ConvTranspose2d(3, 2, 4, stride=2, padding=1,
                                                          output_padding=1, rng=rng,
                                                          dtype=np.float64), (2, 3, 3, 4)),),
        implementations=("reference", "cpu", "cuda"), kernels=KERNELS, references=REFERENCES,
        derivation=C, wrapper=ConvTranspose2d, tests=TESTS),
)

"""Float64 gradient checks of the convolution ops and modules.

``CONV_CHECKS`` lists central-difference checks (scratchvae.gradcheck)
over a small grid of configurations: stride > 1, padding, rectangular
kernels and images, output_padding, 1x1 (the im2col-free path), with and
without bias, and on both sides of the channel count that picks the CPU
strategy of im2col/col2im (kernels/im2col.py: index tables for images of
at most TABLE_CHANNELS = 3 channels, runs of KW*C values above; the image
is x for Conv2d, y for ConvTranspose2d), so that each op's forward and
backward is checked through both (tests/test_conv.py counts the kernel
calls). Convolutions are linear in each argument, so the central
difference is exact up to round-off: a correct backward lands at 1e-8 to
1e-10, inside the smooth tolerance 1e-7, while a wrong one (a missing
kernel flip, a factor 2) is off by O(1).
"""
import numpy as np

from .gradcheck import check_module, check_op
from .layers.conv import Conv2d, ConvTranspose2d
from .ops.conv import (conv2d_backward, conv2d_forward, conv_transpose2d_backward,
                       conv_transpose2d_forward)

TOL = 1e-7

#: (N, C, H, W, O, kernel, stride, padding, bias)
CONV2D_CASES = [
    (2, 3, 7, 6, 4, (3, 2), (2, 1), (1, 0), True),   # rectangular, mixed stride/padding
    (3, 2, 8, 7, 3, 4, 2, 1, True),                  # the conv-VAE shape, small
    (1, 2, 5, 6, 2, 3, 3, 2, False),                 # padding > kernel/2, stride 3, no bias
    (2, 3, 4, 5, 2, 1, 1, 0, True),                  # 1x1: no im2col
    (2, 5, 6, 5, 4, (3, 2), 2, 1, True),             # C = 5 > TABLE_CHANNELS: the run kernels
]

#: (N, C, H, W, O, kernel, stride, padding, output_padding, bias)
CONV_TRANSPOSE2D_CASES = [
    (2, 3, 4, 3, 2, (3, 2), (2, 3), (1, 0), (1, 2), True),   # rectangular, output_padding
    (2, 3, 3, 4, 2, 4, 2, 1, 0, True),                       # the conv-VAE shape, small
    (1, 2, 3, 3, 3, 3, 3, 2, 1, False),                      # stride 3, padding 2, no bias
    (2, 3, 4, 5, 2, 1, 1, 0, 0, True),                       # 1x1: no col2im
    (2, 4, 3, 3, 5, (3, 2), 2, 1, 1, True),                  # O = 5: the run kernels
]


def _conv2d_name(case):
    N, C, H, W, O, k, s, p, bias = case
    return f"conv2d op N={N} C={C} {H}x{W} O={O} k={k} s={s} p={p} bias={bias}"


def _conv_transpose2d_name(case):
    N, C, H, W, O, k, s, p, op, bias = case
    return (f"conv_transpose2d op N={N} C={C} {H}x{W} O={O} k={k} s={s} p={p} "
            f"op={op} bias={bias}")


def _conv2d_op_check(rng, case):
    N, C, H, W, O, k, s, p, bias = case
    kh, kw = (k, k) if np.isscalar(k) else k
    inputs = {"x": rng.standard_normal((N, C, H, W)),
              "W": rng.standard_normal((O, C, kh, kw)),
              "b": rng.standard_normal(O) if bias else None,
              "stride": s, "padding": p}
    names = ("x", "W", "b" if bias else None)
    return check_op(_conv2d_name(case), conv2d_forward, conv2d_backward, inputs, names, rng=rng, tol=TOL)


def _conv_transpose2d_op_check(rng, case):
    N, C, H, W, O, k, s, p, op, bias = case
    kh, kw = (k, k) if np.isscalar(k) else k
    inputs = {"x": rng.standard_normal((N, C, H, W)),
              "W": rng.standard_normal((C, O, kh, kw)),
              "b": rng.standard_normal(O) if bias else None,
              "stride": s, "padding": p, "output_padding": op}
    names = ("x", "W", "b" if bias else None)
    return check_op(_conv_transpose2d_name(case), conv_transpose2d_forward,
                    conv_transpose2d_backward, inputs, names, rng=rng, tol=TOL)


def _conv2d_module_check(rng):
    conv = Conv2d(3, 4, (3, 2), stride=(2, 1), padding=1, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 3, 6, 5))
    return check_module("Conv2d(3, 4, (3, 2), stride=(2, 1), padding=1)", conv, x,
                        rng=rng, tol=TOL)


def _conv_transpose2d_module_check(rng):
    deconv = ConvTranspose2d(3, 2, 4, stride=2, padding=1, output_padding=1, rng=rng,
                             dtype=np.float64)
    x = rng.standard_normal((2, 3, 3, 4))
    return check_module("ConvTranspose2d(3, 2, 4, stride=2, padding=1, output_padding=1)",
                        deconv, x, rng=rng, tol=TOL)


#: catalogue entries (name, fn(rng) -> GradcheckResult), merged into scratchvae.checks
CONV_CHECKS = (
    [(_conv2d_name(c), lambda rng, c=c: _conv2d_op_check(rng, c)) for c in CONV2D_CASES]
    + [(_conv_transpose2d_name(c), lambda rng, c=c: _conv_transpose2d_op_check(rng, c))
       for c in CONV_TRANSPOSE2D_CASES]
    + [("Conv2d(3, 4, (3, 2), stride=(2, 1), padding=1)", _conv2d_module_check),
       ("ConvTranspose2d(3, 2, 4, stride=2, padding=1, output_padding=1)",
        _conv_transpose2d_module_check)])


def conv_checks(rng):
    """All convolution gradient checks; returns a list of GradcheckResult."""
    return [fn(rng) for _, fn in CONV_CHECKS]

"""The logistic sigmoid, evaluated stably: the one formula behind every
sigmoid of the project.

    sigmoid(x) = 1 / (1 + exp(-x))

``exp(-x)`` overflows for very negative x (below about -88 in float32), so
both forms below take e = exp(-|x|), which lies in (0, 1], and use

    sigmoid(x) = 1 / (1 + e)     for x >= 0,
    sigmoid(x) = e / (1 + e)     for x < 0    (numerator and denominator times e^x).

Neither divides by anything that overflows.

- :func:`sigmoid` works on arrays, in plain ``xp`` (NumPy or CuPy): the
  Sigmoid activation, the losses' gradient, the BCE reference and the
  models' mean images use it.
- :func:`sigmoid_of_exp` works on one number, given e (the BCE kernels
  compute e once for the loss and the gradient), in float64;
  :func:`sigmoid_of_exp_as` is the same formula in the type of its argument
  ``one`` (the gated kernels pass 1 in the array's dtype, so that float32
  stays float32). Both are ``numba.extending.register_jitable`` functions:
  ``@njit`` compiles them into the CPU kernels, ``numba.cuda`` into the CUDA
  kernels, and under the CUDA simulator they run as the Python functions
  they are.

This is a formula, not a kernel: there is nothing to dispatch.
"""
from numba.extending import register_jitable

from ._arrays import get_xp


def sigmoid(x):
    """sigmoid(x) elementwise, stable for any finite x; x's shape and dtype."""
    xp = get_xp(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


@register_jitable
def sigmoid_of_exp(x, e):
    """sigmoid(x) of one number, given e = exp(-|x|)."""
    return sigmoid_of_exp_as(x, e, 1.0)


@register_jitable
def sigmoid_of_exp_as(x, e, one):
    """sigmoid(x) of one number, given e = exp(-|x|), in the type of ``one`` (= 1)."""
    return (one if x >= 0 else e) / (one + e)

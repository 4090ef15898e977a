"""What the generated tests do with one op spec and one problem, on NumPy or
on the CuPy stand-in: prepare the inputs (dtype, array module, memory
layout), run forward and backward with a random upstream gradient, and
check that neither changes an input or the upstream gradient. Used by
tests/test_op_specs.py and, under the CUDA simulator, tests/op_specs_cuda.py.
"""
import numpy as np

from scratchvae.backend import to_numpy
from scratchvae.gradcheck.problems import LAYOUTS, is_float_array


def prepared(inputs, dtype, layout, xp=np):
    """Float arrays cast to ``dtype``, every array moved to ``xp``, the float
    arrays laid out in ``layout`` (a name of LAYOUTS); options as they are."""
    out = {}
    for key, value in inputs.items():
        if hasattr(value, "dtype"):
            value = xp.asarray(value.astype(dtype) if is_float_array(value) else value)
            if is_float_array(value) and value.ndim:
                value = LAYOUTS[layout](value)
        out[key] = value
    return out


def _snapshot(values):
    return {k: to_numpy(v).copy() for k, v in values.items() if hasattr(v, "dtype")}


def _unchanged(before, values):
    return [k for k, v in before.items()
            if not np.array_equal(v, to_numpy(values[k]), equal_nan=True)]


def evaluate(spec, inputs, wrt, layout, xp=np, seed=1):
    """``(out, grads)``: forward on ``inputs``, then backward on a random,
    non-uniform upstream gradient (drawn in float64 from ``seed``, cast to
    out's dtype, moved to ``xp``, laid out in ``layout``); grads by the names
    of ``wrt``. Asserts that no input and not the upstream gradient changed."""
    forward, backward = spec.pair()
    before = _snapshot(inputs)
    out, cache = forward(**inputs)
    dy_values = np.random.default_rng(seed).standard_normal(out.shape)
    dy = LAYOUTS[layout](xp.asarray(dy_values.astype(out.dtype)))
    dy_before = to_numpy(dy).copy()
    grads = backward(dy, cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    assert len(grads) == len(wrt), f"{spec.name}: {len(grads)} gradients for {wrt}"
    changed = _unchanged(before, inputs)
    assert not changed, f"{spec.name}: forward or backward modified its input(s) {changed}"
    assert np.array_equal(dy_before, to_numpy(dy)), f"{spec.name}: backward modified dy"
    return out, {k: g for k, g in zip(wrt, grads) if k is not None}

"""The fused gated activation (kernels.gated) against its references: odd
shapes, both dtypes, C-order and channels-last, large inputs, the reference
path, bad shapes; the CUDA kernels on the GPU tests' backend (tests/gpu_backend.py).

Kernel and reference agree to a few units of the dtype's rounding, not bit
for bit: the CUDA kernels call the device's scalar tanh and exp, the
reference NumPy's (or CuPy's) vectorised ones, and the CPU kernel NumPy's
over other strides. The forward is compared relatively (8 units in the last
place). The backward is compared to 8 eps * |dy| in absolute value: its
factors 1 - t^2 and 1 - s cancel where |a| or b is large, so one unit of
difference in t or s is a large relative difference there, but never more
than a few eps times |dy|.
"""
import textwrap

import numba
import numpy as np
import pytest
from numba import njit
from numba.core.types import UniTuple

import kernels
import kernels.gated as kgated
from kernels._dispatch import ENV_VAR
from kernels.sigmoid import sigmoid
from scratchvae.layers.dense import Gate
from scratchvae.ops import activations as A
from gpu_backend import run_on_gpu

DTYPES = [np.float32, np.float64]
SHAPES = [(1, 2, 1, 1), (3, 10, 7, 5), (2, 6, 1, 3), (5, 2), (4, 14)]


@pytest.fixture(autouse=True)
def _auto_dispatch(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def _channels_last(a):
    """An NCHW-shaped view of a C-contiguous NHWC copy of ``a``."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _inputs(shape, dtype, layout, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal((shape[0], shape[1] // 2, *shape[2:])).astype(dtype)
    if layout == "channels-last":
        x, dy = _channels_last(x), _channels_last(dy)
    return x, dy


def assert_forward_close(y, want):
    assert y.dtype == want.dtype and y.shape == want.shape
    np.testing.assert_allclose(y, want, rtol=8 * np.finfo(y.dtype).eps, atol=0)


def assert_backward_close(dx, want, dy):
    assert dx.dtype == want.dtype and dx.shape == want.shape
    bound = 8 * np.finfo(dx.dtype).eps * np.concatenate([abs(dy), abs(dy)], axis=1)
    worst = np.max(np.abs(dx - want) - bound)
    assert worst <= 0, f"dx off by more than 8 eps |dy| (excess {worst:.2e})"


def _spy(monkeypatch, name):
    """The calls that reach the Numba CPU kernel ``name``."""
    calls = []
    real = getattr(kgated, name)

    def spy(*args):
        calls.append(args[0].shape)
        return real(*args)
    monkeypatch.setattr(kgated, name, spy)
    return calls


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, layout", [(shape, layout) for shape in SHAPES
                                           for layout in ("C", "channels-last")
                                           if layout == "C" or len(shape) == 4])
def test_kernels_match_the_references_and_keep_the_layout(shape, layout, dtype, monkeypatch):
    forward_calls = _spy(monkeypatch, "_gated_forward_cpu")
    backward_calls = _spy(monkeypatch, "_gated_backward_cpu")
    x, dy = _inputs(shape, dtype, layout)
    y = kernels.gated_forward(x)
    assert_forward_close(y, kgated.gated_forward_reference(x))
    dx = kernels.gated_backward(dy, x)
    assert_backward_close(dx, kgated.gated_backward_reference(dy, x), dy)
    assert y.strides == dy.strides and dx.strides == x.strides        # x's layout
    assert len(forward_calls) == len(backward_calls) == 1             # the kernels ran


def test_both_layouts_give_the_same_bits():
    x, dy = _inputs((3, 8, 5, 4), np.float32, "C")
    xc, dyc = _channels_last(x), _channels_last(dy)
    np.testing.assert_array_equal(kernels.gated_forward(xc), kernels.gated_forward(x))
    np.testing.assert_array_equal(kernels.gated_backward(dyc, xc), kernels.gated_backward(dy, x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_inputs_saturate_without_overflow_or_nan(dtype, monkeypatch):
    """tanh -> +-1, sigmoid -> 0 or 1 (exp(-|b|) underflows, never overflows);
    the gradients -> 0 (or a subnormal) where a factor saturates."""
    big = np.array([1e4, -1e4, -1e30, 1e30, 100.0, -100.0], dtype)
    a = np.array([1e30, -1e30, 1e4, 0.5, -1e4, 1e30], dtype)
    x = np.concatenate([a, big]).reshape(1, 12, 1, 1).repeat(2, axis=0)
    want_y = np.tanh(a.astype(np.float64)) * (big.astype(np.float64) > 0)
    tiny = 1e-30                          # sigmoid(-100) = 3.7e-44
    dy = np.ones((2, 6, 1, 1), dtype)
    for impl in ("cpu", "reference"):
        if impl == "reference":
            monkeypatch.setenv(ENV_VAR, "reference")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            y = kernels.gated_forward(x)
            dx = kernels.gated_backward(dy, x)
        assert np.isfinite(y).all() and np.isfinite(dx).all(), impl
        np.testing.assert_allclose(y[0, :, 0, 0], want_y, rtol=1e-6, atol=tiny)
        assert np.all(np.abs(dx[:, 6:]) <= tiny), impl           # s (1 - s) ~ 0
        da = dx[0, :6, 0, 0]
        assert np.all(np.abs(da[[0, 1, 2, 4, 5]]) <= tiny), impl  # 1 - t^2 = 0, or s ~ 0
        np.testing.assert_allclose(da[3], 1 - np.tanh(0.5) ** 2, rtol=1e-6)


def test_reference_path_when_asked(monkeypatch):
    forward_calls = _spy(monkeypatch, "_gated_forward_cpu")
    backward_calls = _spy(monkeypatch, "_gated_backward_cpu")
    monkeypatch.setenv(ENV_VAR, "reference")
    x, dy = _inputs((2, 6, 3, 4), np.float32, "C")
    np.testing.assert_array_equal(kernels.gated_forward(x), kgated.gated_forward_reference(x))
    np.testing.assert_array_equal(kernels.gated_backward(dy, x),
                                  kgated.gated_backward_reference(dy, x))
    assert forward_calls == backward_calls == []


@pytest.mark.parametrize("case", ["mixed layouts", "strided slice"])
def test_other_inputs_take_the_reference(case, monkeypatch):
    backward_calls = _spy(monkeypatch, "_gated_backward_cpu")
    x, dy = _inputs((4, 6, 5, 3), np.float64, "C")
    if case == "mixed layouts":            # dy channels-last, x C-order
        dy = _channels_last(dy)
    else:
        x, dy = x[:, :, ::2], dy[:, :, ::2]
    np.testing.assert_array_equal(kernels.gated_backward(dy, x),
                                  kgated.gated_backward_reference(dy, x))
    assert backward_calls == []


def test_bad_shapes_name_the_op():
    x = np.zeros((2, 5, 3, 3), np.float32)                    # an odd channel count
    with pytest.raises(ValueError, match=r"Gate: expected input of shape \(N, 2C, ...\)"):
        A.gated_forward(x)
    with pytest.raises(ValueError, match=r"gated_forward: .*even number of channels"):
        kernels.gated_forward(x)
    with pytest.raises(ValueError, match="gated_forward"):
        kernels.gated_forward(np.zeros(4, np.float32))
    x = np.zeros((2, 6, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"Gate.backward: expected upstream gradient of "
                                         r"shape \(2, 3, 3, 3\), got \(2, 6, 3, 3\)"):
        A.gated_backward(x, x)
    with pytest.raises(ValueError, match=r"gated_backward: .*dtype float32"):
        kernels.gated_backward(np.zeros((2, 3, 3, 3)), x)
    with pytest.raises(ValueError, match="Gate: expected input of dtype float32 or float64"):
        Gate().forward(np.zeros((2, 6), np.int64))


def test_module_and_ops_use_the_kernels():
    x, dy = _inputs((2, 6, 3, 4), np.float32, "channels-last")
    gate = Gate()
    with pytest.raises(RuntimeError, match=r"^Gate\.backward: call forward first$"):
        gate.backward(dy)
    np.testing.assert_array_equal(gate.forward(x), kernels.gated_forward(x))
    np.testing.assert_array_equal(gate.backward(dy), kernels.gated_backward(dy, x))
    assert repr(gate) == "Gate()"


def test_float32_is_computed_in_float32():
    """The formulas of one pair, compiled for float32 operands, return float32:
    no step is promoted to float64 (as it would be with a float64 literal 1.0)."""
    gate = njit(lambda a, b, one: kgated._gate(a, b, one))
    grads = njit(lambda dy, a, b, one: kgated._gate_grads(dy, a, b, one))
    f32 = np.float32
    gate(f32(0.3), f32(-0.2), f32(1))
    grads(f32(1), f32(0.3), f32(-0.2), f32(1))
    assert gate.nopython_signatures[-1].return_type == numba.float32
    assert grads.nopython_signatures[-1].return_type == UniTuple(numba.float32, 2)
    gate(f32(0.3), f32(-0.2), 1.0)                         # the check can fail
    assert gate.nopython_signatures[-1].return_type == numba.float64


# the comparisons catch a wrong kernel ------------------------------------------

def _wrong_backward_cpu(dy, x, dx, one):
    """db without its factor (1 - s): dy t s."""
    t, s = np.tanh(x[:, 0]), sigmoid(x[:, 1])
    dx[:, 0] = dy * s * (one - t * t)
    dx[:, 1] = dy * s * t


def _wrong_forward_cpu(x, y, one):
    """The halves swapped: sigmoid(a) tanh(b)."""
    y[...] = sigmoid(x[:, 0]) * np.tanh(x[:, 1])


def test_a_wrong_kernel_is_caught(monkeypatch):
    x, dy = _inputs((3, 10, 7, 5), np.float32, "C")
    monkeypatch.setattr(kgated, "_gated_backward_cpu", _wrong_backward_cpu)
    with pytest.raises(AssertionError, match="dx off by more than 8 eps"):
        assert_backward_close(kernels.gated_backward(dy, x),
                              kgated.gated_backward_reference(dy, x), dy)
    monkeypatch.setattr(kgated, "_gated_forward_cpu", _wrong_forward_cpu)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_forward_close(kernels.gated_forward(x), kgated.gated_forward_reference(x))


GPU_SCRIPT = textwrap.dedent("""
    import numpy as np
    import gpu_backend
    gpu_backend.check_child()   # the simulator on the stand-in, or a real GPU
    import kernels.gated as G
    from kernels._dispatch import scalar

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        eps = np.finfo(dtype).eps
        for shape in [(3, 10, 7, 5), (1, 2, 1, 1), (5, 2)]:    # 525 pairs: > 128 threads
            x = (3 * rng.standard_normal(shape)).astype(dtype)
            x.flat[:4] = 1e30, -1e30, 1e4, -1e4
            dy = rng.standard_normal((shape[0], shape[1] // 2, *shape[2:])).astype(dtype)
            pairs = x.reshape(shape[0], 2, -1)                 # C-order: (N, 2, C*H*W)
            y = np.empty((shape[0], pairs.shape[2]), dtype)
            G._gated_forward_cuda(pairs, y, scalar(1, dtype))
            want = G.gated_forward_reference(x).reshape(y.shape)
            np.testing.assert_allclose(y, want, rtol=8 * eps, atol=0)
            dx = np.empty_like(pairs)
            G._gated_backward_cuda(dy.reshape(y.shape), pairs, dx, scalar(1, dtype))
            want = G.gated_backward_reference(dy, x).reshape(dx.shape)
            bound = 8 * eps * np.abs(dy.reshape(y.shape))[:, None, :]
            assert dx.dtype == dtype and np.isfinite(dx).all()
            assert (np.abs(dx - want) <= bound).all(), np.max(np.abs(dx - want) - bound)
    print("GPU OK")
""")


@pytest.mark.gpu
def test_cuda_kernels_on_the_gpu_backend():
    run_on_gpu(GPU_SCRIPT)

"""The one-pass ReLU forward and backward (kernels.relu) against their
references, on every layout the engine produces, in place and not; the bias
added with the ReLU (``add_bias``); the CUDA kernels on the GPU tests' backend
(tests/gpu_backend.py)."""
import textwrap

import numpy as np
import pytest

import kernels
import kernels.relu as krelu
from kernels._dispatch import ENV_VAR
from gpu_backend import run_on_gpu

DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True)
def _auto_dispatch(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def _channels_last(a):
    """An NCHW-shaped view of a C-contiguous NHWC copy of ``a``."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _pair(rng, shape, dtype, layout):
    y = np.maximum(rng.standard_normal(shape), 0).astype(dtype)
    y.flat[::7] = 0.0                     # exact zeros: the kink gets gradient 0
    dy = rng.standard_normal(shape).astype(dtype)
    if layout == "channels-last":
        y, dy = _channels_last(y), _channels_last(dy)
    return dy, y


def _count_calls(monkeypatch, name):
    """The sizes of the calls that reach the Numba CPU kernel ``name``."""
    calls = []
    real = getattr(krelu, name)

    def spy(*args):
        calls.append(args[0].size)
        return real(*args)
    monkeypatch.setattr(krelu, name, spy)
    return calls


@pytest.fixture
def kernel_calls(monkeypatch):
    return _count_calls(monkeypatch, "_relu_backward_cpu")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["C", "channels-last"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 5, 7, 2), (16, 32, 14, 14)])
def test_kernel_matches_reference_and_keeps_the_layout(shape, layout, dtype, kernel_calls):
    dy, y = _pair(np.random.default_rng(0), shape, dtype, layout)
    dx = kernels.relu_backward(dy, y)
    np.testing.assert_array_equal(dx, krelu.relu_backward_reference(dy, y))
    assert dx.dtype == dtype and dx.strides == y.strides
    assert kernel_calls == [dy.size]      # the kernel ran, not the reference


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_and_reference_select_without_multiplying(dtype, kernel_calls):
    """Where y <= 0 the gradient is +0 whatever dy is (PyTorch's threshold_backward):
    dy * (y > 0) would give NaN for a NaN or infinite dy, and -0 for a negative one."""
    y = np.array([0.0, 0.0, 0.0, -0.0, 2.0, 3.0], dtype=dtype)
    dy = np.array([np.nan, np.inf, -1.0, -np.inf, -5.0, np.nan], dtype=dtype)
    for dx in (kernels.relu_backward(dy, y), krelu.relu_backward_reference(dy, y)):
        assert dx.dtype == dtype
        np.testing.assert_array_equal(dx[:4], 0.0)
        assert not np.signbit(dx[:4]).any()
        assert dx[4] == -5.0 and np.isnan(dx[5])
    assert kernel_calls == [dy.size]


def test_two_dimensional_and_one_dimensional(kernel_calls):
    rng = np.random.default_rng(1)
    for shape in [(129, 785), (5,)]:
        dy, y = _pair(rng, shape, np.float32, "C")
        np.testing.assert_array_equal(kernels.relu_backward(dy, y), dy * (y > 0))
    assert len(kernel_calls) == 2


@pytest.mark.parametrize("shape", [(2, 1, 4, 3), (1, 1, 5, 2)])
def test_layouts_differing_only_on_size_one_axes_take_the_kernel(shape, kernel_calls):
    """Strides of a size-1 axis do not matter: C-order and channels-last arrays
    with C == 1 enumerate their elements alike."""
    rng = np.random.default_rng(3)
    dy, y = _pair(rng, shape, np.float32, "C")
    N, C, H, W = shape
    y_cl = np.empty((N, H, W, C), dtype=y.dtype).transpose(0, 3, 1, 2)   # NHWC memory
    y_cl[...] = y
    assert y_cl.strides != y.strides
    np.testing.assert_array_equal(kernels.relu_backward(dy, y_cl), dy * (y > 0))
    assert len(kernel_calls) == 1


@pytest.mark.parametrize("case", ["mixed layouts", "strided slice", "reference forced"])
def test_other_inputs_take_the_reference(case, kernel_calls, monkeypatch):
    rng = np.random.default_rng(2)
    dy, y = _pair(rng, (4, 6, 5, 3), np.float64, "C")
    if case == "mixed layouts":           # same shape, different memory orders
        y = _channels_last(y)
    elif case == "strided slice":
        dy, y = dy[:, ::2], y[:, ::2]
    else:
        monkeypatch.setenv(ENV_VAR, "reference")
    dx = kernels.relu_backward(dy, y)
    np.testing.assert_array_equal(dx, dy * (y > 0))
    assert kernel_calls == []


def test_comparison_detects_a_wrong_mask():
    dy, y = _pair(np.random.default_rng(3), (8, 9), np.float32, "C")
    wrong = dy * (y >= 0)                 # lets the gradient through at the kink
    assert not np.array_equal(kernels.relu_backward(dy, y), wrong)


def test_bad_inputs_are_refused():
    y = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="expected upstream gradient of shape"):
        kernels.relu_backward(np.zeros((3, 2), np.float32), y)
    with pytest.raises(ValueError, match="dtype float32"):
        kernels.relu_backward(np.zeros((2, 3)), y)
    with pytest.raises(ValueError, match="relu_backward"):
        kernels.relu_backward(np.zeros((2, 3), np.int64), np.zeros((2, 3), np.int64))


@pytest.fixture
def forward_calls(monkeypatch):
    return _count_calls(monkeypatch, "_relu_forward_cpu")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["C", "channels-last"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 5, 7, 2), (16, 32, 14, 14)])
def test_forward_matches_reference_in_place_or_not(shape, layout, dtype, forward_calls):
    x, _ = _pair(np.random.default_rng(4), shape, dtype, layout)
    x = x - 0.5 * np.abs(x).mean()                         # negatives too, same layout
    if layout == "channels-last":
        x = _channels_last(x)
    expected = krelu.relu_forward_reference(x)
    y = kernels.relu_forward(x)
    np.testing.assert_array_equal(y, expected)
    assert y.dtype == dtype and y.strides == x.strides and not np.shares_memory(x, y)
    z = kernels.relu_forward(x, out=x)                      # in place
    assert z is x
    np.testing.assert_array_equal(x, expected)
    assert forward_calls == [x.size, x.size]               # the kernel ran, twice


def test_forward_keeps_nan_and_gives_plus_zero(forward_calls):
    """As np.maximum(x, 0) and torch.relu: NaN propagates, -0 and negatives give +0."""
    x = np.array([np.nan, -0.0, -1.0, 0.0, 2.5, np.inf, -np.inf], np.float32)
    for y in (kernels.relu_forward(x), krelu.relu_forward_reference(x)):
        assert np.isnan(y[0]) and not np.signbit(y[1:]).any()
        np.testing.assert_array_equal(y[1:], [0, 0, 0, 2.5, np.inf, 0])
    assert forward_calls == [x.size]


def test_forward_comparison_detects_a_wrong_kernel():
    """A kernel written as v if v > 0 else 0 (NaN -> 0) differs from the reference."""
    x = np.array([np.nan, 1.0], np.float32)
    wrong = np.where(x > 0, x, 0)
    assert not np.array_equal(kernels.relu_forward(x), wrong, equal_nan=True)


def test_forward_other_inputs_take_the_reference(forward_calls):
    x = np.random.default_rng(5).standard_normal((6, 8))[:, ::2]       # strided
    np.testing.assert_array_equal(kernels.relu_forward(x), np.maximum(x, 0))
    assert forward_calls == []
    with pytest.raises(ValueError, match="expected out=None or out=x"):
        kernels.relu_forward(np.ones(3), out=np.ones(3))
    with pytest.raises(ValueError, match="relu_forward"):
        kernels.relu_forward(np.ones(3, np.int64))


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_bias_is_the_add_then_the_relu_bit_for_bit(dtype, relu, monkeypatch):
    """y += b, then relu_forward in place: the same bits (NaN kept, -0 and
    negatives to +0, infinities), in place, on the kernel and on the reference."""
    rng = np.random.default_rng(6)
    y = rng.standard_normal((7, 9)).astype(dtype)
    b = rng.standard_normal(9).astype(dtype)
    y[0, :4] = np.nan, -b[1], -1e30, np.inf               # NaN; a sum of -0 or +0; -inf + b
    b[3] = -np.inf                                        # inf - inf: NaN
    want = y.copy()
    with np.errstate(invalid="ignore"):                   # inf - inf, on purpose
        want += b
    if relu:
        want = kernels.relu_forward(want)
    calls = []
    real = krelu._add_bias_cpu
    monkeypatch.setattr(krelu, "_add_bias_cpu", lambda *a: calls.append(1) or real(*a))
    for forced in (False, True):
        if forced:
            monkeypatch.setenv(ENV_VAR, "reference")
        got = y.copy()
        with np.errstate(invalid="ignore"):
            assert kernels.add_bias(got, b, relu=relu) is got
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    assert calls == [1]                                   # the kernel once, then the reference


def test_add_bias_refuses_what_it_cannot_add():
    y = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"add_bias: expected y \(N, O\) and a bias \(O,\)"):
        kernels.add_bias(y, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="expected a bias of dtype float32, got float64"):
        kernels.add_bias(y, np.zeros(4))
    with pytest.raises(ValueError, match="add_bias"):
        kernels.add_bias(np.zeros((3, 4), np.int64), np.zeros(4, np.int64))
    strided = np.zeros((3, 8), np.float32)[:, ::2]        # the reference, in place
    kernels.add_bias(strided, np.ones(4, np.float32), relu=True)
    np.testing.assert_array_equal(strided, np.ones((3, 4)))


GPU_SCRIPT = textwrap.dedent("""
    import numpy as np
    import gpu_backend
    gpu_backend.check_child()   # the simulator on the stand-in, or a real GPU
    from kernels.relu import _relu_backward_cuda, _relu_forward_cuda

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        y = np.maximum(rng.standard_normal(300), 0).astype(dtype)   # > 128 threads
        dy = rng.standard_normal(300).astype(dtype)
        dx = np.empty_like(dy)
        _relu_backward_cuda(dy, y, dx)
        np.testing.assert_array_equal(dx, dy * (y > 0))
        x = rng.standard_normal(300).astype(dtype)
        x[:3] = np.nan, -0.0, -1.0
        out = np.empty_like(x)
        _relu_forward_cuda(x, out)
        np.testing.assert_array_equal(out, np.maximum(x, 0))
        assert not np.signbit(out[1])
    print("GPU OK")
""")


@pytest.mark.gpu
def test_cuda_kernel_on_the_gpu_backend():
    run_on_gpu(GPU_SCRIPT)

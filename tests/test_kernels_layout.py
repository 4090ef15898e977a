"""kernels.layout.ascontiguous against np.ascontiguousarray: the layouts the
engine copies between (channels-last <-> C order, each image a transposed
matrix), other strides, both dtypes, edge sizes; what goes to NumPy instead."""
import numpy as np
import pytest

import kernels.layout as klayout
from kernels._dispatch import ENV_VAR
from kernels.relu import relu_backward_reference


@pytest.fixture(autouse=True)
def _auto_dispatch(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def kernel_calls(monkeypatch):
    """(kernel, source shape) of each call of the two CPU kernels."""
    calls = []

    def spied(name):
        real = getattr(klayout, name)

        def spy(src, dst, gate, gated):
            calls.append((name, src.shape))
            return real(src, dst, gate, gated)
        return spy
    for name in ("_transpose_cpu", "_copy_cpu"):
        monkeypatch.setattr(klayout, name, spied(name))
    return calls


def _views(dtype):
    a = np.random.default_rng(0).standard_normal((5, 7, 6, 9)).astype(dtype)
    wide = np.zeros((5, 7 * 6 * 9 + 3), dtype)       # images a block of a wider matrix
    wide[:, :378] = a.reshape(5, -1)
    return {"channels-last as NCHW": np.ascontiguousarray(a.transpose(0, 2, 3, 1))
            .transpose(0, 3, 1, 2),
            "NCHW as NHWC": a.transpose(0, 2, 3, 1),
            "rows of a wider matrix as NHWC": wide[:, :378].reshape(5, 7, 6, 9)
            .transpose(0, 2, 3, 1),
            "reversed and sliced": a[::-1, 1:, ::2, ::3],
            "Fortran order": np.asfortranarray(a)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(_views(np.float32)))
def test_copies_equal_numpys(name, dtype, kernel_calls):
    view = _views(dtype)[name]
    assert not view.flags.c_contiguous
    out = klayout.ascontiguous(view)
    assert out.flags.c_contiguous and out.dtype == dtype and not np.shares_memory(out, view)
    np.testing.assert_array_equal(out, np.ascontiguousarray(view))
    N, d1, d2, d3 = view.shape
    images = {"channels-last as NCHW": ("_transpose_cpu", (N, d2 * d3, d1)),   # (H*W, C)
              "NCHW as NHWC": ("_transpose_cpu", (N, d3, d1 * d2)),            # (C, H*W)
              "rows of a wider matrix as NHWC": ("_transpose_cpu", (N, d3, d1 * d2))}
    assert kernel_calls == [images.get(name, ("_copy_cpu", view.shape))]


def _relu_output(shape, dtype, rng):
    """A ReLU's output: zeros, positives, a NaN (which passes no gradient either)."""
    y = np.maximum(rng.standard_normal(shape), 0).astype(dtype)
    y[0, 0, 0, :3] = (0, np.nan, 2)
    return y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(_views(np.float32)) + ["C order"])
def test_copies_through_a_relu_are_relu_backward_bit_for_bit(name, dtype, kernel_calls):
    """relu_output y: a where y > 0, else 0, as kernels.relu's backward gives it from
    the plain copy (NaN and infinite gradients where y <= 0 give 0), in the copy's pass."""
    rng = np.random.default_rng(3)
    a = (_views(dtype)[name] if name != "C order"
         else rng.standard_normal((5, 7, 6, 9)).astype(dtype))
    y = _relu_output(a.shape, dtype, rng)            # y[0, 0, 0, :3] = 0, NaN, 2
    a[0, 0, 0, 0], a[0, 0, 0, 1] = np.inf, np.nan    # where y is 0 and NaN: dx = 0
    got = klayout.ascontiguous(a, relu_output=y)
    want = relu_backward_reference(np.ascontiguousarray(a), y)
    assert got.flags.c_contiguous and got.dtype == dtype and got is not a
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    kernels = {"reversed and sliced": ["_copy_cpu"], "Fortran order": ["_copy_cpu"],
               "C order": []}                          # kernels.relu's backward alone
    assert [kernel for kernel, _ in kernel_calls] == kernels.get(name, ["_transpose_cpu"])


def test_a_copy_through_a_relu_checks_the_relu_output():
    a = np.ones((2, 3, 4, 5), np.float32).transpose(0, 2, 3, 1)
    with pytest.raises(ValueError, match=r"expected relu_output of shape \(2, 4, 5, 3\)"):
        klayout.ascontiguous(a, relu_output=np.ones((2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match="expected relu_output of dtype float32"):
        klayout.ascontiguous(a, relu_output=np.ones(a.shape))


@pytest.mark.parametrize("shape", [(3, 1, 4, 5), (3, 4, 5, 1), (3, 2, 1, 1), (0, 2, 3, 4),
                                   (1, 3, 2, 2)])
@pytest.mark.parametrize("order", [(0, 2, 3, 1), (0, 3, 1, 2)])
def test_transposed_images_at_edge_sizes(shape, order, kernel_calls):
    """Axes of size 1 (several layouts at once are C-contiguous), no images, one image."""
    stored = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    view = stored.transpose(np.argsort(order))       # a view whose storage is ``stored``
    out = klayout.ascontiguous(view)
    assert out.flags.c_contiguous and out.shape == view.shape
    np.testing.assert_array_equal(out, np.ascontiguousarray(view))


def test_contiguous_arrays_and_others_are_not_copied_by_the_kernel(kernel_calls, monkeypatch):
    a = np.ones((2, 3, 4, 5), np.float32)
    assert klayout.ascontiguous(a) is a                        # already C-contiguous
    for other in (np.ones((6, 7)).T, np.ones((2, 3, 4, 5), np.int64).transpose(0, 2, 3, 1)):
        np.testing.assert_array_equal(klayout.ascontiguous(other), np.ascontiguousarray(other))
    monkeypatch.setenv(ENV_VAR, "reference")
    v = _views(np.float32)["NCHW as NHWC"]
    np.testing.assert_array_equal(klayout.ascontiguous(v), np.ascontiguousarray(v))
    assert kernel_calls == []

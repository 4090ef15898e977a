"""kernels.layout.ascontiguous against np.ascontiguousarray: the layouts the
engine copies between (channels-last <-> C order, each image a transposed
matrix), other strides, both dtypes, edge sizes; what goes to NumPy instead."""
import numpy as np
import pytest

import kernels.layout as klayout
from kernels._dispatch import ENV_VAR


@pytest.fixture(autouse=True)
def _auto_dispatch(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def kernel_calls(monkeypatch):
    """(kernel, source shape) of each call of the two CPU kernels."""
    calls = []

    def spied(name):
        real = getattr(klayout, name)

        def spy(src, dst):
            calls.append((name, src.shape))
            return real(src, dst)
        return spy
    for name in ("_transpose_cpu", "_copy_cpu"):
        monkeypatch.setattr(klayout, name, spied(name))
    return calls


def _views(dtype):
    a = np.random.default_rng(0).standard_normal((5, 7, 6, 9)).astype(dtype)
    return {"channels-last as NCHW": np.ascontiguousarray(a.transpose(0, 2, 3, 1))
            .transpose(0, 3, 1, 2),
            "NCHW as NHWC": a.transpose(0, 2, 3, 1),
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
              "NCHW as NHWC": ("_transpose_cpu", (N, d3, d1 * d2))}            # (C, H*W)
    assert kernel_calls == [images.get(name, ("_copy_cpu", view.shape))]


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

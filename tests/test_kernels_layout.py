"""kernels.layout.ascontiguous against np.ascontiguousarray: the layouts the
engine copies between (channels-last <-> C order), other strides, both dtypes;
what goes to NumPy instead."""
import numpy as np
import pytest

import kernels.layout as klayout
from kernels._dispatch import ENV_VAR


@pytest.fixture(autouse=True)
def _auto_dispatch(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def kernel_calls(monkeypatch):
    calls = []
    real = klayout._copy_cpu

    def spy(src, dst):
        calls.append(src.shape)
        return real(src, dst)
    monkeypatch.setattr(klayout, "_copy_cpu", spy)
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
    assert kernel_calls == [view.shape]


def test_contiguous_arrays_and_others_are_not_copied_by_the_kernel(kernel_calls, monkeypatch):
    a = np.ones((2, 3, 4, 5), np.float32)
    assert klayout.ascontiguous(a) is a                        # already C-contiguous
    for other in (np.ones((6, 7)).T, np.ones((2, 3, 4, 5), np.int64).transpose(0, 2, 3, 1)):
        np.testing.assert_array_equal(klayout.ascontiguous(other), np.ascontiguousarray(other))
    monkeypatch.setenv(ENV_VAR, "reference")
    v = _views(np.float32)["NCHW as NHWC"]
    np.testing.assert_array_equal(klayout.ascontiguous(v), np.ascontiguousarray(v))
    assert kernel_calls == []

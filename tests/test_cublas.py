"""kernels/cublas.py without a GPU: how operands map to cuBLAS's column-major
calls, the product through the stand-in library (tests/fake_cublas.py) on NumPy
memory, and the error when no cuBLAS is loaded. On a GPU,
tests/gpu_kernel_checks.py's check_cublas_handle runs the real library
(tests/test_gpu_kernels.py)."""
import types

import numpy as np
import pytest

import fake_cublas
from kernels import cublas, gemm


class _Array:
    """A NumPy array with CuPy's ``data.ptr`` (the stand-in library reads memory)."""

    def __init__(self, a):
        self.a = a
        self.shape, self.strides, self.itemsize, self.dtype = a.shape, a.strides, a.itemsize, a.dtype
        self.nbytes = a.nbytes
        self.data = types.SimpleNamespace(ptr=a.ctypes.data)

    def fill(self, value):
        self.a.fill(value)


class _Xp:
    """What CublasHandle needs of CuPy's module, on NumPy."""

    @staticmethod
    def empty(shape, dtype):
        return _Array(np.full(shape, np.nan, dtype=dtype))

    @staticmethod
    def ascontiguousarray(x):
        return _Array(np.ascontiguousarray(x.a))


@pytest.fixture
def handle(monkeypatch):
    lib = fake_cublas.FakeCublas()
    stream = types.SimpleNamespace(ptr=0x5010)
    workspace = _Array(np.zeros(64, np.uint8))
    return cublas.CublasHandle(_Xp, stream, workspace, lib=lib), lib


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_of_every_layout_equal_numpy(handle, dtype):
    h, lib = handle
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 7)).astype(dtype), rng.standard_normal((7, 3)).astype(dtype)
    layouts = {"C": lambda x: x, "F": lambda x: np.asfortranarray(x),
               "wide": lambda x: np.pad(x, ((0, 0), (0, 2)))[:, :x.shape[1]],
               "every other row": lambda x: np.repeat(x, 2, axis=0)[::2]}
    for la, fa in layouts.items():
        for lb, fb in layouts.items():
            got = h.matmul(_Array(fa(a)), _Array(fb(b)))
            np.testing.assert_allclose(got.a, a @ b, rtol=1e-5, err_msg=f"{la} @ {lb}")
    ops = {args[1:3] for name, args in lib.calls if name.endswith("gemm_v2")}
    assert ops == {("N", "N"), ("N", "T"), ("T", "N"), ("T", "T")}, ops


def test_operand_passes_transposed_views_as_they_are():
    w = np.zeros((4, 6), np.float32)
    assert cublas._operand(np, w)[1:] == (cublas._OP_N, 6)
    assert cublas._operand(np, w.T)[1:] == (cublas._OP_T, 6)
    assert cublas._operand(np, w[:, :2])[1:] == (cublas._OP_N, 6)
    assert cublas._operand(np, w[:1])[1:] == (cublas._OP_N, 6)
    x, op, ld = cublas._operand(np, w[::2, ::2])            # no unit stride: copied
    assert x.flags.c_contiguous and (op, ld) == (cublas._OP_N, 3)


def test_empty_inner_dimension_gives_zeros(handle):
    h, lib = handle
    got = h.matmul(_Array(np.ones((3, 0), np.float32)), _Array(np.ones((0, 2), np.float32)))
    np.testing.assert_array_equal(got.a, np.zeros((3, 2)))
    assert not any(name.endswith("gemm_v2") for name, _ in lib.calls)


def test_the_handle_is_bound_to_its_stream_and_workspace(handle):
    h, lib = handle
    created = lib.calls[0][1][0]
    assert lib.calls[1] == ("cublasSetStream_v2", (created, 0x5010))
    assert lib.calls[2] == ("cublasSetWorkspace_v2", (created, h.workspace.data.ptr, 64))
    h.close()
    h.close()                                                  # once only
    assert [name for name, _ in lib.calls].count("cublasDestroy_v2") == 1


def test_a_failing_call_names_its_status(handle):
    h, lib = handle
    lib.cublasSgemm_v2 = lambda *args: 7
    with pytest.raises(RuntimeError, match="cublasGemm returned cuBLAS status 7"):
        h.matmul(_Array(np.ones((2, 2), np.float32)), _Array(np.ones((2, 2), np.float32)))


def test_no_cublas_in_the_process_is_a_clear_error():
    xp = types.SimpleNamespace(cuda=types.SimpleNamespace(
        device=types.SimpleNamespace(get_cublas_handle=lambda: 0)))
    with pytest.raises(cublas.CublasNotFound, match="no libcublas.so is mapped"):
        cublas.load_library(xp)


def test_capturable_products_route_cuda_products_to_the_handle(monkeypatch):
    seen = []
    h = types.SimpleNamespace(matmul=lambda a, b, out=None: seen.append((a, b, out)) or "C")
    monkeypatch.setattr(gemm, "choose", lambda *arrays, strided=False: "cuda")
    a, b = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    assert cublas.active_handle() is None
    with cublas.capturable_products(h):
        assert gemm.matmul(a, b) == "C"
    assert cublas.active_handle() is None and len(seen) == 1

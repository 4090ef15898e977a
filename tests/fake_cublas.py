"""A test-only stand-in for the cuBLAS library, for the CuPy stand-in (tests/fake_cupy).

:class:`FakeCublas` has the functions :class:`kernels.cublas.CublasHandle`
calls (``cublasCreate_v2``, ``cublasSetStream_v2``, ``cublasSetWorkspace_v2``,
``cublasSgemm_v2``, ``cublasDgemm_v2``, ``cublasDestroy_v2``), taking the
arguments as that class passes them to ``ctypes``. Its gemm is cuBLAS's
column-major ``C = alpha op(A) op(B) + beta C`` computed by NumPy on the
memory at the addresses given (the stand-in's device arrays are host memory),
so a wrong transpose flag, leading dimension or operand order gives a wrong
product here as on a GPU. During a stand-in capture the product is recorded on
the capture's tape, as a graph's kernel node. Every call is logged in
``calls`` (name, arguments).

``install()`` makes :func:`kernels.cublas.load_library` return one.
"""
import ctypes
import sys

import numpy as np

_OPS = {0: "N", 1: "T"}


def _column_major(ptr, rows, cols, ld, dtype):
    """The column-major (rows x cols) matrix with leading dimension ld at ptr, as a view."""
    itemsize = np.dtype(dtype).itemsize
    count = (cols - 1) * ld + rows
    buf = np.ctypeslib.as_array((ctypes.c_byte * (count * itemsize)).from_address(ptr))
    flat = buf.view(dtype)
    return np.lib.stride_tricks.as_strided(flat, shape=(rows, cols),
                                           strides=(itemsize, ld * itemsize))


class FakeCublas:
    def __init__(self):
        self.calls = []
        self._handles = 0

    def _log(self, name, *args):
        self.calls.append((name, args))
        return 0

    def cublasCreate_v2(self, handle_ref):
        self._handles += 1
        handle_ref._obj.value = 0x100 * self._handles
        return self._log("cublasCreate_v2", handle_ref._obj.value)

    def cublasDestroy_v2(self, handle):
        return self._log("cublasDestroy_v2", handle.value)

    def cublasSetStream_v2(self, handle, stream):
        return self._log("cublasSetStream_v2", handle.value, stream)

    def cublasSetWorkspace_v2(self, handle, ptr, nbytes):
        return self._log("cublasSetWorkspace_v2", handle.value, ptr, nbytes)

    def _gemm(self, dtype, name, handle, transa, transb, m, n, k, alpha, A, lda, B, ldb,
              beta, C, ldc):
        alpha, beta = alpha._obj.value, beta._obj.value
        for what, op, ld, rows in (("A", transa, lda, m if transa == 0 else k),
                                   ("B", transb, ldb, k if transb == 0 else n),
                                   ("C", 0, ldc, m)):
            if op not in _OPS or ld < max(1, rows):
                raise AssertionError(f"{name}: {what} op {op}, ld {ld} < {rows} rows")

        def product():
            a = _column_major(A, m, k, lda, dtype) if transa == 0 else \
                _column_major(A, k, m, lda, dtype).T
            b = _column_major(B, k, n, ldb, dtype) if transb == 0 else \
                _column_major(B, n, k, ldb, dtype).T
            c = _column_major(C, m, n, ldc, dtype)
            result = alpha * (a @ b)
            if beta != 0:
                result = result + beta * c
            c[...] = result
        # the CuPy stand-in, where imported, records the product on a capture's tape
        record = getattr(sys.modules.get("cupy"), "_recorded_in_place", None)
        if record is not None:
            record(product)
        else:
            product()
        return self._log(name, handle.value, _OPS[transa], _OPS[transb], m, n, k, lda, ldb, ldc)

    def cublasSgemm_v2(self, *args):
        return self._gemm(np.float32, "cublasSgemm_v2", *args)

    def cublasDgemm_v2(self, *args):
        return self._gemm(np.float64, "cublasDgemm_v2", *args)


def install():
    """Make kernels.cublas load a FakeCublas (one per process); return it."""
    from kernels import cublas

    fake = FakeCublas()
    cublas.load_library = lambda xp: fake
    return fake

"""cuBLAS on a handle of scratchvae's own: matrix products a CUDA graph can capture.

CuPy's products (``a @ b``) refuse to run while a stream captures: CuPy 14
raises "calling cuBLAS API during stream capture is currently unsupported"
before calling cuBLAS at all. cuBLAS itself captures its routines, provided
it allocates nothing while capturing, i.e. it was handed a workspace
(``cublasSetWorkspace``) before the capture (cuBLAS documentation, "CUDA
Graphs Support"). So the captured training step calls cuBLAS directly,
through ``ctypes``, on a handle it creates, bound to the capturing stream and
to a workspace allocated before the capture: :class:`CublasHandle`. It is
the same library CuPy loaded (found in the process's own memory map), so the
products are the same products; only the call does not go through CuPy.

Row-major arrays, column-major cuBLAS: as in kernels/gemm.py, the row-major
product C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T,
B passed first, an operand stored column-major (a transposed view, ``W.T``)
passed as it is with the transpose flag, never copied.

:func:`capturable_products` makes :func:`kernels.gemm.matmul` (and with it
every product of the engine: linear layers, the conv products, the
embedding's) run on such a handle for CuPy arrays, inside a ``with`` block.
CuPy is never imported here; the handle takes CuPy's module ``xp``.
"""
import contextlib
import ctypes
import os

import numpy as np

from ._arrays import blas_layout

#: cublasOperation_t
_OP_N, _OP_T = 0, 1


class CublasNotFound(RuntimeError):
    """No cuBLAS library could be loaded into this process."""


def load_library(xp):
    """The cuBLAS library CuPy uses, as a ``ctypes.CDLL``.

    CuPy loads cuBLAS when it makes its own handle; the path is then read from
    the process's memory map (``/proc/self/maps``), so both call one library.
    """
    xp.cuda.device.get_cublas_handle()          # CuPy loads cuBLAS here, once
    try:
        with open("/proc/self/maps") as f:     # address perms offset dev inode [path]
            paths = {parts[5].strip() for parts in (line.split(None, 5) for line in f)
                     if len(parts) == 6}
    except OSError as e:
        raise CublasNotFound(f"cannot read /proc/self/maps to find cuBLAS ({e})") from e
    found = sorted(p for p in paths if os.path.basename(p).startswith("libcublas.so"))
    if not found:
        raise CublasNotFound("CuPy made a cuBLAS handle, but no libcublas.so is mapped "
                             "into this process")
    lib = ctypes.CDLL(found[0])
    _declare(lib)
    return lib


def _declare(lib):
    """The prototypes of the cuBLAS functions called here (cublas_api.h)."""
    p, i, size = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    lib.cublasCreate_v2.argtypes = [ctypes.POINTER(p)]
    lib.cublasDestroy_v2.argtypes = [p]
    lib.cublasSetStream_v2.argtypes = [p, p]
    lib.cublasSetWorkspace_v2.argtypes = [p, p, size]
    for name, scalar in (("cublasSgemm_v2", ctypes.c_float), ("cublasDgemm_v2", ctypes.c_double)):
        getattr(lib, name).argtypes = [p, i, i, i, i, i, ctypes.POINTER(scalar), p, i, p, i,
                                       ctypes.POINTER(scalar), p, i]
    for name in ("cublasCreate_v2", "cublasDestroy_v2", "cublasSetStream_v2",
                 "cublasSetWorkspace_v2", "cublasSgemm_v2", "cublasDgemm_v2"):
        getattr(lib, name).restype = i


def _check(status, call):
    if status != 0:
        raise RuntimeError(f"{call} returned cuBLAS status {status} (cublasStatus_t)")


class CublasHandle:
    """A cuBLAS handle bound to ``stream``, with ``workspace`` (a device array of
    uint8, allocated before any capture) as its only scratch memory.

    ``lib``: the library (default :func:`load_library`); tests hand in a
    stand-in with the same functions.
    """

    def __init__(self, xp, stream, workspace, lib=None):
        self.xp = xp
        self.lib = lib if lib is not None else load_library(xp)
        self.workspace = workspace             # kept alive as long as the handle
        handle = ctypes.c_void_p()
        _check(self.lib.cublasCreate_v2(ctypes.byref(handle)), "cublasCreate")
        self.handle = handle
        _check(self.lib.cublasSetStream_v2(handle, stream.ptr), "cublasSetStream")
        _check(self.lib.cublasSetWorkspace_v2(handle, workspace.data.ptr, workspace.nbytes),
               "cublasSetWorkspace")
        self._scalars = {np.dtype(np.float32): (ctypes.c_float(1), ctypes.c_float(0)),
                         np.dtype(np.float64): (ctypes.c_double(1), ctypes.c_double(0))}

    def close(self):
        """Destroy the handle (its workspace is the caller's array)."""
        if self.handle is not None:
            _check(self.lib.cublasDestroy_v2(self.handle), "cublasDestroy")
            self.handle = None

    def matmul(self, a, b, out=None):
        """C = a @ b, (M, K) times (K, N), float32 or float64 CuPy arrays of one
        dtype, into ``out`` (C-contiguous (M, N)) or a new array."""
        xp = self.xp
        M, K = a.shape
        N = b.shape[1]
        if out is None:
            out = xp.empty((M, N), dtype=a.dtype)
        if M == 0 or N == 0:
            return out
        if K == 0:
            out.fill(0)
            return out
        one, zero = self._scalars[np.dtype(a.dtype)]
        a, a_op, lda = _operand(xp, a)
        b, b_op, ldb = _operand(xp, b)
        gemm = self.lib.cublasSgemm_v2 if a.dtype == np.float32 else self.lib.cublasDgemm_v2
        # column-major C^T (N x M, ld N) = op(B)^T (N x K) op(A)^T (K x M)
        _check(gemm(self.handle, b_op, a_op, N, M, K, ctypes.byref(one), b.data.ptr, ldb,
                    a.data.ptr, lda, ctypes.byref(zero), out.data.ptr, N), "cublasGemm")
        return out


def _operand(xp, x):
    """(array, cuBLAS operation, leading dimension) of a row-major operand: rows
    contiguous 'N', columns contiguous (a transposed view) 'T', as
    :func:`kernels._arrays.blas_layout` reads them; anything else is copied to C
    order first."""
    row_major, ld = blas_layout(x)
    if row_major is None:
        x = xp.ascontiguousarray(x)
        row_major, ld = True, max(x.shape[1], 1)
    return x, (_OP_N if row_major else _OP_T), ld


#: the handle :func:`kernels.gemm.matmul` calls for CuPy arrays (None: CuPy's ``@``)
_ACTIVE = []


def active_handle():
    """The handle of the innermost :func:`capturable_products` block, or None."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def capturable_products(handle):
    """Inside the block, :func:`kernels.gemm.matmul` runs CuPy products on ``handle``."""
    _ACTIVE.append(handle)
    try:
        yield handle
    finally:
        _ACTIVE.pop()

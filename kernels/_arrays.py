"""The array helpers of the kernels: which array module holds an array, its
memory order, and the checks that report a wrong shape or dtype.

A wrong argument is a ``ValueError`` naming the op, what it expected and
what it received. ``scratchvae.backend`` re-exports these helpers, so the
engine above the kernels validates its arguments with the same ones.
CuPy is never imported here unless a CuPy array is handed in.
"""
import numpy as np


def is_cupy(a):
    """True for a CuPy array, decided from its type's module (CuPy is not imported)."""
    return type(a).__module__.split(".")[0] == "cupy"


def get_xp(*arrays):
    """Return the array module (numpy or cupy) that ``arrays`` live in."""
    for a in arrays:
        if is_cupy(a):
            import cupy  # only reached when a CuPy array was handed in

            return cupy
    return np


def blas_layout(x):
    """How BLAS can read the 2-D array ``x`` without a copy: ``(True, ld)`` when its
    rows are contiguous (unit column stride, row stride ``ld`` elements), ``(False,
    ld)`` when its columns are (a transposed view), ``(None, None)`` otherwise (no
    unit stride, negative or misaligned strides). A size-1 axis makes its stride
    arbitrary: ``ld`` is raised to the BLAS minimum."""
    rows, cols = x.shape
    step = x.itemsize
    s0, s1 = x.strides
    if cols == 1 or s1 == step:                     # contiguous rows
        if s0 >= 0 and s0 % step == 0 and (rows == 1 or s0 // step >= cols):
            return True, max(s0 // step, cols, 1)
    if rows == 1 or s0 == step:                     # contiguous columns
        if s1 >= 0 and s1 % step == 0 and (cols == 1 or s1 // step >= rows):
            return False, max(s1 // step, rows, 1)
    return None, None


def memory_order(a):
    """Axes of ``a`` from the largest stride to the smallest (a stable sort).

    (0, 1, ..., n-1) for a C-contiguous array, (0, 2, 3, 1) for a
    channels-last NCHW view; ``a.transpose(memory_order(a))`` is C-contiguous
    whenever ``a`` is dense, whatever its layout.
    """
    return tuple(sorted(range(a.ndim), key=lambda k: -a.strides[k]))


def _fmt_shape(shape):
    inner = ", ".join("*" if s is None else str(s) for s in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def check_shape(op, name, x, shape):
    """Raise ``ValueError`` unless ``x.shape`` matches ``shape``.

    ``shape`` is a tuple whose entries are ints or ``None`` (any size).
    """
    got = getattr(x, "shape", None)
    if got is None:
        raise ValueError(f"{op}: expected {name} to be an array of shape "
                         f"{_fmt_shape(shape)}, got {type(x).__name__}")
    if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
        raise ValueError(f"{op}: expected {name} of shape {_fmt_shape(shape)}, "
                         f"got {tuple(got)}")


def check_float(op, name, x, dtype=None):
    """Raise ``ValueError`` unless ``x`` is float32/float64 (and ``dtype`` if given)."""
    dt = np.dtype(x.dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"{op}: expected {name} of dtype float32 or float64, got {dt}")
    if dtype is not None and dt != np.dtype(dtype):
        raise ValueError(f"{op}: expected {name} of dtype {np.dtype(dtype)} "
                         f"(the dtype of the op's parameters), got {dt}")


def check_same(op, name_a, a, name_b, b):
    """Raise ``ValueError`` unless two arrays share shape and dtype."""
    if a.shape != b.shape:
        raise ValueError(f"{op}: expected {name_b} of shape {tuple(a.shape)} "
                         f"(the shape of {name_a}), got {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise ValueError(f"{op}: expected {name_b} of dtype {a.dtype} "
                         f"(the dtype of {name_a}), got {b.dtype}")

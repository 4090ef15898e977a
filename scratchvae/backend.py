"""Array backend: NumPy on the CPU, CuPy on the GPU, chosen from the arrays.

Engine code never imports CuPy at module level. A function asks its inputs
which array module they belong to (``xp = get_xp(x)``) and uses ``xp.*``
from then on, so one code path serves both devices.

Randomness is always explicit: a seeded ``Generator`` is created with
:func:`new_rng` and passed to whatever needs random numbers. There is no
global random state, so a CPU run is reproducible bit for bit.

This module also holds the small validation helpers every op uses, so that a
wrong shape or dtype is reported as ``ValueError`` naming the op, what it
expected and what it received.
"""
import numpy as np

#: dtype used for training
DEFAULT_DTYPE = np.float32
#: dtype used for finite-difference gradient checks
CHECK_DTYPE = np.float64


def _is_cupy(a):
    return type(a).__module__.split(".")[0] == "cupy"


def get_xp(*arrays):
    """Return the array module (numpy or cupy) that ``arrays`` live in."""
    for a in arrays:
        if _is_cupy(a):
            import cupy  # only reached when a CuPy array was handed in

            return cupy
    return np


def cupy_available():
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError, missing driver
        return False


def get_array_module(device):
    """Array module for a device name: ``'cpu'`` -> numpy, ``'gpu'`` -> cupy."""
    if device == "cpu":
        return np
    if device in ("gpu", "cuda"):
        if not cupy_available():
            raise RuntimeError(
                "device 'gpu' needs CuPy and a CUDA GPU; install the extra with "
                "`pip install -e .[gpu]` or use --device cpu")
        import cupy

        return cupy
    raise ValueError(f"device: expected 'cpu' or 'gpu', got {device!r}")


def to_numpy(a):
    """Copy an array (NumPy or CuPy) to a NumPy array on the host."""
    return a.get() if _is_cupy(a) else np.asarray(a)


def to_device(a, xp):
    """Move a NumPy/CuPy array to the array module ``xp``."""
    if xp is np:
        return to_numpy(a)
    return xp.asarray(a)


def new_rng(seed, xp=np):
    """A seeded random generator of the array module ``xp``.

    ``numpy.random.default_rng`` (PCG64) on the CPU; ``cupy.random.default_rng``
    on the GPU. Pass the generator explicitly to everything that draws.
    """
    return xp.random.default_rng(seed)


def standard_normal(rng, shape, dtype):
    """Draw N(0, 1) samples of ``dtype`` from an explicit generator."""
    dtype = np.dtype(dtype)
    if dtype in (np.float32, np.float64):
        return rng.standard_normal(size=shape, dtype=dtype)
    raise ValueError(f"standard_normal: expected dtype float32 or float64, got {dtype}")


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------

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

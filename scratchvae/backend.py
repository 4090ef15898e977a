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


def memory_order(a):
    """Axes of ``a`` from the largest stride to the smallest (a stable sort).

    (0, 1, ..., n-1) for a C-contiguous array, (0, 2, 3, 1) for a
    channels-last NCHW view; ``a.transpose(memory_order(a))`` is C-contiguous
    whenever ``a`` is dense, whatever its layout.
    """
    return tuple(sorted(range(a.ndim), key=lambda k: -a.strides[k]))


#: glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def retain_freed_memory(mmap_threshold=32 << 20, trim_threshold=1 << 30):
    """Let glibc's malloc keep freed blocks for reuse instead of returning them
    to the operating system; call once before a training loop. Returns True
    when the settings were applied (Linux with glibc), else False.

    Why: a training step allocates and frees the same large temporaries
    (im2col columns of ~13 MB for the conv VAE) every step. By default glibc
    serves blocks over its mmap threshold with fresh ``mmap`` pages and
    gives freed heap memory back with ``trim``, so every step page-faults
    those megabytes in again, zero-filled by the kernel. Raising the mmap
    threshold (blocks up to ``mmap_threshold`` bytes come from the heap; 32
    MiB is glibc's largest allowed value on 64-bit) and the trim threshold
    (keep up to ``trim_threshold`` free bytes at the top of the heap) lets
    the next step reuse the same memory. Measured on the conv VAE: about
    10% off a training step; the resident set stays about the same, since
    the same blocks are reused. NumPy and CuPy results are unchanged: this
    only affects where memory comes from.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))
                and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))


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


def check_int(op, name, value, minimum):
    """``value`` as an int; ``ValueError`` unless it is an int (not a bool) >= ``minimum``.

    For sizes such as a layer's channel or feature counts, which would
    otherwise fail later with an unrelated error (a division by zero in the
    initialisation, a complex square root of a negative fan-in).
    """
    if (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
            or value < minimum):
        raise ValueError(f"{op}: expected {name} to be an int >= {minimum}, got {value!r}")
    return int(value)


def check_rng(op, rng):
    """Raise ``ValueError`` unless ``rng`` is a ``numpy.random.Generator``.

    Parameters are initialised from an explicit, seeded generator, never
    from a fresh unseeded one, so that a run is reproducible bit for bit.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{op}: expected rng, a seeded numpy.random.Generator (e.g. "
                         f"np.random.default_rng(0)) to initialise the parameters, "
                         f"got {type(rng).__name__}")


def check_same(op, name_a, a, name_b, b):
    """Raise ``ValueError`` unless two arrays share shape and dtype."""
    if a.shape != b.shape:
        raise ValueError(f"{op}: expected {name_b} of shape {tuple(a.shape)} "
                         f"(the shape of {name_a}), got {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise ValueError(f"{op}: expected {name_b} of dtype {a.dtype} "
                         f"(the dtype of {name_a}), got {b.dtype}")

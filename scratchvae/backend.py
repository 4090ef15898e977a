"""Array backend: NumPy on the CPU, CuPy on the GPU, chosen from the arrays.

Engine code never imports CuPy at module level. A function asks its inputs
which array module they belong to (``xp = get_xp(x)``) and uses ``xp.*``
from then on, so one code path serves both devices.

Randomness is always explicit: a seeded ``Generator`` is created with
:func:`new_rng` and passed to whatever needs random numbers. There is no
global random state, so a CPU run is reproducible bit for bit.

A wrong shape, dtype or size is reported as ``ValueError`` naming the op,
what it expected and what it received. The array helpers the kernels use
too (``get_xp``, ``is_cupy``, ``memory_order``, ``check_shape``,
``check_float``, ``check_same``) live in :mod:`kernels._arrays`, below this
module, and are re-exported here; ``check_int`` and ``check_rng`` are the
engine's own.
"""
import numpy as np

from kernels._arrays import (check_float, check_same, check_shape, get_xp, is_cupy,
                             memory_order)
from kernels.blas import BlasNotFound

#: dtype used for training
DEFAULT_DTYPE = np.float32
#: dtype used for finite-difference gradient checks
CHECK_DTYPE = np.float64


#: glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def retain_freed_memory(mmap_threshold=32 << 20, trim_threshold=1 << 30):
    """Let glibc's malloc keep freed blocks for reuse instead of returning them
    to the operating system; call once before a training loop. Returns True
    when the settings were applied (Linux with glibc), else False.

    Why: a training step allocates and frees blocks of the same sizes every
    step (each layer's activations and gradients, 3.2 MB for one of the conv
    VAE's 128x32x14x14 float32 arrays). By default glibc serves blocks over
    its mmap threshold with fresh ``mmap`` pages and gives freed heap memory
    back with ``trim``, so every step page-faults those megabytes in again,
    zero-filled by the kernel. Raising the mmap threshold (blocks up to
    ``mmap_threshold`` bytes come from the heap; 32 MiB is glibc's largest
    allowed value on 64-bit) and the trim threshold (keep up to
    ``trim_threshold`` free bytes at the top of the heap) lets the next step
    reuse the same memory, with about the same resident set. It takes about
    a tenth off a conv-VAE training step (``benchmarks/profile_step.py``,
    with and without; benchmarks/RESULTS.md). NumPy and CuPy results are
    unchanged: this only affects where memory comes from.
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


def cpu_description():
    """The CPU engine in a line for a run's header: Numba's thread count (the
    kernels' and products' pool) and the BLAS its products call (kernels/blas.py)."""
    from numba import get_num_threads

    from kernels.blas import describe
    n = get_num_threads()
    return f"{n} thread{'s' if n > 1 else ''}, BLAS {describe()}"


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
    return a.get() if is_cupy(a) else np.asarray(a)


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

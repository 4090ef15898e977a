"""Choose which implementation of a kernel runs for a given set of arrays.

Three implementations exist for every kernel:

``"cpu"``
    A Numba ``@njit(parallel=True, cache=True)`` function. Used for NumPy
    arrays that are all C-contiguous and all of one dtype, float32 or float64.
``"cuda"``
    A ``numba.cuda.jit`` kernel. Used for CuPy arrays (recognised from
    ``type(a).__module__``; CuPy itself is never imported here) under the
    same contiguity and dtype conditions.
``"reference"``
    The plain ``xp`` version (NumPy or CuPy): obviously right, may allocate.
    Used for everything else (strided views, mixed dtypes, ...) and whenever
    the environment variable ``SCRATCHVAE_KERNELS=reference`` is set, which
    benchmarks use to compare the two paths. The variable is read on every
    call, so it can be flipped at run time.

Accepted values of ``SCRATCHVAE_KERNELS``: unset, ``""`` or ``"auto"`` (the
rule above) and ``"reference"``. Anything else is a ``ValueError``: a typo
must not silently pick an implementation.
"""
import functools
import os
import warnings

import numpy as np

ENV_VAR = "SCRATCHVAE_KERNELS"
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def is_cupy(a):
    """True for a CuPy array, decided without importing CuPy."""
    return type(a).__module__.split(".")[0] == "cupy"


def forced_reference():
    """True when ``SCRATCHVAE_KERNELS=reference`` asks for the xp reference."""
    mode = os.environ.get(ENV_VAR, "").strip().lower()
    if mode in ("", "auto"):
        return False
    if mode == "reference":
        return True
    raise ValueError(f"{ENV_VAR}: expected 'auto' or 'reference', got {mode!r}")


def choose(*arrays):
    """Return ``"cpu"``, ``"cuda"`` or ``"reference"`` for these arrays.

    ``None`` entries are skipped (e.g. an absent momentum buffer).
    """
    if forced_reference():
        return "reference"
    arrays = [a for a in arrays if a is not None]
    if not arrays:
        return "reference"
    dtype = np.dtype(arrays[0].dtype)
    if dtype not in _FLOATS or any(np.dtype(a.dtype) != dtype for a in arrays):
        return "reference"
    if not all(a.flags.c_contiguous for a in arrays):
        return "reference"
    kinds = {is_cupy(a) for a in arrays}
    if kinds == {True}:
        return "cuda" if cuda_kernels_available() else "reference"
    if kinds == {False} and all(isinstance(a, np.ndarray) for a in arrays):
        return "cpu"
    return "reference"  # a mix of devices, or some other array type


@functools.lru_cache(maxsize=None)
def cuda_kernels_available():
    """True when ``numba.cuda`` imports and finds a GPU (checked once).

    When it does not (e.g. CuPy installed but Numba's CUDA target missing),
    CuPy arrays go to the xp reference, with one warning.
    """
    try:
        from numba import cuda

        ok = cuda.is_available()
    except Exception:  # ImportError, CudaSupportError, driver problems
        ok = False
    if not ok:
        warnings.warn("scratchvae.kernels: numba.cuda is not usable; CuPy arrays "
                      "use the (slower) xp reference implementations", RuntimeWarning)
    return ok


def scalar(x, dtype):
    """``x`` as a NumPy scalar of ``dtype``.

    Kernels receive their scalars in the array dtype so that float32 arrays
    are computed in float32 arithmetic (as PyTorch does) instead of being
    promoted to float64 by a Python float.
    """
    return np.dtype(dtype).type(x)


#: threads per block of the CUDA kernels (a power of two, for tree reductions)
CUDA_THREADS = 128


def cuda_stream(a):
    """The stream a CUDA kernel is launched on for array ``a``.

    For a CuPy array: CuPy's current stream, so the kernel is ordered with
    the CuPy work around it. Otherwise (NumPy arrays under the simulator) the
    default stream, ``0``.
    """
    if not is_cupy(a):
        return 0
    import cupy  # only reached when a CuPy array was handed in
    from numba import cuda

    ptr = cupy.cuda.get_current_stream().ptr
    return cuda.external_stream(ptr) if ptr else 0


def cuda_grid(n, threads=CUDA_THREADS, max_blocks=1024):
    """Blocks for a grid-stride loop over ``n`` elements."""
    return max(1, min(max_blocks, (n + threads - 1) // threads))

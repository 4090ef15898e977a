"""The one rule that chooses which implementation of a kernel runs.

Every kernel has up to three implementations behind one public function:
``"cpu"``, a Numba ``@njit(parallel=True, cache=True)`` function;
``"cuda"``, a ``numba.cuda.jit`` kernel; ``"reference"``, the plain ``xp``
version (NumPy or CuPy), obviously right, possibly allocating. For the
array operands of a call (``None`` entries skipped), :func:`choose` returns

1. ``"reference"`` when ``SCRATCHVAE_KERNELS=reference`` is set (read on
   every call, so benchmarks can flip it to compare the two paths);
2. ``"cpu"`` when they are all NumPy arrays, ``"cuda"`` when they are all
   CuPy arrays (recognised from ``type(a).__module__``; CuPy is never
   imported here), provided they share one dtype, float32 or float64, and
   are C-contiguous, or of any strides for a kernel that reads strides
   (``strided=True``);
3. ``"reference"`` otherwise: strided views, mixed dtypes or devices, other
   dtypes or array types, no operands; also CuPy arrays when ``numba.cuda``
   is unusable (one warning).

Accepted values of ``SCRATCHVAE_KERNELS``: unset, ``""`` or ``"auto"`` (the
rule above) and ``"reference"``. Anything else is a ``ValueError``: a typo
must not silently pick an implementation.

Every public kernel function dispatches by this rule. What each kernel adds
is stated here, and only here:

- ``relu_forward``/``relu_backward`` (kernels/relu.py) apply the rule to
  their operands viewed in memory order, so any dense layout (channels-last
  included) counts as contiguous, provided dy and y share it.
- ``add_bias`` (kernels/relu.py) has no CUDA kernel of its own: its
  ``"cuda"`` is CuPy's add, then ``relu_forward``'s CUDA kernel.
- ``gated_forward``/``gated_backward`` (kernels/gated.py) apply the rule to
  x (and dy) viewed in x's memory order, provided that order is C-order or
  channels-last and dy shares it; their ``"cpu"`` is NumPy's vectorised
  tanh and exp written in place, not a Numba function.
- ``bce_with_logits``/``bce_with_logits_forward`` (kernels/bce.py): their
  ``"cpu"`` takes exp(-|l|) from NumPy's vectorised exp, then one Numba pass.
- ``adam_step`` (kernels/adam.py) runs its ``"cpu"`` loop on one thread of
  the pool for a parameter of at most ``SMALL_UPDATE`` elements (the same bits).
- ``matmul`` (kernels/gemm.py) reads strides (``strided=True``: an operand
  with one unit stride goes to BLAS as it is, any other is copied once), and
  runs as the reference, ``a @ b``, a product of fewer than
  ``SMALL_PRODUCT`` multiply-adds (a parallel launch costs more than it
  saves) or one too large for 32-bit BLAS integers; on one thread it hands a
  C- or Fortran-ordered product to NumPy's ``matmul`` when NumPy's BLAS is the
  chosen one (the same gemm call, so the same bits, without the compiled
  loop's launch). Its ``"cuda"`` is
  cuBLAS: ``a @ b``, or inside ``kernels.cublas.capturable_products`` a
  handle of the engine's own (what a captured training step needs).
- ``ascontiguous`` (kernels/layout.py) reads strides and takes 4-D arrays
  only; its ``"cuda"`` is CuPy's own copy (then ``relu_backward`` for a
  gradient through a ReLU).
- ``segment_sum`` (kernels/codes.py) applies the rule to the values; its
  ``"cuda"`` also needs the indices on the device and Numba's CUDA usable.
- the conv products (kernels/conv_gemm.py): a 1x1 convolution with stride
  1 and no padding is a ``matmul`` (the image is its own column matrix) and
  follows its rule; the others' ``"cpu"`` is im2col/col2im fused with BLAS
  (by window classes for padded images of more than 3 channels),
  and their ``"cuda"`` is kernels/im2col.py's CUDA kernels and cuBLAS
  (through ``matmul``), unfused.
"""
import functools
import os
import warnings

import numpy as np

from ._arrays import is_cupy

ENV_VAR = "SCRATCHVAE_KERNELS"

# numba-cuda (0.30.4 and earlier) registers an overload of ``np.row_stack``,
# an alias of ``np.vstack`` that NumPy 2.5 removed; without it every CUDA
# kernel fails to compile ("module 'numpy' has no attribute 'row_stack'").
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

# The CUDA kernels are grid-stride loops whose grids are sized to the work
# (cuda_grid); numba-cuda's low-occupancy warning at each small launch is noise.
warnings.filterwarnings("ignore", message=r".*Grid size \d+ will likely result in GPU "
                        r"under-utilization")
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def forced_reference():
    """True when ``SCRATCHVAE_KERNELS=reference`` asks for the xp reference."""
    mode = os.environ.get(ENV_VAR, "").strip().lower()
    if mode in ("", "auto"):
        return False
    if mode == "reference":
        return True
    raise ValueError(f"{ENV_VAR}: expected 'auto' or 'reference', got {mode!r}")


def choose(*arrays, strided=False):
    """Return ``"cpu"``, ``"cuda"`` or ``"reference"`` for these arrays (the
    module docstring's rule); ``strided=True`` for a kernel that reads any
    strides. ``None`` entries are skipped (e.g. an absent momentum buffer).
    """
    if forced_reference():
        return "reference"
    arrays = [a for a in arrays if a is not None]
    if not arrays:
        return "reference"
    if all(type(a) is np.ndarray for a in arrays):   # the common case, decided quickly
        dtype = arrays[0].dtype
        if dtype not in _FLOATS or any(a.dtype != dtype for a in arrays):
            return "reference"
        return "cpu" if strided or all(a.flags.c_contiguous for a in arrays) else "reference"
    dtype = np.dtype(arrays[0].dtype)
    if dtype not in _FLOATS or any(np.dtype(a.dtype) != dtype for a in arrays):
        return "reference"
    if not strided and not all(a.flags.c_contiguous for a in arrays):
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
    default stream, ``0``. Since every launch names CuPy's current stream,
    Numba's synchronisation of the stream a CuPy array declares, on each array
    handed to a kernel (``CUDA_ARRAY_INTERFACE_SYNC``), orders nothing more:
    it is turned off (:func:`no_array_interface_sync`); it would also stop
    a stream capture, where synchronising is illegal.
    """
    if not is_cupy(a):
        return 0
    import cupy  # only reached when a CuPy array was handed in
    from numba import cuda

    no_array_interface_sync()

    ptr = cupy.cuda.get_current_stream().ptr
    return cuda.external_stream(ptr) if ptr else 0


@functools.lru_cache(maxsize=None)
def no_array_interface_sync():
    """Set Numba's ``CUDA_ARRAY_INTERFACE_SYNC`` to False (once; see :func:`cuda_stream`)."""
    from numba import config

    config.CUDA_ARRAY_INTERFACE_SYNC = False
    try:   # numba-cuda keeps its own copy of the setting
        from numba.cuda.core import config as cuda_config
    except Exception:   # ImportError: plain Numba, one setting
        return
    cuda_config.CUDA_ARRAY_INTERFACE_SYNC = False


def cuda_grid(n, threads=CUDA_THREADS, max_blocks=1024):
    """Blocks for a grid-stride loop over ``n`` elements."""
    return max(1, min(max_blocks, (n + threads - 1) // threads))

"""Hot loops of scratchvae, fused into single-pass kernels.

Every kernel comes in three implementations with one public entry point:

- a Numba ``@njit(parallel=True, cache=True)`` CPU kernel, for NumPy arrays
  that are C-contiguous and all float32 or all float64;
- a ``numba.cuda`` kernel, for CuPy arrays (CuPy is never imported here;
  the arrays are recognised by their type's module);
- a ``*_reference`` function in plain ``xp`` (NumPy or CuPy): the obviously
  right version, used for anything else (strided views, mixed dtypes) and
  when ``SCRATCHVAE_KERNELS=reference`` is set (benchmarks compare the two).

Tests check each kernel against its reference (and the CUDA kernels under
``NUMBA_ENABLE_CUDASIM=1``). The dispatch rule lives in
:mod:`kernels._dispatch`.
"""
import os

# Two thread pools share the cores: Numba's (OpenMP) for these kernels and the
# BLAS library's for the matrix products between them. By default OpenMP's
# threads keep spinning after their work and starve the BLAS threads: on the
# 2-core CI machine an MLP VAE training step took ~3x longer, a conv stack ~10x.
# Passive OpenMP waiting puts idle Numba threads to sleep at once. It must be
# set before Numba's OpenMP library loads (at the first parallel kernel); a
# value chosen by the user is kept. OpenBLAS is left at its default: its idle
# threads spin but yield the core, and putting them to sleep at once
# (OPENBLAS_THREAD_TIMEOUT=4) made steps slower and erratic (benchmarks/RESULTS.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .adam import adam_step, adam_step_reference, sgd_step, sgd_step_reference
from .bce import (bce_with_logits, bce_with_logits_forward,
                  bce_with_logits_forward_reference, bce_with_logits_reference)
from .relu import relu_backward, relu_backward_reference
from .vq import nearest_code, nearest_code_reference

# im2col / col2im live in kernels.im2col (not re-exported here: the function
# im2col would shadow its own module's name)

__all__ = [
    "adam_step", "adam_step_reference", "sgd_step", "sgd_step_reference",
    "bce_with_logits", "bce_with_logits_reference",
    "bce_with_logits_forward", "bce_with_logits_forward_reference",
    "nearest_code", "nearest_code_reference",
    "relu_backward", "relu_backward_reference",
]

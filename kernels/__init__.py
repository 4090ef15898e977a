"""Hot loops of scratchvae, fused into single-pass kernels.

Every kernel comes in three implementations with one public entry point:

- a Numba ``@njit(parallel=True, cache=True)`` CPU kernel, for NumPy arrays
  that are C-contiguous and all float32 or all float64;
- a ``numba.cuda`` kernel, for CuPy arrays (CuPy is never imported here;
  the arrays are recognised by their type's module);
- a ``*_reference`` function in plain ``xp`` (NumPy or CuPy): the obviously
  right version, used for anything else (strided views, mixed dtypes) and
  when ``SCRATCHVAE_KERNELS=reference`` is set (benchmarks compare the two).

The exceptions use CuPy's own operations on the GPU: ``matmul``
(kernels/gemm.py; its CPU kernel hands blocks of the product to BLAS, and on
CuPy arrays it is cuBLAS, ``a @ b``), ``ascontiguous`` (kernels/layout.py;
CuPy's copy), and the conv products of kernels/conv_gemm.py (on CuPy arrays
the unfused composition of the CUDA im2col/col2im and cuBLAS).

Tests check each kernel against its reference (and the CUDA kernels under
``NUMBA_ENABLE_CUDASIM=1``). The dispatch rule lives in
:mod:`kernels._dispatch`.
"""
# One thread pool: Numba's (OpenMP) runs these kernels and, through
# kernels.gemm, the matrix products between them, each thread calling BLAS
# on its own block with the BLAS library set to one thread. Its idle threads
# spin briefly before they sleep (OpenMP's default), which makes the next
# launch cheap; with the BLAS library's own threads beside them, spinning
# starved those threads and steps took several times longer, so earlier
# versions set OMP_WAIT_POLICY=PASSIVE, paying a wake-up at every launch.
# See kernels/gemm.py and benchmarks/RESULTS.md.

from .adam import adam_step, adam_step_reference, sgd_step, sgd_step_reference
from .bce import (bce_with_logits, bce_with_logits_forward,
                  bce_with_logits_forward_reference, bce_with_logits_reference)
from .gemm import matmul, matmul_reference
from .relu import relu_backward, relu_backward_reference, relu_forward, relu_forward_reference
from .vq import nearest_code, nearest_code_reference

# im2col / col2im live in kernels.im2col (not re-exported here: the function
# im2col would shadow its own module's name)

__all__ = [
    "adam_step", "adam_step_reference", "sgd_step", "sgd_step_reference",
    "bce_with_logits", "bce_with_logits_reference",
    "bce_with_logits_forward", "bce_with_logits_forward_reference",
    "matmul", "matmul_reference",
    "nearest_code", "nearest_code_reference",
    "relu_backward", "relu_backward_reference", "relu_forward", "relu_forward_reference",
]

"""Hot loops of scratchvae, fused into single-pass kernels, below the engine.

This package imports nothing from ``scratchvae``: its array helpers are its
own (:mod:`kernels._arrays`), and ``scratchvae.backend`` re-exports them.

Each kernel is one public function with up to three implementations: a
Numba CPU kernel, a Numba CUDA kernel for CuPy arrays (CuPy is never
imported here), and a ``*_reference`` in plain ``xp``, the obviously right
version. Which one runs is decided by one rule for all of them, ``matmul``
and the conv products included, stated in :mod:`kernels._dispatch`. Where
a kernel has a CPU and a CUDA body, the formula they share is written once,
as a ``numba.extending.register_jitable`` function that both call.

- kernels/adam.py: Adam and SGD steps, in place;
- kernels/bce.py: binary cross-entropy with logits, and its gradient;
- kernels/sigmoid.py: the stable logistic sigmoid, the one formula every
  sigmoid of the project uses (an ``xp`` function and a scalar body);
- kernels/relu.py: ReLU forward and backward, a bias added with the ReLU;
- kernels/gated.py: the gated activation tanh(a) * sigmoid(b), forward and
  backward;
- kernels/vq.py: a vector quantiser's nearest-code search;
- kernels/codes.py: per-code sums and counts of its assignments, and its
  dead-code restarts drawn from kernels/counter_rng.py's generator;
- kernels/gemm.py: matrix products, BLAS per block on Numba's threads;
- kernels/blas.py: which BLAS library those products call;
- kernels/cublas.py: cuBLAS on a handle of the engine's own, for the products of
  a captured training step;
- kernels/im2col.py, kernels/conv_gemm.py: im2col/col2im and the three
  products of a convolution with them fused in; kernels/windows.py: a padded
  convolution's windows by the taps that read the image, so that no product
  multiplies the padding;
- kernels/layout.py: layout-changing copies of 4-D arrays.

Tests check each kernel against its reference, the CUDA kernels on real
CuPy where a GPU is present and under ``NUMBA_ENABLE_CUDASIM=1`` otherwise
(tests/gpu_backend.py, tests/gpu_kernel_checks.py), and compile every CUDA
kernel to PTX where the CUDA compiler (NVVM) is installed
(tests/test_kernels_dispatch.py).
"""
# Numba's OpenMP threads run these kernels and, through kernels.gemm, the
# matrix products between them (BLAS set to one thread, each Numba thread
# calling it on its own block); idle threads spin briefly before they sleep
# (OpenMP's default), which keeps the next launch cheap. See kernels/gemm.py.

from .adam import adam_step, adam_step_reference, sgd_step, sgd_step_reference
from .bce import (bce_with_logits, bce_with_logits_forward,
                  bce_with_logits_forward_reference, bce_with_logits_reference)
from .gated import (gated_backward, gated_backward_reference, gated_forward,
                    gated_forward_reference)
from .gemm import matmul, matmul_reference
from .relu import (add_bias, add_bias_reference, relu_backward, relu_backward_reference,
                   relu_forward, relu_forward_reference)
from .vq import nearest_code, nearest_code_reference

# kernels.im2col (im2col, col2im) and kernels.sigmoid (sigmoid) are not
# re-exported here: a function would shadow its own module's name

__all__ = [
    "adam_step", "adam_step_reference", "sgd_step", "sgd_step_reference",
    "bce_with_logits", "bce_with_logits_reference",
    "bce_with_logits_forward", "bce_with_logits_forward_reference",
    "gated_forward", "gated_forward_reference", "gated_backward", "gated_backward_reference",
    "matmul", "matmul_reference",
    "nearest_code", "nearest_code_reference",
    "relu_backward", "relu_backward_reference", "relu_forward", "relu_forward_reference",
    "add_bias", "add_bias_reference",
]

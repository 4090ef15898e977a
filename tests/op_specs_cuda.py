"""The op specs with CUDA kernels on the GPU tests' backend (real CuPy, or the
CuPy stand-in under Numba's CUDA simulator): run by tests/test_op_specs.py in
one subprocess through ``gpu_backend.run_on_gpu``. Not a pytest module: each
check is an ``assert``; ``main()`` prints one line per spec and "GPU OK" at
the end (what ``run_on_gpu`` waits for).

For every spec whose implementations include "cuda", every case, in float32
and float64, with C-order, channels-last and non-contiguous inputs and
upstream gradient: forward and backward on device arrays must

- launch CUDA kernels (counted by wrapping the kernel modules' launchers,
  ``kernels.*._*_cuda``, which works on both backends), with C-order and
  with channels-last inputs (non-contiguous ones may take the xp reference;
  a 1x1 convolution has no im2col to launch);
- return device arrays and leave the inputs and the upstream gradient
  unchanged (tests/op_specs_harness.py);
- agree with the NumPy path in float64: to 1e-12 in float64, and to the
  spec's float32 tolerance in float32.

On the stand-in the kernels are launched with blocks of 16 threads instead
of 128: the simulator runs one Python thread per CUDA thread.
"""
import os
import sys

import numpy as np

import gpu_backend
from gpu_kernel_checks import LAUNCHES, _count_launches
from op_specs_harness import evaluate, prepared
from scratchvae.gradcheck import REGISTRY, relative_error
from scratchvae.gradcheck.problems import LAYOUTS

cupy = gpu_backend.check_child()   # real CuPy, or the stand-in under the simulator
assert "SCRATCHVAE_KERNELS" not in os.environ

THREADS = 16


def _small_blocks():
    for name, module in list(sys.modules.items()):
        if name.startswith("kernels.") and hasattr(module, "CUDA_THREADS"):
            module.CUDA_THREADS = THREADS


def check_spec(spec):
    """Every case of ``spec`` on the device against the host; returns the names
    of the CUDA kernels launched."""
    launched = {layout: set() for layout in LAYOUTS}
    for i, case in enumerate(spec.cases):
        problem = case.make(np.random.default_rng(0))
        host = evaluate(spec, prepared(problem.inputs, np.float64, "C-order"), problem.wrt,
                        "C-order")
        for layout in LAYOUTS:
            for dtype, tol in ((np.float64, 1e-12), (np.float32, spec.float32_tol)):
                del LAUNCHES[:]
                inputs = prepared(problem.inputs, dtype, layout, xp=cupy)
                out, grads = evaluate(spec, inputs, problem.wrt, layout, xp=cupy)
                launched[layout].update(LAUNCHES)
                where = f"{spec.name} case {i}, {np.dtype(dtype).name}, {layout}"
                results = [("out", out, host[0])] + [(k, grads[k], host[1][k]) for k in grads]
                for name, got, want in results:
                    assert isinstance(got, cupy.ndarray), f"{where}: {name} left the device"
                    assert got.dtype == dtype, f"{where}: {name} is {got.dtype}"
                    err = relative_error(got, want)
                    assert err <= tol, f"{where}: {name} off by {err:.1e}"
    for layout in ("C-order", "channels-last"):   # non-contiguous may take the reference
        assert launched[layout], f"{spec.name}, {layout}: no CUDA kernel launched"
    return sorted(set().union(*launched.values()))


def main():
    _count_launches()
    if not gpu_backend.on_real_cupy():
        _small_blocks()
    specs = [s for s in REGISTRY.values() if s.cases and "cuda" in s.implementations]
    assert specs
    for spec in specs:
        print(f"{spec.name}: CUDA kernels {', '.join(check_spec(spec))}", flush=True)
    print("GPU OK")

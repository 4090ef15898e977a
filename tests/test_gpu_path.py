"""The engine's GPU path, end to end, on the GPU tests' backend.

tests/gpu_backend.py chooses it: real CuPy on a CUDA device, or, where there
is none, a NumPy-based stand-in for CuPy (tests/fake_cupy/cupy, whose
docstring says what it mimics and what it cannot) put first on ``sys.path``
of a subprocess running under Numba's CUDA simulator. Either way whole
training steps go through the GPU path: ``get_xp`` returns ``cupy``,
``--device gpu`` selects it and the kernel dispatch sends its arrays to the
CUDA kernels. The checks
themselves are in tests/gpu_path_steps.py:

- ``steps``: two Adam steps of mlp-vae, conv-vae, conv-cvae and vq-vae (narrow
  instances on 4x4 images, CUDA blocks of 16 threads: the simulator runs one
  Python thread per CUDA thread) on the device and on the CPU path; the CUDA
  kernels must be reached wherever the CPU kernels are, on CuPy's current
  stream, with device arrays only; losses, parameters and test metrics must
  agree with the CPU path; parameters, gradients and optimiser and codebook
  state must stay on the device;
- ``cli``: ``train --device gpu`` (and ``--resume``), ``evaluate`` and
  ``sample`` of the full-size conv-cvae and vq-vae on the bundled sample,
  against the same commands on the CPU. Full-size models would take minutes
  per step in the simulator, so this part runs with
  ``SCRATCHVAE_KERNELS=reference`` (the engine's xp code on device arrays;
  the kernels are the ``steps`` part's business).

Passing proves the engine keeps device arrays on the device and reaches its
kernels there; it cannot prove that the code runs on real CuPy (see the
stand-in's docstring).
"""
import pytest

from gpu_backend import run_on_gpu

pytestmark = pytest.mark.gpu


def _run(part):
    return run_on_gpu(f"import gpu_path_steps; gpu_path_steps.main({part!r})")


def test_training_steps_reach_the_cuda_kernels_and_match_the_cpu_path():
    out = _run("steps")
    for model in ("mlp-vae", "conv-vae", "conv-cvae", "vq-vae"):
        assert f"{model}: " in out and "CUDA launches" in out


def test_command_line_with_device_gpu_matches_cpu():
    out = _run("cli")
    assert "cli conv-cvae: " in out and "cli vq-vae: " in out

"""Device-resident training epochs and the captured training step, without a GPU.

The checks run in a subprocess (tests/gpu_backend.py) on the CuPy stand-in (tests/fake_cupy, which
counts host transfers and allocations and emulates stream capture; its
docstring says what it mimics and what it cannot) under Numba's CUDA
simulator; they are in tests/gpu_resident_steps.py:

- ``eager``: scratchvae.device_loop.DeviceRun fed the CPU path's noise ends two
  epochs with the CPU path's losses and parameters (mlp-vae, conv-vae); with
  its own device noise a step makes no host transfer and the loss is read back
  once every LOSS_EVERY steps and at the epoch's end;
- ``graph``: scratchvae.graph_step.CapturedRun (mlp-vae, conv-vae, iwae-1l, vq-vae):
  its step run eagerly equals the CPU path fed the same batches, noise (the
  counter-based generator's NumPy reference) and learning rates; warm-up, one
  capture, replays equal the same steps run eagerly; a replayed step
  allocates no array; a failed capture warns once and trains on eagerly; too
  few images for one batch exits 1;
- ``rng``: the counter-based generator's CUDA kernel against its NumPy
  reference, Adam with device scalars against adam_step.

Here, in process: the generator's reference (moments, range, independence of
counters and streams) and Adam with device scalars on the host.
"""
from pathlib import Path

import numpy as np
import pytest

from gpu_backend import on_real_cupy, run_on_gpu
from kernels import adam as kadam
from kernels import counter_rng

# the counts and the capture emulation are the stand-in's; on a GPU,
# benchmarks/gpu_epoch_check.py checks the captured step against the eager one
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(on_real_cupy(), reason="stand-in checks (counts, emulated "
                                 "capture); on a GPU see benchmarks/gpu_epoch_check.py")]

TESTS = Path(__file__).resolve().parent


def _run(part):
    return run_on_gpu(f"import gpu_resident_steps; gpu_resident_steps.main({part!r})",
                      path=(TESTS,))


def test_device_epochs_match_the_cpu_and_read_the_loss_back_every_n_steps():
    out = _run("eager")
    assert "eager mlp-vae: " in out and "eager conv-vae: " in out and "eager transfers" in out


def test_captured_step_replays_the_eager_step_and_allocates_nothing():
    out = _run("graph")
    for model in ("mlp-vae", "conv-vae", "iwae-1l", "vq-vae"):
        assert f"graph {model}: captured run = eager run" in out
    assert "a failed capture warns once" in out and "exit 1" in out


def test_counter_rng_and_device_adam_kernels_match_their_references():
    assert "rng: counter-based kernel = reference" in _run("rng")


def test_counter_rng_reference_draws_normals_and_uniforms():
    z = counter_rng.normal_reference((200_000,), np.float64, 7, 0, 3)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(z ** 4) - 3) < 0.1               # the normal's fourth moment
    u = counter_rng.uniform_reference((200_000,), np.float64, 7, 1, 3)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    a = counter_rng.normal_reference((1000,), np.float32, 7, 0, 3)
    for other in ((7, 0, 4), (7, 1, 3), (8, 0, 3)):     # another step, stream, seed
        b = counter_rng.normal_reference((1000,), np.float32, *other)
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.1
    np.testing.assert_array_equal(a, counter_rng.normal_reference((1000,), np.float32, 7, 0, 3))


def test_counter_rng_checks_its_counter():
    with pytest.raises(ValueError, match="one-element int64"):
        counter_rng.fill_normal(np.zeros(3, np.float32), 0, 0, np.zeros(2, np.int64))


def test_adam_with_device_scalars_equals_adam_step_on_the_host():
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(100).astype(np.float32), rng.standard_normal(100).astype(np.float32)
    want, got = [p.copy(), np.zeros_like(p), np.zeros_like(p)], [p.copy(), np.zeros_like(p),
                                                                 np.zeros_like(p)]
    lr_table, t, scalars = np.array([1e-2, 3e-3]), np.zeros(1, np.int64), np.zeros(2, np.float32)
    for step in (1, 2, 3):        # the last step beyond the table: its last rate
        kadam.adam_step(want[0], g, want[1], want[2], step, lr_table[min(step, 2) - 1], 0.9,
                        0.999, 1e-8, 0.01)
        kadam.adam_advance(t, lr_table, 0.9, 0.999, scalars)
        kadam.adam_step_device(got[0], g, got[1], got[2], scalars, 0.9, 0.999, 1e-8, 0.01)
    assert t[0] == 3
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)

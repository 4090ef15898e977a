"""Device-resident epochs and the captured step on the CuPy stand-in, run by
tests/test_gpu_resident.py in a subprocess (tests/fake_cupy first on sys.path,
Numba's CUDA simulator on). Not a pytest module: each check is an ``assert``;
``main(part)`` prints "GPU OK" at the end.

Part ``eager`` (:class:`scratchvae.device_loop.DeviceRun`):

- with the CPU path's noise injected (``DeviceRun.Noise = HostNoise``), two
  epochs of a narrow mlp-vae and conv-vae (binarised, clipped, cosine lr) on
  the device end with the CPU path's epoch losses and parameters;
- with the device's own noise: the images are copied to the device once, a
  step transfers nothing to the host, the loss is read back every LOSS_EVERY
  steps and at the epoch's end (ceil(N / LOSS_EVERY) transfers per epoch of N
  steps), and a NaN is reported with the steps it was read back for.

Part ``graph`` (:class:`scratchvae.graph_step.CapturedRun`):

- the stand-in's capture: nothing runs while capturing, a launch replays,
  a host transfer during a capture is refused;
- mlp-vae, conv-vae, iwae-1l and vq-vae (narrow, binarised, cosine lr; the
  VQ-VAE with dead-code restarts at every step): the step run eagerly equals
  the CPU path fed the same batches, the counter-based generator's numbers
  (its NumPy reference; the restarts' picks, kernels/codes.py's) and the
  learning-rate table's rates; 3 eager steps, one capture, replays: the parameters, Adam's moments
  and the epoch losses equal those of the same run with every step eager; a
  replayed step allocates no new array and transfers nothing; Adam's step
  count on the host follows;
- a capture that fails leaves one GraphCaptureFailed warning and the same run;
- ``train --device gpu --cuda-graph`` with fewer images than one batch exits 1.

Part ``rng``: the counter-based generator's CUDA kernel equals its NumPy
reference; Adam with device scalars equals adam_step.

The models are narrow on 4x4 images and the kernels use blocks of 16 threads
(the simulator runs a Python thread per CUDA thread).
"""
import contextlib
import dataclasses
import io
import math
import sys
import tempfile
import time
import warnings

import cupy  # the stand-in: tests/fake_cupy is first on sys.path
import fake_cublas
import numpy as np
from numba import config, cuda

import kernels
from kernels import adam as kadam
from kernels import bce as kbce
from kernels import codes as kcodes
from kernels import counter_rng
from kernels import im2col as kim2col
from kernels import relu as krelu
from kernels import vq as kvq
from scratchvae import device_loop, graph_step
from scratchvae import train as train_mod
from scratchvae.backend import to_numpy
from scratchvae.config import TrainConfig
from scratchvae.models import conv_vae, iwae_1l, mlp_vae, vq_vae
from scratchvae.optimizers import Adam

assert config.ENABLE_CUDASIM, "run with NUMBA_ENABLE_CUDASIM=1"
assert "fake_cupy" in cupy.__file__, cupy.__file__
warnings.filterwarnings("ignore", message="overflow encountered")   # uint64 hashing, simulated

IMAGE = (1, 4, 4)
MODELS = {
    "mlp-vae": lambda rng: mlp_vae(image_shape=IMAGE, hidden_dim=6, latent_dim=2, rng=rng),
    "conv-vae": lambda rng: conv_vae(image_shape=IMAGE, channels=(2, 3), hidden_dim=6,
                                     latent_dim=2, rng=rng),
    "iwae-1l": lambda rng: iwae_1l(image_shape=IMAGE, hidden_dim=5, latent_dim=2, rng=rng,
                                   objective="iwae", n_samples=2),
    # 6 codes for 2 vectors per batch: codes go unused, so restarts happen every step
    "vq-vae": lambda rng: vq_vae(image_shape=IMAGE, channels=(2, 3), latent_dim=3,
                                 num_codes=6, restart_after=1, rng=rng),
}
THREADS = 16
F32 = dict(rtol=2e-5, atol=2e-6)


class Bar:
    """A progress bar that notes the host transfers made so far at each step."""

    def __init__(self):
        self.transfers = [cupy.counters()["to_host"]]    # before the epoch's first step

    def update(self, n):
        self.transfers.append(cupy.counters()["to_host"])

    def set_postfix(self, **kwargs):
        pass


def _images(n, seed=10):
    return np.random.default_rng(seed).random((n,) + IMAGE).astype(np.float32)


def _config(model, **options):
    options = dict(dict(model=model, epochs=2, batch_size=2, lr=1e-2, device="gpu"), **options)
    return TrainConfig(**options)


def _diverged(what):
    return train_mod.TrainingDiverged(what)


def _setup(name, xp, seed=0):
    model = MODELS[name](np.random.default_rng(seed)).to(xp)
    return model, Adam(model.parameters(), lr=1e-2)


def _state(model, optimizer):
    state = {k: np.asarray(v) for k, v in model.state_dict().items()}
    for i, (m, v) in enumerate(zip(optimizer.exp_avg, optimizer.exp_avg_sq)):
        state[f"m{i}"], state[f"v{i}"] = to_numpy(m), to_numpy(v)
    return state


# --------------------------------------------------------------------------
# part eager
# --------------------------------------------------------------------------

def _cpu_epochs(name, cfg, x):
    model, optimizer = _setup(name, np)
    shuffle_rng, noise_rng = np.random.default_rng(1), np.random.default_rng(2)
    losses, step = [], 0
    spe = -(-x.shape[0] // cfg.batch_size)
    for epoch in range(1, cfg.epochs + 1):
        loss, step = train_mod._cpu_epoch(model, optimizer, cfg, x, None, shuffle_rng,
                                          noise_rng, epoch, step, spe, "", False, "", False)
        losses.append(loss)
    return losses, _state(model, optimizer)


def _device_epochs(name, cfg, x, run_class=device_loop.DeviceRun, bars=None, prepare=False):
    model, optimizer = _setup(name, cupy)
    shuffle_rng, noise_rng = np.random.default_rng(1), np.random.default_rng(2)
    run = run_class(cupy, cfg, x, None, shuffle_rng, noise_rng, np.random.SeedSequence(3))
    if prepare:
        run.prepare(model, optimizer, log=lambda *a: None)
    losses, step = [], 0
    for epoch in range(1, cfg.epochs + 1):
        bar = Bar()
        loss, step = run.epoch(model, optimizer, epoch, step, bar, _diverged)
        losses.append(loss)
        if bars is not None:
            bars.append(bar)
    return losses, _state(model, optimizer), run, (model, optimizer)


def check_same_as_cpu():
    x = _images(7)    # 4 batches of 2, 2, 2, 1
    for name in ("mlp-vae", "conv-vae"):
        cfg = _config(name, binarize=True, clip_grad_norm=0.5, lr_schedule="cosine")
        want_losses, want = _cpu_epochs(name, cfg, x)
        device_loop.DeviceRun.Noise = device_loop.HostNoise
        try:
            got_losses, got, _, _ = _device_epochs(name, cfg, x)
        finally:
            device_loop.DeviceRun.Noise = device_loop.DeviceNoise
        np.testing.assert_allclose(got_losses, want_losses, **F32)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], err_msg=f"{name} {key}", **F32)
        print(f"eager {name}: device run with the CPU's noise = CPU run, losses {got_losses}")


def check_transfers():
    device_loop.LOSS_EVERY = 5            # read-backs at steps 5, 10 and the epoch's 12th
    x = _images(24)
    cfg = _config("mlp-vae", binarize=True)
    cupy.reset_counters()
    bars = []
    losses, _, run, _ = _device_epochs("mlp-vae", cfg, x, bars=bars)
    for bar in bars:
        steps = len(bar.transfers) - 1
        assert steps == 12, steps
        # made[k]: the transfers of step k + 1 (and of a read-back after step k)
        made = np.diff(bar.transfers)
        read_back = (5, 10)
        assert all(made[k] == (1 if k in read_back else 0) for k in range(steps)), made
        total = bar.transfers[-1] - bar.transfers[0] + 1          # + the last read-back
        assert total == math.ceil(steps / 5), total
    assert all(map(math.isfinite, losses)), losses
    # the noise buffers and the batch buffers are made once
    assert len(run.noise.buffers) == 2 and len(run.batches) == 1, (run.noise.buffers, run.batches)
    before = cupy.counters()["allocations"]
    cupy.asarray(x)
    assert cupy.counters()["allocations"] == before + 1   # the counter sees a new array

    # a NaN in the parameters: the read-back names the steps it covers
    model, optimizer = _setup("mlp-vae", cupy)
    model.parameters()[0].data[...] = np.nan
    run = device_loop.DeviceRun(cupy, cfg, x, None, np.random.default_rng(1),
                                np.random.default_rng(2), np.random.SeedSequence(3))
    try:
        run.epoch(model, optimizer, 1, 0, Bar(), _diverged)
    except train_mod.TrainingDiverged as e:
        assert "at epoch 1, in steps 1 to 5" in str(e), e
    else:
        raise AssertionError("a NaN loss did not stop the epoch")
    device_loop.LOSS_EVERY = 50
    print(f"eager transfers: one per {5} steps and one at the epoch's end; NaN named")


# --------------------------------------------------------------------------
# part graph
# --------------------------------------------------------------------------

def check_stand_in_capture():
    a = cupy.arange(4, dtype=cupy.float32)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        a += 1
        b = a * 2
        graph = stream.end_capture()
    np.testing.assert_array_equal(a.get(), [0, 1, 2, 3])      # nothing ran
    graph.launch()
    graph.launch()
    np.testing.assert_array_equal(a.get(), [2, 3, 4, 5])
    np.testing.assert_array_equal(b.get(), [4, 6, 8, 10])
    refused = {"a transfer": (lambda: float(a.sum()), RuntimeError, "capture"),
               "a CuPy product (cuBLAS)": (lambda: a.reshape(2, 2) @ a.reshape(2, 2),
                                           NotImplementedError, "during stream capture")}
    for what, (operation, error, words) in refused.items():
        with stream:
            stream.begin_capture()
            try:
                operation()
            except error as e:
                assert words in str(e), (what, e)
            else:
                raise AssertionError(f"{what} during a capture was accepted")
            finally:
                stream.end_capture()


def _cpu_captured(name, cfg, x, seed):
    """What a captured run computes, on the CPU path (graph_step.reference_epochs)."""
    model, optimizer = _setup(name, np)
    losses = graph_step.reference_epochs(model, optimizer, cfg, x, np.random.default_rng(1),
                                         seed)
    return losses, _state(model, optimizer)


#: the stand-in cuBLAS library the captured runs' handles call (part ``graph``)
FAKE_CUBLAS = []


def check_captured(name):
    x = _images(9)                        # 4 full batches of 2 per epoch, 1 image left out
    cfg = _config(name, binarize=True, cuda_graph=True, lr_schedule="cosine")
    # every step eager: the same step function, never captured
    eager = graph_step.WARMUP_STEPS
    graph_step.WARMUP_STEPS = 10 ** 9
    try:
        want_losses, want, _, _ = _device_epochs(name, cfg, x, graph_step.CapturedRun,
                                                 prepare=True)
    finally:
        graph_step.WARMUP_STEPS = eager
    # the eager step is the CPU path's step with the same batches, noise and rates
    picks, fisher_yates = [], kcodes.fisher_yates_picks
    kcodes.fisher_yates_picks = lambda n, *a: picks.append(n) or fisher_yates(n, *a)
    try:
        cpu_losses, cpu = _cpu_captured(name, cfg, x, seed_of_run(cfg, x))
    finally:
        kcodes.fisher_yates_picks = fisher_yates
    if name == "vq-vae":       # dead codes restarted at every step, from both rows
        assert picks == [2] * 8, picks
    np.testing.assert_allclose(want_losses, cpu_losses, **F32)
    for key in cpu:
        np.testing.assert_allclose(want[key], cpu[key], err_msg=f"{name} {key}", **F32)
    cupy.reset_counters()
    del FAKE_CUBLAS[0].calls[:]
    with warnings.catch_warnings():
        warnings.simplefilter("error", graph_step.GraphCaptureFailed)
        got_losses, got, run, (model, optimizer) = _device_epochs(
            name, cfg, x, graph_step.CapturedRun, prepare=True)
    assert run.graph is not None and run.eager_steps == graph_step.WARMUP_STEPS, run.eager_steps
    # the products ran on the run's own handle (CuPy's `@` refuses a capturing stream),
    # bound to the run's stream with the workspace allocated before the warm-up
    calls = FAKE_CUBLAS[0].calls
    assert ("cublasSetStream_v2", (calls[0][1][0], run.stream.ptr)) in calls, calls[:3]
    assert ("cublasSetWorkspace_v2", (calls[0][1][0], run.workspace.data.ptr,
                                      graph_step.CUBLAS_WORKSPACE_BYTES)) in calls, calls[:3]
    assert sum(c[0] == "cublasSgemm_v2" for c in calls) >= 3 * (graph_step.WARMUP_STEPS + 1)
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-6)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name} {key}")
    assert optimizer.steps == [8] * len(optimizer.steps), optimizer.steps
    assert optimizer.flat_arrays() is not None     # Adam's one launch over its flat buffer
    assert all(map(math.isfinite, got_losses))
    # a replayed step: no new array, no transfer
    with run.stream:
        run.k.fill(0)
        before = cupy.counters()
        run._run_step()
        after = cupy.counters()
    assert after == before, (before, after)
    print(f"graph {name}: captured run = eager run, losses {got_losses}; a replay allocates "
          f"nothing")


def seed_of_run(cfg, x):
    """The counter-based generator's seed of a CapturedRun made as _device_epochs makes it."""
    run = graph_step.CapturedRun(cupy, cfg, x, None, np.random.default_rng(1),
                                 np.random.default_rng(2), np.random.SeedSequence(3))
    model, optimizer = _setup("mlp-vae", cupy)
    run.prepare(model, optimizer, log=lambda *a: None)
    return run.seed


def _patched_run(owner, name, replacement, cfg, x):
    """A captured run with ``owner.name`` replaced: (parameters, run, the
    GraphCaptureFailed messages)."""
    real = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, got, run, _ = _device_epochs("mlp-vae", cfg, x, graph_step.CapturedRun,
                                            prepare=True)
    finally:
        setattr(owner, name, real)
    return got, run, [str(w.message) for w in caught
                      if issubclass(w.category, graph_step.GraphCaptureFailed)]


def check_capture_failure():
    from kernels import cublas

    x = _images(8)
    cfg = _config("mlp-vae", cuda_graph=True)

    def refuse(self, mode=None):
        raise RuntimeError("operation not permitted when stream is capturing")
    got, run, failed = _patched_run(cupy.cuda.Stream, "begin_capture", refuse, cfg, x)
    assert len(failed) == 1 and "operation not permitted" in failed[0], failed
    assert run.graph is None and run.eager_steps == 8
    # a step that reads a host value while capturing: its own error is the reason given
    real_step = graph_step.CapturedRun.step

    def reading_step(self):
        real_step(self)
        float(self.window)
    _, _, failed = _patched_run(graph_step.CapturedRun, "step", reading_step,
                                dataclasses.replace(cfg, epochs=1), x)
    assert len(failed) == 1 and "float() (a device-to-host transfer)" in failed[0], failed
    assert not cupy.cuda.get_current_stream().is_capturing()
    graph_step.WARMUP_STEPS, eager = 10 ** 9, graph_step.WARMUP_STEPS
    try:
        _, want, _, _ = _device_epochs("mlp-vae", cfg, x, graph_step.CapturedRun, prepare=True)
    finally:
        graph_step.WARMUP_STEPS = eager
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)

    # no cuBLAS library for the run's own handle: one warning, CuPy's products, eager
    def missing(xp):
        raise cublas.CublasNotFound("no libcublas.so is mapped into this process")
    got, run, failed = _patched_run(cublas, "load_library", missing, cfg, x)
    assert len(failed) == 1 and "no cuBLAS handle of the run's own (CublasNotFound" in failed[0]
    assert run.graph is None and run.cublas is None and run.eager_steps == 8
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)
    print("graph: a failed capture warns once and the run goes on eagerly")


def check_too_few_images():
    from scratchvae.cli import main

    with tempfile.TemporaryDirectory() as root:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = main(["train", "--model", "mlp-vae", "--device", "gpu", "--cuda-graph",
                       "--sample", "--train-limit", "4", "--test-limit", "4", "--batch-size",
                       "8", "--epochs", "1", "--no-progress", "--out", root + "/run"])
    assert rc == 1, (rc, err.getvalue())
    assert "fewer than one batch of 8" in err.getvalue(), err.getvalue()
    print("graph: too few images for one batch: exit 1")


# --------------------------------------------------------------------------
# part rng: kernels against their references
# --------------------------------------------------------------------------

def check_kernels():
    counter = np.array([41], np.int64)
    for normal, shape in ((True, (3, 7, 2)), (False, (50,))):
        out = np.zeros(shape, np.float32)
        key = np.uint64(counter_rng.stream_key(5, 1))
        counter_rng._fill_cuda(out.reshape(-1), key, counter, normal)
        draw = counter_rng.normal_reference if normal else counter_rng.uniform_reference
        np.testing.assert_allclose(out, draw(shape, np.float32, 5, 1, 41), rtol=1e-6, atol=1e-7)
    dev = cupy.zeros((4, 3), cupy.float32)
    counter_rng.fill_normal(dev, 5, 0, cupy.asarray(counter))     # dispatched to the kernel
    np.testing.assert_allclose(dev.get(), counter_rng.normal_reference((4, 3), np.float32,
                                                                       5, 0, 41), rtol=1e-6)
    # Adam with its scalars on the device = adam_step at step t
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(40).astype(np.float32), rng.standard_normal(40).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    want = [a.copy() for a in (p, m, v)]
    lr_table = np.array([1e-2, 5e-3, 2e-3])
    dp, dm, dv = (cupy.asarray(a) for a in (p, m, v))
    t, scalars = cupy.asarray(np.array([0], np.int64)), cupy.zeros(2, cupy.float32)
    for step in (1, 2, 3):
        kadam.adam_step(*want[:1], g, *want[1:], step, lr_table[step - 1], 0.9, 0.999, 1e-8)
        kadam.adam_advance(t, cupy.asarray(lr_table), 0.9, 0.999, scalars)
        kadam.adam_step_device(dp, cupy.asarray(g), dm, dv, scalars, 0.9, 0.999, 1e-8)
    assert int(t[0]) == 3
    for got, w in zip((dp, dm, dv), want):
        np.testing.assert_allclose(got.get(), w, rtol=1e-6, atol=1e-9)
    print("rng: counter-based kernel = reference; device-scalar Adam = adam_step")


def main(part):
    t0 = time.perf_counter()
    for module in (kadam, kbce, kcodes, kim2col, krelu, kvq, counter_rng):
        module.CUDA_THREADS = THREADS
    if not hasattr(cuda, "external_stream"):   # the simulator has none; a launch names it
        cuda.external_stream = lambda ptr: ("external_stream", ptr)
    if part == "eager":
        check_same_as_cpu()
        check_transfers()
    elif part == "graph":
        FAKE_CUBLAS.append(fake_cublas.install())   # the run's own cuBLAS handle calls it
        check_stand_in_capture()
        for name in MODELS:
            check_captured(name)
        check_capture_failure()
        check_too_few_images()
    else:
        check_kernels()
    print(f"seconds: {time.perf_counter() - t0:.1f}")
    print("GPU OK")


if __name__ == "__main__":
    main(sys.argv[1])

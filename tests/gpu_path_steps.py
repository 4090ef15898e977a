"""The GPU path of the engine on the GPU tests' backend, run by
tests/test_gpu_path.py in a subprocess through ``gpu_backend.run_on_gpu``:
real CuPy on a CUDA device, or the CuPy stand-in (tests/fake_cupy) under
Numba's CUDA simulator. Not a pytest module: each check is an ``assert``;
``main("steps")`` and ``main("cli")`` print "GPU OK" at the end (what
``run_on_gpu`` waits for).

What only the stand-in can show is guarded: on real CuPy the checks that the
stand-in refuses host arrays are skipped (printed as such), the launch
streams are read from the streams the kernel modules ask for instead of the
simulator's launches, the kernels keep their 128 threads, and part ``cli``
runs the CUDA kernels instead of the xp reference.

Part ``steps``: first, the stand-in refuses what CuPy refuses (host arrays
mixed with device arrays, implicit conversions) and a kernel's writes land in
the array. Then, for mlp-vae, conv-vae, conv-cvae and vq-vae, two Adam steps
on batches of 2, with the images, parameters, gradients, optimiser moments and
the codebook's buffers on the "device" and the CUDA kernels chosen by the
dispatch; and the same steps on the CPU path (NumPy arrays, Numba CPU kernels)
from the same weights, batches and noise. Checked:

- (a) the dispatch chose "cuda" on the device exactly where it chose "cpu" on
  the host (no silent fall-back to the reference), every kernel the model
  uses was launched (adam, bce, relu forward and backward; im2col and col2im for the conv models,
  through kernels/conv_gemm.py;
  the nearest-code search for the VQ-VAE), each launch with device arrays only
  and on CuPy's current stream (conv-vae and vq-vae run inside
  ``with cupy.cuda.Stream():``);
- (b) losses, parameters after the steps, test metrics, and the IW-NLL,
  samples and reconstructions of the VAEs or the codes of the VQ-VAE agree
  with the CPU path to float32 tolerance (the VQ-VAE's dead-code restarts
  happen in these steps);
- (c) every parameter, gradient, Adam moment and VQ buffer is a device array,
  state_dict()s are host arrays, and a state loaded into a device model, and
  into its optimiser, lands on the device;
- the batch iterator (binarised, host labels) and random_shift on
  device-resident images give the host's batches.

Time: under the simulator every CUDA thread is a Python thread, so the models
are narrow instances (the tests' gradient-check kind) on 4x4 images, and the
kernels are launched with blocks of 16 threads instead of the engine's 128
(:data:`THREADS`; the kernels are written for any power of two).

Part ``cli``: ``python -m scratchvae train --device gpu`` (through
``cli.main``) for conv-cvae (2 samples per image, binarised, clipped, cosine
lr) and vq-vae (EMA codebook, SGD with momentum) on the bundled sample (4
training and 4 test images, batches of 2), ``--resume`` to a second epoch
(the cosine run is trained for 2 epochs and interrupted after the first),
then ``evaluate`` (with a short IW-NLL) and ``sample``; the checkpoints,
metrics and evaluations agree with the same commands on the CPU. These
full-size models would take minutes per step in the simulator, so this part
runs with ``SCRATCHVAE_KERNELS=reference``: the engine's xp code on stand-in
arrays, not the CUDA kernels (part ``steps`` covers those).
"""
import contextlib
import io
import json
import os

os.environ.setdefault("MPLBACKEND", "Agg")   # `sample` draws a PNG

import sys
import tempfile
import time

import numpy as np
from numba import cuda

import gpu_backend
import kernels
from kernels import adam as kadam
from kernels import bce as kbce
from kernels import conv_gemm as kconv
from kernels import im2col as kim2col
from kernels import relu as krelu
from kernels import vq as kvq
from scratchvae import data
from scratchvae.backend import (get_array_module, get_xp, new_rng, standard_normal, to_device,
                                to_numpy)
from scratchvae.metrics import iw_nll
from scratchvae.models import CVAE, VQVAE, conv_cvae, conv_vae, mlp_vae, vq_vae
from scratchvae.optimizers import Adam, clip_grad_norm

cupy = gpu_backend.check_child()    # real CuPy, or the stand-in under the simulator
REAL = gpu_backend.on_real_cupy()

IMAGE = (1, 4, 4)
N_CLASSES = 10
MODELS = {
    "mlp-vae": lambda rng: mlp_vae(image_shape=IMAGE, hidden_dim=6, latent_dim=2, rng=rng),
    "conv-vae": lambda rng: conv_vae(image_shape=IMAGE, channels=(2, 3), hidden_dim=6,
                                     latent_dim=2, rng=rng),
    "conv-cvae": lambda rng: conv_cvae(image_shape=IMAGE, channels=(2, 3), hidden_dim=6,
                                       latent_dim=2, n_classes=N_CLASSES, rng=rng),
    # 6 codes for 2 vectors per batch: unused codes, so dead-code restarts happen
    "vq-vae": lambda rng: vq_vae(image_shape=IMAGE, channels=(2, 3), latent_dim=3,
                                 num_codes=6, restart_after=1, rng=rng),
}
#: CUDA launchers of each kernel module, and the ones each model must reach
LAUNCHERS = {"adam": (kadam, "_adam_cuda"), "bce": (kbce, "_bce_cuda"),
             "bce-forward": (kbce, "_bce_forward_cuda"),
             "relu": (krelu, "_relu_backward_cuda"), "relu-forward": (krelu, "_relu_forward_cuda"),
             "im2col": (kim2col, "_im2col_cuda"),
             "col2im": (kim2col, "_col2im_cuda"), "nearest": (kvq, "_nearest_cuda")}
DENSE = {"adam", "bce", "bce-forward", "relu", "relu-forward"}
CONV = DENSE | {"im2col", "col2im"}
NEEDED = {"mlp-vae": DENSE, "conv-vae": CONV, "conv-cvae": CONV, "vq-vae": CONV | {"nearest"}}
#: models whose device run happens inside ``with cupy.cuda.Stream():``
ON_A_STREAM = ("conv-vae", "vq-vae")

#: threads per block of the CUDA kernels here: the simulator runs one Python thread
#: per CUDA thread, and the engine's 128 make this part several times slower
THREADS = 16

# float32: CUDA kernels (float64 inside) vs CPU kernels; on a GPU, cuBLAS and
# CuPy's reductions round differently from NumPy's, and two Adam steps carry it on
F32 = dict(rtol=1e-4, atol=1e-5) if REAL else dict(rtol=2e-5, atol=2e-6)


# --------------------------------------------------------------------------
# spies: the dispatch's choices, the CUDA launches, their streams
# --------------------------------------------------------------------------

CHOICES, LAUNCHES, STREAMS = [], [], []


def _spy_choose(module):
    real = module.choose

    def choose(*arrays):
        impl = real(*arrays)
        CHOICES.append((module.__name__, impl))
        return impl
    module.choose = choose


def _spy_launcher(name, module, attr):
    real = getattr(module, attr)

    def launch(*args):
        host = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
        assert not host, f"{name}: CUDA kernel launched with host arrays (arguments {host})"
        assert any(isinstance(a, cupy.ndarray) for a in args), name
        LAUNCHES.append(name)
        return real(*args)
    setattr(module, attr, launch)


class ExternalStream:
    """What ``numba.cuda.external_stream(ptr)`` returns (the simulator has none)."""

    def __init__(self, ptr):
        self.ptr = ptr

    def __eq__(self, other):
        return isinstance(other, ExternalStream) and other.ptr == self.ptr

    def __repr__(self):
        return f"external_stream({self.ptr:#x})"


def _stream_ptr(stream):
    """The CUDA stream handle of what a kernel module launches on (0: the null stream)."""
    if isinstance(stream, int):
        return stream
    handle = getattr(stream, "handle", stream)
    return int(getattr(handle, "value", handle) or 0)


def _spy_stream(module):
    """On real CuPy: record the stream each launch of ``module`` asks for."""
    real = module.cuda_stream

    def cuda_stream(a):
        stream = real(a)
        STREAMS.append((module.__name__, ExternalStream(_stream_ptr(stream))
                        if _stream_ptr(stream) else 0))
        return stream
    module.cuda_stream = cuda_stream


def _install_spies():
    for module in (kadam, kbce, kim2col, krelu, kvq):
        if not REAL:
            module.CUDA_THREADS = THREADS                 # see the module docstring
        _spy_choose(module)
    _spy_choose(kconv)             # the conv products, which launch im2col's CUDA kernels
    for name, (module, attr) in LAUNCHERS.items():
        _spy_launcher(name, module, attr)
    if REAL:
        for module in (kadam, kbce, kim2col, krelu, kvq):
            _spy_stream(module)
        return
    if not hasattr(cuda, "external_stream"):
        cuda.external_stream = ExternalStream
    from numba.cuda.simulator import kernel as simulator_kernel

    real_getitem = simulator_kernel.FakeCUDAKernel.__getitem__

    def getitem(self, configuration):
        STREAMS.append((self.fn.__name__, configuration[2] if len(configuration) > 2 else 0))
        return real_getitem(self, configuration)
    simulator_kernel.FakeCUDAKernel.__getitem__ = getitem


def _reset_spies():
    del CHOICES[:], LAUNCHES[:], STREAMS[:]


# --------------------------------------------------------------------------
# part 1: training steps on the device and on the host
# --------------------------------------------------------------------------

def _data(n=4):
    rng = np.random.default_rng(10)
    x = rng.random((n,) + IMAGE).astype(np.float32)
    y = rng.integers(0, N_CLASSES, size=n)
    return x, y


def _arrays_of(model, optimizer):
    """Every parameter, gradient, Adam moment and VQ buffer: name -> array."""
    found = {}
    for name, p in model.named_parameters():
        found[name] = p.data
        if p.grad is not None:
            found[name + ".grad"] = p.grad
    for i, (m, v) in enumerate(zip(optimizer.exp_avg, optimizer.exp_avg_sq)):
        found[f"adam.exp_avg.{i}"], found[f"adam.exp_avg_sq.{i}"] = m, v
    if isinstance(model, VQVAE):
        for name, arr in model.quantizer.buffers().items():
            if name != "ema_steps":        # a host scalar by design
                found["quantizer." + name] = arr
    return found


def run_model(name, xp, steps=2):
    """Train ``steps`` Adam steps like train.py does; return what to compare."""
    model = MODELS[name](np.random.default_rng(0)).to(xp)
    optimizer = Adam(model.parameters(), lr=1e-2)
    x, y = _data()
    shuffle_rng, noise_rng = np.random.default_rng(1), np.random.default_rng(2)
    x_dev = to_device(x, xp)                           # device-resident images, host labels
    out = {"loss": [], "restarted": 0}
    batches = data.iterate_batches(x_dev, y, 2, rng=shuffle_rng, shuffle=True, binarize=True)
    for step, (xb, yb) in enumerate(batches):
        assert get_xp(xb) is xp and isinstance(yb, np.ndarray)
        if step == steps:
            break
        codebook_before = None
        if isinstance(model, VQVAE):
            codebook_before = to_numpy(model.quantizer.codebook.data).copy()
        optimizer.zero_grad()
        loss, _ = model.loss(xb, rng=noise_rng, labels=yb, step=step)
        out["loss"].append(float(loss))
        if codebook_before is not None:                # restarts replace unused codes
            out["restarted"] += int((to_numpy(model.quantizer.codebook.data)
                                     != codebook_before).any(axis=1).sum())
        model.backward()
        clip_grad_norm(model.parameters(), 1e3)
        optimizer.step()
    arrays = _arrays_of(model, optimizer)
    wrong = [k for k, a in arrays.items() if get_xp(a) is not xp]
    assert not wrong, f"{name}: not on {xp.__name__}: {wrong}"
    out["arrays"] = {k: to_numpy(a).copy() for k, a in arrays.items()}

    state, optim_state = model.state_dict(), optimizer.state_dict()
    host = [k for k, a in list(state.items()) + list(enumerate(optim_state["exp_avg"]))
            if type(a) is not np.ndarray]
    assert not host, f"{name}: state_dict entries that are not NumPy arrays: {host}"
    clone = MODELS[name](np.random.default_rng(99)).to(xp)
    clone.load_state_dict(state)
    clone_optimizer = Adam(clone.parameters(), lr=1e-2)
    clone_optimizer.load_state_dict(optim_state)
    for key, a in _arrays_of(clone, clone_optimizer).items():
        assert get_xp(a) is xp, f"{name}: {key} loaded off the device"
        np.testing.assert_array_equal(to_numpy(a), out["arrays"][key], err_msg=key)

    x_test, y_test = _data(3)
    rng = np.random.default_rng(3)
    out["metrics"] = model.test_metrics(x_test, labels=y_test, batch_size=3, rng=rng)
    if isinstance(model, VQVAE):
        out["codes"] = to_numpy(model.codes(xp.asarray(x_test)))
        out["reconstruct"] = to_numpy(model.reconstruct(xp.asarray(x_test)))
    else:
        out.update(iw_nll(model, x_test, y_test, k=3, chunk=3, batch_size=3, rng=rng))
        if isinstance(model, CVAE):
            out["sample"] = to_numpy(model.sample(3, rng, labels=y_test))
            out["reconstruct"] = to_numpy(model.reconstruct(xp.asarray(x_test), y_test))
        else:
            out["sample"] = to_numpy(model.sample(3, rng))
            out["reconstruct"] = to_numpy(model.reconstruct(xp.asarray(x_test)))
    return out


def _assert_close(name, got, want):
    if isinstance(want, dict):
        assert got.keys() == want.keys(), (name, sorted(got), sorted(want))
        for key in want:
            _assert_close(f"{name}.{key}", got[key], want[key])
    elif isinstance(want, (float, list, np.ndarray, np.floating)):
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64),
                                   np.asarray(want, dtype=np.float64), err_msg=name, **F32)
    else:
        assert got == want, (name, got, want)


def _split_relus(choices):
    """(the choices of every kernel but ReLU's, the implementations ReLU's took)."""
    return ([c for c in choices if c[0] != "kernels.relu"],
            [impl for module, impl in choices if module == "kernels.relu"])


def check_steps():
    timings = {}
    for name in MODELS:
        t0 = time.perf_counter()
        _reset_spies()
        host = run_model(name, np)
        host_choices = list(CHOICES)
        assert not LAUNCHES, f"{name}: CUDA kernels launched on the host path: {LAUNCHES}"

        _reset_spies()
        if name in ON_A_STREAM:
            with cupy.cuda.Stream(non_blocking=True) as stream:
                device = run_model(name, cupy)
            expected_stream = ExternalStream(stream.ptr)
        else:
            device = run_model(name, cupy)
            expected_stream = 0
        # (a) the CUDA kernels, exactly where the host path took the CPU kernels; the
        # ReLUs next to a convolution, fused into its product's epilogue on the CPU,
        # are launches of their own on the GPU (kernels/conv_gemm.py): counted apart
        host_rest, host_relus = _split_relus(host_choices)
        device_rest, device_relus = _split_relus(CHOICES)
        assert device_rest == [(m, "cuda" if impl == "cpu" else impl)
                               for m, impl in host_rest], (
            name, [(h, d) for h, d in zip(host_rest, device_rest) if h[1] != "reference"
                   and d[1] != "cuda"][:5], len(host_rest), len(device_rest))
        assert set(device_relus) <= {"cuda"} and len(device_relus) >= len(host_relus), (
            name, device_relus, host_relus)
        missing = NEEDED[name] - set(LAUNCHES)
        assert not missing, f"{name}: CUDA kernels never launched: {sorted(missing)}"
        off_stream = sorted({k for k, s in STREAMS if s != expected_stream})
        assert not off_stream, (f"{name}: kernels launched off CuPy's current stream "
                                f"({expected_stream!r}): {off_stream}")
        # (b) the numbers of the CPU path
        _assert_close(name, device, host)
        assert all(np.isfinite(host["loss"]))
        initial = MODELS[name](np.random.default_rng(0)).named_parameters()
        still = [k for k, p in initial if np.array_equal(p.data, host["arrays"][k])]
        assert not still, f"{name}: parameters the steps did not change: {still}"
        if name == "vq-vae":
            assert host["restarted"] > 0, "no dead code was restarted: the test misses them"
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {len(LAUNCHES)} CUDA launches "
              f"({', '.join(sorted(set(LAUNCHES)))}); losses {device['loss']}")
    return timings


def check_data_on_device():
    """random_shift and the batch iterator (binarised, with labels) on device images."""
    x, y = _data(5)
    x_dev = cupy.asarray(x)
    for shift in (0, 2):
        for xp_x in (x, x_dev):
            got = list(data.iterate_batches(xp_x, y, 2, rng=np.random.default_rng(4),
                                            shuffle=True, binarize=True, shift=shift))
            if xp_x is x:
                want = got
                continue
            for (xb, yb), (wb, wy) in zip(got, want):
                assert isinstance(xb, cupy.ndarray) and isinstance(yb, np.ndarray)
                np.testing.assert_array_equal(xb.get(), wb)
                np.testing.assert_array_equal(yb, wy)
    shifted = data.random_shift(x_dev, 1, np.random.default_rng(5))
    assert isinstance(shifted, cupy.ndarray)
    np.testing.assert_array_equal(shifted.get(), data.random_shift(x, 1, np.random.default_rng(5)))


# --------------------------------------------------------------------------
# part 2: the command line with --device gpu
# --------------------------------------------------------------------------

def _cli(*argv):
    from scratchvae.cli import main

    rc = main([str(a) for a in argv])
    assert rc == 0, (argv, rc)


def _cli_stopped_after_epoch_1(*argv):
    """``train ARGV`` interrupted once its first epoch is written, as a kill would stop it."""
    import scratchvae.train
    from scratchvae.cli import main

    def interrupt(record):
        raise KeyboardInterrupt
    real, scratchvae.train.format_epoch = scratchvae.train.format_epoch, interrupt
    try:
        rc = main([str(a) for a in argv])
    finally:
        scratchvae.train.format_epoch = real
    assert rc == 130, (argv, rc)


def check_cli(root):
    from scratchvae import device_loop

    if not REAL:
        os.environ["SCRATCHVAE_KERNELS"] = "reference"   # see the module docstring
    device_loop.DeviceRun.Noise = device_loop.HostNoise   # the CPU path's eps on the device
    assert get_array_module("gpu") is cupy
    common = ["--epochs", 1, "--batch-size", 2, "--train-limit", 4, "--test-limit", 4,
              "--sample", "--no-progress", "--seed", 3]
    options = {"conv-cvae": ["--samples", 2, "--binarize", "--clip-grad-norm", 5,
                             "--lr-schedule", "cosine"],
               "vq-vae": ["--vq-ema", "--optimizer", "sgd"],
               "classifier": ["--augment-shift", 1]}
    for model, extra in options.items():
        runs = {}
        for device in ("cpu", "gpu"):
            out = os.path.join(root, f"{model}-{device}")
            if "cosine" in extra:   # a cosine run resumes only to its own epochs: 2, cut after 1
                _cli_stopped_after_epoch_1("train", "--model", model, "--device", device,
                                           "--out", out, *common, *extra, "--epochs", 2)
                _cli("train", "--resume", out, "--no-progress")
            else:
                _cli("train", "--model", model, "--device", device, "--out", out, *common,
                     *extra)
                _cli("train", "--resume", out, "--epochs", 2, "--no-progress")
            printed = io.StringIO()                    # evaluate prints its JSON
            with contextlib.redirect_stdout(printed):
                _cli("evaluate", "--checkpoint", out, "--device", device, "--json",
                     "--iw-k", 3, "--iw-images", 2, "--no-progress")
            runs[device] = {"evaluate": json.loads(printed.getvalue())}
            with np.load(os.path.join(out, "checkpoint.npz"), allow_pickle=False) as z:
                runs[device]["checkpoint"] = {k: z[k] for k in z.files}
            with open(os.path.join(out, "metrics.jsonl")) as f:
                runs[device]["metrics"] = [json.loads(line) for line in f]
            if model == "conv-cvae":
                png = os.path.join(root, f"{model}-{device}.png")
                _cli("sample", "--checkpoint", out, "--device", device, "--n", 4, "--out", png)
                assert os.path.getsize(png) > 0
        cpu, gpu = runs["cpu"], runs["gpu"]
        assert gpu["checkpoint"].keys() == cpu["checkpoint"].keys()
        for key, want in cpu["checkpoint"].items():
            if key == "meta":                 # JSON: the config says "device": "gpu"
                continue
            if want.dtype.kind == "f":
                np.testing.assert_allclose(gpu["checkpoint"][key], want, err_msg=key, **F32)
            else:
                np.testing.assert_array_equal(gpu["checkpoint"][key], want, err_msg=key)
        for got, want in zip(gpu["metrics"], cpu["metrics"]):
            for key in got:
                if "seconds" not in key:
                    _assert_close(f"{model}.metrics.{key}", got[key], want[key])
        _assert_close(f"{model}.evaluate", gpu["evaluate"], cpu["evaluate"])
        print(f"cli {model}: train, resume, evaluate{', sample' if model == 'conv-cvae' else ''}"
              f" on gpu agree with cpu")

    # the report of these runs (IW-NLL, MSE, conditional accuracy), figures on the gpu
    from scratchvae.report import write_report

    rows = {}
    for device in ("cpu", "gpu"):
        rows[device] = write_report(
            [os.path.join(root, f"{m}-{device}") for m in ("conv-cvae", "vq-vae")],
            os.path.join(root, f"report-{device}.md"), iw_k=3, iw_images=2,
            classifier_dir=os.path.join(root, f"classifier-{device}"), cond_per_class=2,
            quality_samples=200,
            figures=device == "gpu", device=device, log=lambda *a: None)
    def compared(row):
        return {k: v for k, v in row.items() if k not in ("run", "seconds_per_epoch")}
    for got, want in zip(rows["gpu"], rows["cpu"]):
        assert "mse" in got and ("iw_nll" in got or "codes_used" in got), got
        _assert_close("report", compared(got), compared(want))
    assert "cond_accuracy" in rows["gpu"][0] and "fd" in rows["gpu"][0]
    print("cli report: rows on gpu agree with cpu, figures drawn")
    os.environ.pop("SCRATCHVAE_KERNELS", None)


def check_stand_in():
    """The stand-in bites where CuPy does (else a passing run would prove nothing);
    on real CuPy only the in-place kernel write is checked."""
    if REAL:
        print("check_stand_in: the stand-in's refusals skipped (real CuPy runs this)")
        p, m, v = (cupy.ones(40, cupy.float32), cupy.zeros(40, cupy.float32),
                   cupy.zeros(40, cupy.float32))
        kernels.adam_step(p, p * 0.5, m, v, 1, 0.1, 0.9, 0.999, 1e-8)
        np.testing.assert_allclose(p.get(), 0.9, rtol=1e-6)
        np.testing.assert_allclose(m.get(), 0.05, rtol=1e-6)
        assert LAUNCHES == ["adam"], LAUNCHES
        return
    a = cupy.arange(6, dtype=cupy.float32).reshape(2, 3)
    host = np.ones(3, np.float32)
    for mix in (lambda: a + host, lambda: host * a, lambda: np.maximum(a, host),
                lambda: cupy.where(a > 0, a, host), lambda: np.asarray(a),
                lambda: np.ascontiguousarray(a), lambda: cupy.concatenate([a, host[None]]),
                lambda: a + np.ones((), np.float32)):
        try:
            mix()
        except TypeError:
            continue
        raise AssertionError("the stand-in accepted a host array mixed with a device array")
    try:
        a[0] = host
    except ValueError:
        pass
    else:
        raise AssertionError("the stand-in accepted a basic-index assignment from the host")
    assert isinstance(a.sum(), cupy.ndarray) and a.sum().ndim == 0
    assert isinstance(np.exp(a), cupy.ndarray) and isinstance(a.get(), np.ndarray)
    b = cupy.asarray(host)
    b += 1                                         # a transfer is a copy
    assert host[0] == 1 and float(b[0]) == 2
    eps = standard_normal(new_rng(0, cupy), (3, 2), np.float32)    # a generator on the device
    assert isinstance(eps, cupy.ndarray) and eps.dtype == np.float32
    p, m, v = cupy.ones(40, cupy.float32), cupy.zeros(40, cupy.float32), cupy.zeros(40, cupy.float32)
    kernels.adam_step(p, p * 0.5, m, v, 1, 0.1, 0.9, 0.999, 1e-8)   # writes land in place
    np.testing.assert_allclose(p.get(), 0.9, rtol=1e-6)
    np.testing.assert_allclose(m.get(), 0.05, rtol=1e-6)
    assert LAUNCHES == ["adam"], LAUNCHES


def main(part):
    t0 = time.perf_counter()
    _install_spies()
    if part == "steps":
        check_stand_in()
        _reset_spies()
        check_data_on_device()
        timings = check_steps()
        print(f"seconds: {time.perf_counter() - t0:.1f} {timings}")
    else:
        with tempfile.TemporaryDirectory() as root:
            check_cli(root)
        print(f"seconds: {time.perf_counter() - t0:.1f}")
    print("GPU OK")


if __name__ == "__main__":
    main(sys.argv[1])

"""scratchvae on a GPU against PyTorch CUDA on the identical model, in one run.

    python benchmarks/bench_gpu.py [--out DIR] [--models mlp-vae,conv-vae,vq-vae]
    python benchmarks/bench_gpu.py --smoke --out /tmp/x    # tiny sizes: checks the script

For each model (mlp-vae, conv-vae, vq-vae; the model's defaults, batch 128,
the 60,000 MNIST training images):

- scratchvae eager: the median step on a fixed batch (ms, CUDA events) and
  one epoch (s, the trainer's loop: host batches moved to the device, loss,
  ``float(loss)``, backward, Adam 1e-3);
- scratchvae captured: two epochs of ``train`` with ``cuda_graph=True``, the
  ``train_seconds`` of epoch 2 (epoch 1 holds the compilations, the warm-up and
  the capture; its time is in the note), ms per step over its N // batch full
  batches; "n/a" for a model the captured step does not take;
- PyTorch CUDA eager on the twin of scratchvae/twins/models.py (its fused
  Adam where accepted), the same loop; and ``torch.compile(mode=
  "reduce-overhead")`` of its loss, whose epoch is its median step times the
  number of steps (the compilation is not counted), or the error's class;
- a per-step breakdown: CUDA events around the matrix products (cuBLAS, the
  ``matmul`` and conv products of scratchvae.ops), im2col/col2im, the
  VQ search and the elementwise kernels (ReLU, gated, BCE, Adam), each
  counted without the calls nested in it; "rest" is the step's span on the
  device minus those (CuPy's own operations, and the device idling while
  the host launches); the launches of Numba kernels per step times the host
  cost of one (an empty kernel) estimates their launch overhead.

Then bandwidth at large sizes: the VQ search kernel, im2col and col2im, in
GB/s counting the bytes each must read and write once, as a fraction of a
device-to-device copy of a 1 GiB array (bytes read + written).

Timing: CUDA events on CuPy's current stream, warm-up first, the median of
the repeats. Every section runs in ``try``: a failure is reported in its
place and the rest still runs. The tables go to OUT/bench_gpu.md and
OUT/bench_gpu.json, rewritten after each section (a run stopped by a timeout
keeps what it measured).

``--smoke``: tiny models on 4x4 images, a few steps, small arrays (PyTorch's
MNIST-sized twins on 8 random images, not compiled); runs on the CuPy
stand-in under Numba's CUDA simulator (tests/test_bench_gpu.py).
Without CUDA events (the stand-in has none) the times are host times.
"""
import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import numpy as np  # noqa: E402

MODELS = ("mlp-vae", "conv-vae", "vq-vae")
BATCH = 128
SMOKE_IMAGE = (1, 4, 4)


# --------------------------------------------------------------------------
# clocks: CUDA events, or the host clock where there are none
# --------------------------------------------------------------------------

class HostEvent:
    """An event read from the host clock (the CuPy stand-in has no CUDA events)."""

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


class Clock:
    """Events on CuPy's current stream, and the milliseconds between two of them."""

    def __init__(self, cupy):
        self.cupy = cupy
        self.device = hasattr(cupy.cuda, "Event")

    def event(self):
        if self.device:
            e = self.cupy.cuda.Event()
            e.record(self.cupy.cuda.get_current_stream())
        else:
            e = HostEvent()
            e.record()
        return e

    def ms(self, start, end):
        end.synchronize()
        if self.device:
            return float(self.cupy.cuda.get_elapsed_time(start, end))
        return (end.t - start.t) * 1e3

    def sync(self):
        self.cupy.cuda.get_current_stream().synchronize()

    def median_ms(self, fn, repeats, warmup):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            start = self.event()
            fn()
            times.append(self.ms(start, self.event()))
        return statistics.median(times)


# --------------------------------------------------------------------------
# the report: rows per section, saved after each
# --------------------------------------------------------------------------

class Report:
    def __init__(self, out, meta):
        self.out, self.meta = out, meta
        self.speed, self.breakdown, self.bandwidth, self.errors, self.skipped = [], [], [], [], []
        os.makedirs(out, exist_ok=True)

    def error(self, where, e):
        line = f"{where}: {type(e).__name__}: {e}"
        print("FAILED", line, flush=True)
        self.errors.append(line)
        self.save()

    def save(self):
        from benchmarks.common import markdown_table

        data = dict(meta=self.meta, speed=self.speed, breakdown=self.breakdown,
                    bandwidth=self.bandwidth, errors=self.errors, skipped=self.skipped)
        with open(os.path.join(self.out, "bench_gpu.json"), "w") as f:
            json.dump(data, f, indent=1)
        parts = [f"# bench_gpu: {self.meta.get('device', '?')}", "",
                 ", ".join(f"{k} {v}" for k, v in self.meta.items() if k != "device"), ""]
        parts += ["## Training speed", "", markdown_table(
            ["model", "implementation", "ms/step", "s/epoch", "note"],
            [[r["model"], r["impl"], _fmt(r.get("step_ms")), _fmt(r.get("epoch_s")),
              r.get("note", "")] for r in self.speed]), ""]
        if self.breakdown:
            keys = ["step", "matrix products", "im2col/col2im", "VQ search", "elementwise",
                    "rest"]
            parts += ["## Per-step breakdown (ms on the device, median)", "", markdown_table(
                ["model"] + keys + ["Numba launches", "launch overhead (est.)"],
                [[r["model"]] + [_fmt(r["ms"].get(k)) for k in keys]
                 + [r["launches"], _fmt(r["launch_ms"])] for r in self.breakdown]), ""]
        if self.bandwidth:
            parts += ["## Bandwidth at large sizes", "", markdown_table(
                ["kernel", "size", "ms", "GB/s", "fraction of copy"],
                [[r["kernel"], r["size"], _fmt(r["ms"]), _fmt(r["gb_s"]),
                  _fmt(r.get("fraction"))] for r in self.bandwidth]), ""]
        if self.errors:
            parts += ["## Errors", ""] + [f"- {e}" for e in self.errors] + [""]
        if self.skipped:
            parts += ["## Skipped (--budget)", ""] + [f"- {e}" for e in self.skipped] + [""]
        with open(os.path.join(self.out, "bench_gpu.md"), "w") as f:
            f.write("\n".join(parts))


def _fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


# --------------------------------------------------------------------------
# data and models
# --------------------------------------------------------------------------

def load_data(smoke):
    """(x, y) training images (N, 1, H, W) float32 and labels: MNIST, or 16 random 4x4."""
    if smoke:
        rng = np.random.default_rng(0)
        return (rng.random((16,) + SMOKE_IMAGE).astype(np.float32),
                rng.integers(0, 10, 16).astype(np.int64))
    from benchmarks.common import mnist_arrays

    (x, y), _ = mnist_arrays()
    return x, y


def build(name, smoke, rng):
    from scratchvae.models import DEFAULT_LATENT_DIM, build_model, conv_vae, mlp_vae, vq_vae

    if not smoke:
        return build_model(name, latent_dim=DEFAULT_LATENT_DIM[name], rng=rng)
    return {"mlp-vae": lambda: mlp_vae(image_shape=SMOKE_IMAGE, hidden_dim=6, latent_dim=2,
                                       rng=rng),
            "conv-vae": lambda: conv_vae(image_shape=SMOKE_IMAGE, channels=(2, 3),
                                         hidden_dim=6, latent_dim=2, rng=rng),
            "vq-vae": lambda: vq_vae(image_shape=SMOKE_IMAGE, channels=(2, 3), latent_dim=3,
                                     num_codes=6, rng=rng)}[name]()


# --------------------------------------------------------------------------
# scratchvae: eager steps, epoch, breakdown, captured epoch
# --------------------------------------------------------------------------

def ours(name, cupy, clock, x, y, batch, smoke, report, sizes):
    from benchmarks.common import training_step
    from scratchvae import data
    from scratchvae.backend import to_device
    from scratchvae.optimizers import Adam

    rng = np.random.default_rng(0)
    model = build(name, smoke, rng).to(cupy)
    step = training_step(model, Adam(model.parameters(), lr=1e-3), rng)

    fixed = (to_device(x[:batch].copy(), cupy), y[:batch].copy())
    step_ms = clock.median_ms(lambda: step(*fixed), sizes["repeats"], sizes["warmup"])
    batches = data.iterate_batches(x, y, batch, rng=np.random.default_rng(1))
    clock.sync()
    t0 = time.perf_counter()
    for xb, yb in batches:
        step(to_device(xb, cupy), yb)
    clock.sync()
    epoch_s = time.perf_counter() - t0
    report.speed.append(dict(model=name, impl="scratchvae eager", step_ms=step_ms,
                             epoch_s=epoch_s, note=f"{len(batches)} steps"))
    report.save()
    try:
        report.breakdown.append(dict(model=name, **breakdown(lambda: step(*fixed), clock,
                                                             sizes["breakdown"])))
    except Exception as e:
        report.error(f"{name} breakdown", e)
    report.save()
    return len(batches)


def captured(name, smoke, report, n_images):
    """Epoch 2 of ``train`` with ``cuda_graph=True``, where TrainConfig has it."""
    from scratchvae.config import GRAPH_MODELS, TrainConfig

    row = dict(model=name, impl="scratchvae captured")
    if "cuda_graph" not in {f.name for f in dataclasses.fields(TrainConfig)}:
        report.speed.append(dict(row, note="n/a (no --cuda-graph)"))
    elif smoke:
        report.speed.append(dict(row, note="n/a (--smoke)"))
    elif name not in GRAPH_MODELS:
        report.speed.append(dict(row, note=f"n/a (--cuda-graph: {', '.join(GRAPH_MODELS)})"))
    else:
        from scratchvae.graph_step import GraphCaptureFailed
        from scratchvae.train import train

        config = TrainConfig(model=name, epochs=2, device="gpu", download="yes",
                             test_limit=1000, cuda_graph=True)
        with tempfile.TemporaryDirectory() as out, warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always", GraphCaptureFailed)
            history = train(config, out, progress=False, log=lambda *a: None)
        failed = [str(x.message) for x in w if issubclass(x.category, GraphCaptureFailed)]
        seconds = history[-1]["train_seconds"]
        steps = n_images // config.batch_size       # full batches only
        note = (f"train --cuda-graph, epoch 2 of 2 ({steps} full batches; epoch 1, with "
                f"compiling and capturing: {history[0]['train_seconds']:.3g} s)")
        if failed:   # the run went on eagerly: not a captured time
            row["impl"] = "scratchvae --cuda-graph, capture failed: eager"
            note = failed[0]
        report.speed.append(dict(row, epoch_s=seconds, step_ms=seconds / steps * 1e3,
                                 note=note))
    report.save()


#: (module, attribute, category) of the functions timed in the breakdown
TIMED = [("scratchvae.ops.linear", "matmul", "matrix products"),
         ("scratchvae.ops.conv", "matmul", "matrix products"),
         ("scratchvae.ops.conv", "conv_forward_product", "matrix products"),
         ("scratchvae.ops.conv", "conv_transposed_product", "matrix products"),
         ("scratchvae.ops.conv", "conv_weight_product", "matrix products"),
         ("scratchvae.ops.conv", "conv_forward_and_weight_products", "matrix products"),
         ("kernels.im2col", "_im2col_cuda", "im2col/col2im"),
         ("kernels.im2col", "_col2im_cuda", "im2col/col2im"),
         ("kernels.vq", "_nearest_cuda", "VQ search"),
         ("kernels.relu", "_relu_forward_cuda", "elementwise"),
         ("kernels.relu", "_relu_backward_cuda", "elementwise"),
         ("kernels.gated", "_gated_forward_cuda", "elementwise"),
         ("kernels.gated", "_gated_backward_cuda", "elementwise"),
         ("kernels.bce", "_bce_cuda", "elementwise"),
         ("kernels.bce", "_bce_forward_cuda", "elementwise"),
         ("kernels.adam", "_adam_cuda", "elementwise"),
         ("kernels.adam", "_sgd_cuda", "elementwise")]
#: the Numba kernel launchers among TIMED (one launch per call)
NUMBA = {"_im2col_cuda", "_col2im_cuda", "_nearest_cuda", "_relu_forward_cuda",
         "_relu_backward_cuda", "_gated_forward_cuda", "_gated_backward_cuda", "_bce_cuda",
         "_bce_forward_cuda", "_adam_cuda", "_sgd_cuda"}


def breakdown(step, clock, repeats):
    """Median ms per category over ``repeats`` steps (see the module docstring)."""
    import importlib

    records, stack, originals = [], [], []

    def timed(real, category, attr):
        def call(*args, **kwargs):
            rec = dict(category=category, numba=attr in NUMBA, children=[],
                       start=clock.event())
            (stack[-1]["children"] if stack else records).append(rec)
            stack.append(rec)
            try:
                return real(*args, **kwargs)
            finally:
                stack.pop()
                rec["end"] = clock.event()
        return call

    for module_name, attr, category in TIMED:
        module = importlib.import_module(module_name)
        if hasattr(module, attr):
            originals.append((module, attr, getattr(module, attr)))
            setattr(module, attr, timed(getattr(module, attr), category, attr))
    per_step, launches = [], []
    try:
        for _ in range(repeats):
            del records[:]
            start = clock.event()
            step()
            total = clock.ms(start, clock.event())
            sums = dict.fromkeys(["matrix products", "im2col/col2im", "VQ search",
                                  "elementwise"], 0.0)
            count = [0]

            def add(rec):
                inclusive = clock.ms(rec["start"], rec["end"])
                nested = sum(add(child) for child in rec["children"])
                sums[rec["category"]] += inclusive - nested
                count[0] += rec["numba"]
                return inclusive
            for rec in records:
                add(rec)
            sums["step"] = total
            sums["rest"] = total - sum(v for k, v in sums.items() if k != "step")
            per_step.append(sums)
            launches.append(count[0])
    finally:
        for module, attr, real in originals:
            setattr(module, attr, real)
    ms = {k: statistics.median(s[k] for s in per_step) for k in per_step[0]}
    n = int(statistics.median(launches))
    return dict(ms=ms, launches=n, launch_ms=n * numba_launch_us(clock) / 1e3)


_LAUNCH_US = []


def numba_launch_us(clock, n=200):
    """Host microseconds to launch an empty Numba kernel on a CuPy array (measured once)."""
    if not _LAUNCH_US:
        from numba import cuda

        from kernels._dispatch import cuda_stream

        @cuda.jit
        def empty(a):
            pass

        a = clock.cupy.zeros(1, clock.cupy.float32)
        empty[1, 1, cuda_stream(a)](a)                      # compiles
        clock.sync()
        t0 = time.perf_counter()
        for _ in range(n):
            empty[1, 1, cuda_stream(a)](a)
        _LAUNCH_US.append((time.perf_counter() - t0) / n * 1e6)
        clock.sync()
    return _LAUNCH_US[0]


# --------------------------------------------------------------------------
# PyTorch CUDA
# --------------------------------------------------------------------------

def _torch_setup(torch, name, x, y, batch):
    """The twin on the GPU, its Adam, a fixed batch, and a step maker."""
    from scratchvae.twins import fastest_adam
    from scratchvae.twins.models import MODELS as TWINS

    torch.manual_seed(0)
    model = TWINS[name]().cuda()
    opt, adam = fastest_adam(model.parameters())

    def make_step(loss_fn, mark=None):
        def step(xb, yb):
            if mark is not None:
                mark()                 # a new step for the CUDA graphs of reduce-overhead
            opt.zero_grad(set_to_none=True)
            loss, _, _ = loss_fn(xb, yb)
            loss.item()
            loss.backward()
            opt.step()
        return step

    fixed = (torch.from_numpy(x[:batch].copy()).cuda(), torch.from_numpy(y[:batch].copy()).cuda())
    return model, adam, fixed, make_step


def _torch_median_ms(torch, step, fixed, warmup, repeats):
    for _ in range(warmup):
        step(*fixed)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step(*fixed)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def torch_eager(torch, name, x, y, batch, sizes, report):
    from scratchvae import data

    model, adam, fixed, make_step = _torch_setup(torch, name, x, y, batch)
    eager = make_step(model.loss)
    step_ms = _torch_median_ms(torch, eager, fixed, sizes["warmup"], sizes["repeats"])
    batches = data.iterate_batches(x, y, batch, rng=np.random.default_rng(1))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for xb, yb in batches:
        eager(torch.from_numpy(xb).cuda(), torch.from_numpy(yb).cuda())
    torch.cuda.synchronize()
    report.speed.append(dict(model=name, impl=f"PyTorch {torch.__version__} eager",
                             step_ms=step_ms, epoch_s=time.perf_counter() - t0,
                             note=f"Adam: {adam}"))
    report.save()


def torch_compiled(torch, name, x, y, batch, sizes, report):
    """``torch.compile(model.loss, mode="reduce-overhead")``: its median step; the
    epoch is that times the steps (compiling for the last, smaller batch is left out)."""
    row = dict(model=name, impl='PyTorch torch.compile("reduce-overhead")')
    n_batches = -(-len(x) // batch)
    try:
        model, _, fixed, make_step = _torch_setup(torch, name, x, y, batch)
        compiled = torch.compile(model.loss, mode="reduce-overhead")
        mark = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
        t0 = time.perf_counter()
        step_ms = _torch_median_ms(torch, make_step(compiled, mark), fixed, 5, sizes["repeats"])
        report.speed.append(dict(row, step_ms=step_ms, epoch_s=step_ms * n_batches / 1e3,
                                 note=f"s/epoch = ms/step x {n_batches}; compiling and "
                                      f"timing took {time.perf_counter() - t0:.0f} s"))
    except Exception as e:
        report.speed.append(dict(row, note=f"failed: {type(e).__name__}"))
        raise
    finally:
        report.save()


# --------------------------------------------------------------------------
# bandwidth
# --------------------------------------------------------------------------

def bandwidth(cupy, clock, smoke, report, sizes):
    from kernels import im2col as kim2col
    from kernels import vq as kvq
    from kernels.vq import code_sq_norms

    def measure(kernel, size, nbytes, fn):
        ms = clock.median_ms(fn, sizes["repeats"], warmup=2)
        report.bandwidth.append(dict(kernel=kernel, size=size, ms=ms, bytes=int(nbytes),
                                     gb_s=nbytes / ms / 1e6))
        report.save()

    def attempt(kernel, run):
        try:
            run()
        except Exception as e:
            report.error(f"bandwidth {kernel}", e)
        _free(cupy)

    def copy():
        n = 4096 if smoke else 1 << 28                      # 1 GiB of float32
        a = cupy.ones(n, cupy.float32)
        b = cupy.empty_like(a)

        def run():
            b[...] = a
        measure("device-to-device copy", f"{a.nbytes / 2**20:.0f} MiB", 2 * a.nbytes, run)

    def im2col():
        shape, k, s, p = (((2, 5, 5, 3), (3, 3), (1, 1), (1, 1)) if smoke else
                          ((512, 28, 28, 32), (4, 4), (2, 2), (1, 1)))
        x = cupy.ones(shape, cupy.float32)
        oh, ow = (kim2col.conv_output_size(shape[1], k[0], s[0], p[0]),
                  kim2col.conv_output_size(shape[2], k[1], s[1], p[1]))
        cols = cupy.empty((shape[0] * oh * ow, k[0] * k[1] * shape[3]), cupy.float32)
        size = f"x {shape}, k {k}, s {s}, p {p}: cols {cols.shape}"
        measure("im2col", size, x.nbytes + cols.nbytes,
                lambda: kim2col._im2col_cuda(x, cols, k, s, p))
        measure("col2im", size, x.nbytes + cols.nbytes,
                lambda: kim2col._col2im_cuda(cols, x, k, s, p))

    def nearest():
        M, D, K = (37, 3, 6) if smoke else (1 << 22, 16, 128)
        z = cupy.asarray(np.random.default_rng(0).standard_normal((M, D)).astype(np.float32))
        e = cupy.asarray(np.random.default_rng(1).standard_normal((K, D)).astype(np.float32))
        eT = cupy.ascontiguousarray(e.astype(cupy.float64).T)
        ee = code_sq_norms(e)
        indices, sqdist = cupy.empty(M, cupy.int64), cupy.empty(M, cupy.float64)
        measure("VQ search (nearest_code)", f"M {M}, D {D}, K {K}",
                z.nbytes + indices.nbytes + sqdist.nbytes + eT.nbytes + ee.nbytes,
                lambda: kvq._nearest_cuda(z, eT, ee, indices, sqdist))

    for kernel, run in (("copy", copy), ("im2col", im2col), ("nearest", nearest)):
        attempt(kernel, run)
    copies = [r for r in report.bandwidth if r["kernel"] == "device-to-device copy"]
    for r in report.bandwidth:
        if copies:
            r["fraction"] = r["gb_s"] / copies[0]["gb_s"]
    report.save()


def _free(cupy):
    pool = getattr(cupy, "get_default_memory_pool", None)
    if pool is not None:
        pool().free_all_blocks()


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

#: seconds a section is expected to take at most: with less left of --budget it is skipped
EXPECTED = {"compile": 90, "other": 20}
START = time.perf_counter()


def _section(report, what, run, cupy, budget, expected=EXPECTED["other"]):
    """Run one section; a failure is reported and the next section runs. With
    ``budget`` seconds for the whole run, a section that may not fit is skipped."""
    left = budget - (time.perf_counter() - START)
    if budget and left < expected:
        report.skipped.append(f"{what}: {left:.0f} s of --budget {budget:g} s left, "
                              f"it may take {expected} s")
        report.save()
        print("skipped", report.skipped[-1], flush=True)
        return
    t0 = time.perf_counter()
    try:
        run()
    except Exception as e:
        report.error(what, e)
    print(f"{what}: {time.perf_counter() - t0:.1f} s", flush=True)
    _free(cupy)


def parse_args(argv):
    parser = argparse.ArgumentParser(description="scratchvae vs PyTorch on a GPU")
    parser.add_argument("--out", default=os.path.join(HERE, "results"),
                        help="directory of bench_gpu.md and bench_gpu.json "
                             "(default benchmarks/results)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated, of {', '.join(MODELS)} (default all)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--budget", type=float, default=0, metavar="SECONDS",
                        help="skip the sections that may not finish within SECONDS of the "
                             "start (reported as skipped; default 0: no limit)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes and few steps: a check of the script, not a benchmark")
    args = parser.parse_args(argv)
    if args.budget < 0:
        parser.error(f"--budget: expected seconds >= 0, got {args.budget:g}")
    args.models = [m for m in args.models.split(",") if m]
    wrong = [m for m in args.models if m not in MODELS]
    if wrong or not args.models:
        parser.error(f"--models: expected names among {', '.join(MODELS)}, got "
                     f"{','.join(wrong) or 'none'}")
    return args


def import_torch(skip):
    """PyTorch with CUDA, imported before scratchvae (benchmarks/common.py says why),
    or ``(None, why not)``."""
    if skip:
        return None, "--no-torch"
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed"
    if not torch.cuda.is_available():
        return None, "torch.cuda is not available"
    return torch, None


def device_name(cupy):
    if "fake" in cupy.__version__:
        return "the CuPy stand-in (tests/fake_cupy) under Numba's CUDA simulator"
    try:
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception as e:
        return f"unknown device ({type(e).__name__})"


def main(argv=None):
    args = parse_args(argv)
    torch, no_torch = import_torch(args.no_torch)
    import cupy
    from numba import config

    if config.ENABLE_CUDASIM:     # the simulator runs a Python thread per CUDA thread
        import importlib
        import pkgutil

        import kernels
        for info in pkgutil.iter_modules(kernels.__path__):
            module = importlib.import_module(f"kernels.{info.name}")
            if hasattr(module, "CUDA_THREADS"):
                module.CUDA_THREADS = 16
    sizes = (dict(warmup=1, repeats=3, breakdown=2) if args.smoke
             else dict(warmup=10, repeats=30, breakdown=10))
    batch = 4 if args.smoke else BATCH
    meta = dict(device=device_name(cupy), cupy=cupy.__version__,
                torch=torch.__version__ if torch else no_torch, batch=batch,
                timing="CUDA events" if hasattr(cupy.cuda, "Event") else "host clock",
                smoke=args.smoke)
    report = Report(args.out, meta)
    report.save()
    clock = Clock(cupy)
    try:
        x, y = load_data(args.smoke)
    except Exception as e:
        report.error("data", e)
        return 1
    # the twins are MNIST-sized: in --smoke they get 8 random 28x28 images
    torch_data = ((np.random.default_rng(2).random((8, 1, 28, 28)).astype(np.float32),
                   np.zeros(8, np.int64)) if args.smoke else (x, y))
    bandwidth(cupy, clock, args.smoke, report, sizes)   # first: seconds, and always wanted
    for name in args.models:
        for what, run in (
                ("scratchvae eager", lambda: ours(name, cupy, clock, x, y, batch, args.smoke,
                                                  report, sizes)),
                ("scratchvae captured", lambda: captured(name, args.smoke, report, len(x))),
                ("PyTorch eager", lambda: torch_eager(torch, name, *torch_data, batch, sizes,
                                                      report)
                 if torch else report.speed.append(dict(model=name, impl="PyTorch CUDA",
                                                        note=f"n/a ({no_torch})")))):
            _section(report, f"{name} {what}", run, cupy, args.budget)
    if torch and args.smoke:
        for name in args.models:
            report.speed.append(dict(model=name, impl='PyTorch torch.compile("reduce-overhead")',
                                     note="n/a (--smoke)"))
    elif torch and not args.no_compile:    # last: compiling takes the longest
        for name in args.models:
            _section(report, f"{name} torch.compile",
                     lambda: torch_compiled(torch, name, x, y, batch, sizes, report), cupy,
                     args.budget, EXPECTED["compile"])
    report.save()
    with open(os.path.join(args.out, "bench_gpu.md")) as f:
        print(f.read())
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())

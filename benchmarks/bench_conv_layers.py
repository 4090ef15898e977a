"""Per-layer forward, backward and forward+backward times of the conv VAE's
four convolution shapes (batch 128, float32), scratchvae against PyTorch
(oneDNN), with the achieved GFLOP/s, so it is visible where the time goes.

Both sides do what a training step does: PyTorch's gradients are reset to
None before every backward (``zero_grad``), so each backward writes fresh
gradients as ours does; the backward alone is timed after an untimed
forward. Each side gets its inputs and upstream gradients in the memory
layout its own training step hands it: PyTorch NCHW throughout; scratchvae's
convolutions return channels-last arrays, so inside the conv VAE most of
their inputs and gradients arrive channels-last (see LAYERS), and giving
them NCHW arrays instead would time a transposing copy that training never
makes. Each layer first runs WARMUP untimed forward+backward passes
(PyTorch's first passes of a layer can run in a slower mode), then the
forward+backward, backward and forward phases are timed in that order. Each implementation runs in its own subprocess, alternating
for several rounds (which side starts alternates too); the best time over
all repeats and rounds is reported.

    python benchmarks/bench_conv_layers.py [--rounds 3] [--repeats 25]
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

N = 128
#: (kind, in channels, out channels, input side): kernel 4, stride 2, padding 1
LAYERS = [("Conv2d", 1, 32, 28), ("Conv2d", 32, 64, 14),
          ("ConvTranspose2d", 64, 32, 7), ("ConvTranspose2d", 32, 1, 14)]

#: scratchvae's memory layout of (input, upstream gradient) of each layer inside a
#: conv-VAE training step: an input coming from a convolution (through a ReLU) is
#: channels-last, the images and Reshape's output are C-ordered; the gradients
#: coming back through a convolution or Flatten are channels-last, the loss's
#: gradient of the one-channel output is C-ordered (one channel: the same memory)
TRAINING_LAYOUTS = {("Conv2d", 1): ("nchw", "nhwc"), ("Conv2d", 32): ("nhwc", "nhwc"),
                    ("ConvTranspose2d", 64): ("nchw", "nhwc"),
                    ("ConvTranspose2d", 32): ("nhwc", "nchw")}


#: untimed forward+backward passes of each layer before anything is timed: PyTorch's
#: first passes of a layer can run in a slower mode (seen on Conv2d(1,32) and on
#: forward+backward passes timed first)
WARMUP = 20


def in_layout(a, layout):
    """``a`` (NCHW shape) with the given memory layout: "nchw" C-contiguous, or
    "nhwc" a channels-last array seen with the NCHW shape."""
    if layout == "nchw":
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def gemm_flops(kind, ci, co, side):
    """FLOPs of the layer's one matrix product (the forward)."""
    rows = (side // 2) ** 2 if kind == "Conv2d" else side * side
    return 2 * N * rows * ci * co * 16


def worker(which, threads, repeats):
    from benchmarks.common import sample_times, sample_times_after

    rng = np.random.default_rng(0)
    out = {}
    if which == "torch":
        from benchmarks.common import import_torch
        torch = import_torch(threads)
    else:
        from scratchvae.backend import retain_freed_memory
        from scratchvae.layers import Conv2d, ConvTranspose2d
        retain_freed_memory()             # as the trainer does
    for kind, ci, co, side in LAYERS:
        x = rng.standard_normal((N, ci, side, side), dtype=np.float32)
        first = kind == "Conv2d" and ci == 1  # the input layer needs no dx, in both
        if which == "torch":
            layer = getattr(torch.nn, kind)(ci, co, 4, 2, 1)
            xt = torch.tensor(x, requires_grad=not first)
            g = torch.randn_like(layer(xt))
            graph = []

            def fwd():
                with torch.no_grad():
                    layer(xt)

            def prepare():                # a training step's zero_grad, then the forward
                layer.zero_grad(set_to_none=True)
                xt.grad = None
                graph[:] = [layer(xt)]

            def bwd():
                graph[0].backward(g)

            def fwd_bwd():
                layer.zero_grad(set_to_none=True)
                xt.grad = None
                layer(xt).backward(g)
        else:
            layer = {"Conv2d": Conv2d, "ConvTranspose2d": ConvTranspose2d}[kind](
                ci, co, 4, 2, 1, rng=rng)
            layer.input_grad = not first
            x_layout, g_layout = TRAINING_LAYOUTS[kind, ci]
            x = in_layout(x, x_layout)
            g = in_layout(rng.standard_normal(layer.forward(x).shape, dtype=np.float32),
                          g_layout)

            def fwd():
                layer.forward(x)

            def prepare():
                layer.zero_grad()
                layer.forward(x)

            def bwd():
                layer.backward(g)

            def fwd_bwd():
                layer.zero_grad()
                layer.forward(x)
                layer.backward(g)
        for _ in range(WARMUP):
            fwd_bwd()
        timed = {"fwd_bwd": sample_times(fwd_bwd, repeats),
                 "bwd": sample_times_after(prepare, bwd, repeats)}
        timed["fwd"] = sample_times(fwd, repeats)
        out[f"{kind}({ci},{co}) {side}x{side}"] = timed
    return out


def main():
    from benchmarks.common import cpu_info, save_table, threads_in_use

    parser = argparse.ArgumentParser(description="conv layer timings vs PyTorch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        which, threads, repeats = args.worker[0], int(args.worker[1]), int(args.worker[2])
        print(json.dumps(worker(which, threads, repeats)))
        return

    try:
        import torch  # noqa: F401
        kinds = ["ours", "torch"]
    except ImportError:
        kinds = ["ours"]
    threads = threads_in_use()
    times = {k: {} for k in kinds}
    for r in range(args.rounds):
        for k in (kinds if r % 2 == 0 else kinds[::-1]):   # alternate who starts
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", k, str(threads),
                   str(args.repeats)]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                            text=True).stdout.strip().splitlines()[-1])
            for layer, d in res.items():
                for phase, v in d.items():
                    times[k].setdefault(layer, {}).setdefault(phase, []).extend(v)
    rows, totals = [], {k: 0.0 for k in kinds}
    for kind, ci, co, side in LAYERS:
        layer = f"{kind}({ci},{co}) {side}x{side}"
        f = gemm_flops(kind, ci, co, side)
        products = 2 if (kind == "Conv2d" and ci == 1) else 3  # fwd + dW (+ dx)
        row = [layer]
        for k in kinds:
            fw, bw, fb = (min(times[k][layer][p]) for p in ("fwd", "bwd", "fwd_bwd"))
            totals[k] += fb
            row += [f"{fw * 1e3:.2f} ({f / fw / 1e9:.0f})",
                    f"{bw * 1e3:.2f} ({(products - 1) * f / bw / 1e9:.0f})",
                    f"{fb * 1e3:.2f} ({products * f / fb / 1e9:.0f})"]
        rows.append(row)
    total_row = ["sum of fwd+bwd"]
    for k in kinds:
        total_row += ["", "", f"{totals[k] * 1e3:.2f}"]
    rows.append(total_row)
    header = ["layer (k4 s2 p1)"]
    for k in kinds:
        name = "scratchvae" if k == "ours" else "PyTorch"
        header += [f"{name} fwd ms (GFLOP/s)", f"{name} bwd ms (GFLOP/s)",
                   f"{name} fwd+bwd ms (GFLOP/s)"]
    notes = [f"{cpu_info()}; {threads} threads; batch {N}; float32; best of {args.rounds} rounds "
             f"x {args.repeats} repeats, each implementation in its own process. GFLOP/s count "
             f"the matrix products only (fwd: 1; bwd: 2, or 1 for the input layer, which needs "
             f"no input gradient; fwd+bwd: their sum). PyTorch's gradients are reset to None "
             f"before each backward, as in a training step. Memory layouts as each engine's "
             f"training step hands them: PyTorch NCHW; scratchvae (input, gradient): "
             + ", ".join(f"{k}({c}, ...) {x}/{g}" for (k, c), (x, g) in TRAINING_LAYOUTS.items())
             + f". {WARMUP} untimed forward+backward passes per layer before timing."]
    save_table(os.path.join(HERE, "results", "conv_layers.md"), "conv-vae layers: forward and "
               "backward", header, rows, notes)


if __name__ == "__main__":
    main()

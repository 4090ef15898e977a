"""One short check of the GPU training loop on a real GPU (a few minutes on an H200).

1. ``train --device gpu`` for 2 epochs of each model given, eagerly (device-resident
   epochs) and with ``--cuda-graph``: the train seconds of each epoch (the second
   is the warm one), the test -ELBO (a VQ-VAE: its reconstruction BCE), and whether the capture held (a
   GraphCaptureFailed warning names the reason when it did not).
2. The captured step against the same step run eagerly: ``STEPS`` steps of
   each model from the same weights, batches and (counter-based) noise; the
   largest difference of the parameters (0 or float rounding expected).

    python benchmarks/gpu_epoch_check.py [--models mlp-vae conv-vae vq-vae] [--epochs 2]
                                         [--train-limit N] [--batch-size B]

Prints one line per run and a JSON summary at the end.
"""
import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STEPS = 20


def train_run(model, cuda_graph, epochs, limit, batch, root):
    from scratchvae.cli import main

    out = os.path.join(root, f"{model}-{'graph' if cuda_graph else 'eager'}")
    argv = ["train", "--model", model, "--device", "gpu", "--epochs", str(epochs),
            "--batch-size", str(batch), "--no-progress", "--out", out]
    if cuda_graph:
        argv.append("--cuda-graph")
    if limit:
        argv += ["--train-limit", str(limit), "--test-limit", str(limit)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        rc = main(argv)
        seconds = time.perf_counter() - t0
    with open(os.path.join(out, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    failed = [str(w.message) for w in caught if "GraphCaptureFailed" in type(w.message).__name__
              or "--cuda-graph" in str(w.message)]
    row = {"model": model, "cuda_graph": cuda_graph, "rc": rc, "seconds": round(seconds, 2),
           "train_seconds": [round(r["train_seconds"], 4) for r in records],
           # the headline test metric: -ELBO, or a VQ-VAE's reconstruction BCE
           "test": [round(r.get("test_nelbo", r.get("test_recon", float("nan"))), 3)
                    for r in records],
           "capture_failed": failed}
    print(json.dumps(row))
    return row


def captured_vs_eager(name, limit, batch):
    import cupy

    from scratchvae import graph_step
    from scratchvae.config import TrainConfig, make_model
    from scratchvae.data import images_to_float, load_dataset
    from scratchvae.optimizers import Adam

    ds = load_dataset("mnist", allow_sample=True)
    x = images_to_float(ds.train_images[:limit or STEPS * batch])
    cfg = TrainConfig(model=name, device="gpu", cuda_graph=True, batch_size=batch,
                      epochs=1, binarize=True)

    def run(warmup):
        graph_step.WARMUP_STEPS = warmup
        model = make_model(cfg, np.random.default_rng(0)).to(cupy)
        optimizer = Adam(model.parameters(), lr=1e-3)
        run = graph_step.CapturedRun(cupy, cfg, x, None, np.random.default_rng(1),
                                     np.random.default_rng(2), np.random.SeedSequence(3))
        run.prepare(model, optimizer, log=lambda *a: None)

        class Bar:
            def update(self, n):
                pass

            def set_postfix(self, **k):
                pass
        t0 = time.perf_counter()
        loss, _ = run.epoch(model, optimizer, 1, 0, Bar(), RuntimeError)
        seconds = time.perf_counter() - t0
        return model.state_dict(), loss, run.graph is not None, seconds, run.steps_per_epoch

    eager, eager_loss, _, eager_s, steps = run(10 ** 9)
    graph, graph_loss, used, graph_s, _ = run(3)
    diff = max(float(np.max(np.abs(graph[k] - eager[k]))) for k in eager)
    row = {"check": "captured vs eager", "model": name, "steps": steps, "graph_used": used,
           "max_param_diff": diff, "loss": [eager_loss, graph_loss],
           "seconds": [round(eager_s, 4), round(graph_s, 4)]}
    print(json.dumps(row))
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp-vae", "conv-vae", "vq-vae"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-limit", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for model in args.models:
            for cuda_graph in (False, True):
                rows.append(train_run(model, cuda_graph, args.epochs, args.train_limit,
                                      args.batch_size, root))
    for model in args.models:
        rows.append(captured_vs_eager(model, args.train_limit, args.batch_size))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

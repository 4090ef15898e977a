"""benchmarks/bench_iwae.py: its PyTorch workers import PyTorch before scratchvae,
and a smoke run (a few steps) times both engines for each k and thread count and
writes its table. No measurement: the benchmark itself runs on a quiet machine."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.test_benchmark_workers import PROBE  # noqa: E402  (the path above)

SCRIPT = os.path.join(ROOT, "benchmarks", "bench_iwae.py")


@pytest.mark.parametrize("kind", ["torch", "torch-compile", "torch-products"])
def test_its_pytorch_workers_import_pytorch_first(kind):
    argv = [SCRIPT, "--worker", kind, "5", "1", "1", '{"objective": "iwae", "warmup": 1}']
    code = PROBE.format(root=ROOT, argv=argv, script=SCRIPT)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "scratchvae imported before PyTorch: False", result.stdout


def test_a_smoke_run_times_both_engines_for_each_k(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "table"
    result = subprocess.run([sys.executable, SCRIPT, "--smoke", "--k", "1", "3", "--threads",
                             "1", "--objective", "elbo", "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "table.md").read_text()
    assert "| threads | k | scratchvae (ms) | PyTorch eager (ms) | scratchvae / PyTorch " \
           "eager | target |" in md, md
    assert "| 1 | 1 | " in md and "<= 0.6x |" in md and "| 1 | 3 | " in md
    assert "PyTorch's Adam: fused." in md and "objective elbo, batch 20" in md
    cells = json.loads((tmp_path / "table.json").read_text())
    assert [(c["threads"], c["k"]) for c in cells] == [(1, 1), (1, 3)]
    assert all(c[kind]["step_ms"] > 0 for c in cells for kind in ("ours", "torch"))


def test_the_recorded_products_are_the_steps_and_replay_alone():
    """--products: the 17 products of one k = 5 step of iwae-1l (forward, dX, dW of
    its linear layers; none for the images' gradient), in their layouts."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_iwae

    calls, _ = bench_iwae.recorded_products(5, {"objective": "iwae"})
    shapes = [(a.shape[0], a.shape[1], b.shape[1]) for a, b, _ in calls]
    # the encoder on 20 images, the decoder on 5 samples x 20 images
    assert len(shapes) == 17 and shapes[0] == (20, 784, 200) and shapes[3] == (100, 50, 200)
    assert shapes[7] == (784, 100, 200)                         # the last layer's dW
    assert any(not a.flags.c_contiguous for a, _, _ in calls)   # dW = dy^T x: a view
    result = bench_iwae.worker_ours_products(5, 2, {"objective": "iwae", "warmup": 1})
    assert result["products"] == 17 and result["step_ms"] > 0


def test_the_floor_replays_the_products_and_steps_adam():
    """ours-floor: each call replays the step's products and then takes an Adam step
    on the gradients that step left (the parameters move; the gradients stay)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import bench_iwae
    from benchmarks.common import replay_products

    calls, opt = bench_iwae.recorded_products(1, {"objective": "iwae"})
    before = [p.data.copy() for p in opt.params]
    grads = [p.grad.copy() for p in opt.params]
    replay_products(calls, opt)()
    assert all(not np.array_equal(p.data, b) for p, b in zip(opt.params, before))
    assert all(np.array_equal(p.grad, g) for p, g in zip(opt.params, grads))
    result = bench_iwae.worker_ours_products(1, 2, {"objective": "iwae", "warmup": 1},
                                             update=True)
    assert result["products"] == 17 and result["step_ms"] > 0

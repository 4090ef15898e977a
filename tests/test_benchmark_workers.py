"""Processes that time PyTorch import it before anything of scratchvae.

A process that times PyTorch must not share the cores with scratchvae's thread
pool or BLAS settings (benchmarks/common.import_torch says why). Each script
below is run as ``__main__`` in a fresh interpreter with
``benchmarks.common.import_torch`` replaced by a probe that reports whether
scratchvae was already imported, then stops the script. No PyTorch needed.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import runpy, sys
sys.path.insert(0, {root!r})
import benchmarks.common as common

def probe(threads):
    print("scratchvae imported before PyTorch:", "scratchvae" in sys.modules)
    sys.exit(0)

common.import_torch = probe
sys.argv = {argv!r}
runpy.run_path({script!r}, run_name="__main__")
print("the script never asked for PyTorch")
"""


@pytest.mark.parametrize("script,args", [
    ("bench_train.py", ["--worker", "torch", "conv-vae", "1", "2"]),
    ("bench_train.py", ["--worker", "torch", "pixelcnn", "1", "2", "0", '{"epoch_steps": 0}']),
    ("bench_train.py", ["--worker", "torch-quality", "vq-vae", "1", "2", "0",
                        '{"vq_init": "uniform", "vq_restart": 0}']),
    ("bench_train.py", ["--worker", "torch-products", "mlp-vae", "1", "1"]),
    ("bench_conv_layers.py", ["--worker", "torch", "2", "1"]),
    ("profile_step.py", ["--torch"]),
    ("profile_step.py", ["--torch", "--model", "iwae-1l", "--batch", "20", "--k", "5"]),
])
def test_pytorch_is_imported_before_scratchvae(script, args):
    path = os.path.join(ROOT, "benchmarks", script)
    code = PROBE.format(root=ROOT, argv=[path, *args], script=path)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "scratchvae imported before PyTorch: False", result.stdout


def test_import_torch_refuses_after_scratchvae():
    import scratchvae  # noqa: F401  (already imported by the test session, surely)
    from benchmarks.common import import_torch

    with pytest.raises(RuntimeError, match="import PyTorch before scratchvae"):
        import_torch(1)


def test_seed_table_refuses_a_run_of_another_model(tmp_path):
    """seed_table.py prints each row's test metric from the run directory it is
    given; a directory of another model must not put that model's metric in the row."""
    sys.path.insert(0, ROOT)
    from benchmarks.seed_table import _last_record

    (tmp_path / "config.json").write_text('{"model": "conv-vae", "beta": 1.0}')
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "test_nelbo": 110.0}\n')
    record, config = _last_record(str(tmp_path), "conv-vae")
    assert record["test_nelbo"] == 110.0 and config["model"] == "conv-vae"
    with pytest.raises(SystemExit, match="is a conv-vae run, expected vq-vae"):
        _last_record(str(tmp_path), "vq-vae")


def test_bench_train_threads_reach_scratchvae_workers():
    """``bench_train.py --threads N`` sets scratchvae's pools in its workers'
    environment, read by Numba (and OpenBLAS) when they load; without it the
    workers inherit the environment unchanged."""
    sys.path.insert(0, ROOT)
    from benchmarks.bench_train import WORKER_ENV, _worker_env

    assert _worker_env() is WORKER_ENV
    env = _worker_env(1)
    assert env["OPENBLAS_NUM_THREADS"] == "1" and env["NUMBA_NUM_THREADS"] == "1"
    out = subprocess.run([sys.executable, "-c", "import numba; print(numba.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"


@pytest.mark.parametrize("epoch_steps, stepped", [(0, list(range(10))), (4, [0, 1, 2, 3]),
                                                  (20, list(range(10)))])
def test_bench_train_times_the_first_epoch_steps_of_the_epoch(epoch_steps, stepped):
    """``--epoch-steps N`` steps through the first N batches of the epoch only
    (0, or more than the epoch holds: all of them) and says how many it timed."""
    sys.path.insert(0, ROOT)
    from benchmarks.bench_train import _time

    seen = []
    result = _time(lambda xb, yb: seen.append(xb), [(i, i) for i in range(10)], (-1, -1),
                   steps=2, n_params=1, threads=1, epoch_steps=epoch_steps)
    assert seen == [-1] * 12 + stepped                   # 10 warm-up and 2 timed steps first
    assert result["epoch_steps"] == len(stepped) and result["n_batches"] == 10


def test_bench_train_times_epoch_two_after_untimed_epochs():
    """The engines' loops are timed on the `train` command's epoch (2): the epoch
    before it runs untimed, after the step timings."""
    sys.path.insert(0, ROOT)
    from benchmarks.bench_train import _time

    class Epochs:                   # a fresh epoch per iteration, as BatchIterator
        count = 0

        def __len__(self):
            return 3

        def __iter__(self):
            Epochs.count += 1
            return iter([(Epochs.count, k) for k in range(3)])

    seen = []
    result = _time(lambda xb, yb: seen.append((xb, yb)), Epochs(), (0, -1), steps=2,
                   n_params=1, threads=1, epoch=2)
    assert seen == [(0, -1)] * 12 + [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    assert result["epoch_steps"] == 3


def test_bench_train_runs_the_train_command_and_reads_its_epoch(tmp_path):
    """The headline comes from the command users run: its epoch 2 as metrics.jsonl
    records it, and the threads and BLAS its header names."""
    sys.path.insert(0, ROOT)
    from benchmarks.bench_train import TRAIN_EPOCHS, run_train_command

    result = run_train_command("mlp-vae", 1, str(tmp_path),
                               extra=["--train-limit", "512", "--test-limit", "128"])
    with open(tmp_path / "train-mlp-vae" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == TRAIN_EPOCHS
    assert result["epoch_s"] == records[-1]["train_seconds"] > 0
    assert result["threads"] == 1
    assert "OpenBLAS" in result["blas"] or "MKL" in result["blas"]


def test_train_overhead_times_the_command_and_the_loop_in_pairs():
    """benchmarks/train_overhead.py: both loops run on one model (a tiny training
    set here); the summary is the mean ratio with its Student-t interval."""
    sys.path.insert(0, ROOT)
    from benchmarks.train_overhead import measure, summary

    results = measure("mlp-vae", 2, train_limit=384, log=lambda *a: None)
    assert len(results) == 2 and all(c > 0 and b > 0 for c, b in results)
    mean, (lo, hi) = summary([(1.1, 1.0), (1.3, 1.0), (1.2, 1.0)])
    # ratios 1.1, 1.3, 1.2: sd 0.1, t_{0.975, 2} = 4.3027
    assert mean == pytest.approx(1.2)
    assert (lo, hi) == pytest.approx((1.2 - 4.3027 * 0.1 / 3 ** 0.5,
                                      1.2 + 4.3027 * 0.1 / 3 ** 0.5), abs=1e-4)


def test_bench_train_products_are_the_mlp_steps_and_replay_alone():
    """--products: the 11 products of one mlp-vae step (forward, dX, dW of its linear
    layers; none for the images' gradient), in their layouts, replayed alone."""
    sys.path.insert(0, ROOT)
    from benchmarks import bench_train
    from benchmarks.common import product_layouts

    calls, _ = bench_train.recorded_products("mlp-vae")
    assert [f"{a.shape[0]}x{a.shape[1]}x{b.shape[1]}" for a, b, _ in calls] == [
        "128x784x400", "128x400x40", "128x20x400", "128x400x784",     # forward
        "128x784x400", "784x128x400", "128x400x20", "400x128x20",     # decoder's backward
        "128x40x400", "40x128x400", "400x128x784"]                   # encoder's backward
    layouts = product_layouts(calls)
    assert layouts[0] == [128, 784, 400, False, True]      # x @ W.T: W read transposed
    assert any(row[3] for row in layouts)                  # dW = dY.T @ X: dY transposed
    for update in (False, True):                           # ours-products, ours-floor
        result = bench_train.worker_ours_products("mlp-vae", 2, update=update)
        assert result["products"] == 11 and result["step_ms"] > 0


def test_bench_train_products_refuses_the_conv_models():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_train.py"),
                             "--model", "conv-vae", "--products"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "--products: the products of conv-vae run inside the fused im2col" in result.stderr


def test_profile_step_times_the_iwae_step_part_by_part(tmp_path):
    """profile_step.py --model iwae-1l: Burda et al.'s step over k samples, each
    layer's passes and what lies outside them, in a table."""
    out = tmp_path / "profile.md"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_step.py"),
                             "--model", "iwae-1l", "--batch", "3", "--k", "2", "--steps", "2",
                             "--warmup", "1", "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "## iwae-1l: one training step, layer by layer" in text and "batch 3;" in text
    assert "| decoder[4] Linear | backward |" in text and "| optimizer (Adam) |" in text


@pytest.mark.parametrize("args, expected", [
    (["--model", "conv-vae", "--k", "5"], "--k and --objective are options of --model iwae-1l"),
    (["--model", "iwae-1l", "--k", "0"], "--batch and --k take numbers >= 1"),
    (["--model", "conv-vae", "--out", "x.md"], "--out is an option of --model iwae-1l"),
])
def test_profile_step_refuses_options_of_another_model(args, expected):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_step.py"),
                             *args], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and expected in result.stderr

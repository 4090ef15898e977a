"""Processes that time PyTorch import it before anything of scratchvae.

A process that times PyTorch must not share the cores with scratchvae's thread
pool or BLAS settings (benchmarks/common.import_torch says why). Each script
below is run as ``__main__`` in a fresh interpreter with
``benchmarks.common.import_torch`` replaced by a probe that reports whether
scratchvae was already imported, then stops the script. No PyTorch needed.
"""
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
    ("bench_conv_layers.py", ["--worker", "torch", "2", "1"]),
    ("profile_step.py", ["--torch"]),
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

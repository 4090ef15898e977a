"""benchmarks/gpu_bundle.sh and benchmarks/gpu_check.sh: valid bash, and
gpu_check.sh's stages run one after another, a failed or timed-out stage
reported without stopping the next (``python3`` and ``nvidia-smi`` stubbed)."""
import os
import stat
import subprocess

import pytest

from gpu_backend import ROOT

SCRIPTS = ROOT / "benchmarks"
#: a python3 that logs its arguments (and the tests' switch) and obeys STUB_* variables
FAKE_PYTHON = """#!/usr/bin/env bash
cat >/dev/null </dev/null
echo "python3 $* [SCRATCHVAE_GPU_TESTS=${SCRATCHVAE_GPU_TESTS:-} PYTHONPATH=$PYTHONPATH]" >> "$STUB_LOG"
case "$*" in
  *bench_gpu.py*) while [ "$1" != --out ]; do shift; done
                  echo table > "$2/bench_gpu.md"; echo {} > "$2/bench_gpu.json";;
  *"-m pytest"*) echo "1 failed, 9 passed"; sleep "${STUB_TESTS_SLEEP:-0}"; exit "${STUB_TESTS_RC:-0}";;
esac
exit 0
"""


@pytest.mark.parametrize("script", ["gpu_bundle.sh", "gpu_check.sh"])
def test_scripts_are_valid_bash(script):
    proc = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _run_check(tmp_path, **env):
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, text in (("python3", FAKE_PYTHON), ("nvidia-smi", "#!/bin/sh\necho FAKE GPU\n")):
        (stubs / name).write_text(text)
        (stubs / name).chmod(stat.S_IRWXU)
    out = tmp_path / "out"
    full_env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}",
                    STUB_LOG=str(tmp_path / "calls.log"), **env)
    proc = subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh"), str(out)], cwd=tmp_path,
                          env=full_env, capture_output=True, text=True, timeout=120)
    calls = (tmp_path / "calls.log").read_text() if (tmp_path / "calls.log").exists() else ""
    return proc, out, calls


def test_gpu_check_runs_every_stage_and_reports_the_failed_one(tmp_path):
    proc, out, calls = _run_check(tmp_path, STUB_TESTS_RC="1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    files = sorted(p.name for p in out.iterdir())
    assert all(p.is_file() for p in out.iterdir()) and len(files) <= 8, files
    assert {"env.txt", "gpu_tests.log", "bench_gpu.log", "bench_gpu.md",
            "summary.txt"} <= set(files), files
    summary = (out / "summary.txt").read_text()
    lines = {line.split()[0]: line for line in summary.splitlines()[1:5 + 1]}
    assert "FAILED (exit 1)" in lines["tests"] and " ok " in lines["bench"], summary
    assert " ok " in lines["epochs"], summary
    assert "ok" in lines["env"], summary
    pytest_call = next(line for line in calls.splitlines() if "-m pytest" in line)
    assert "-m pytest -m gpu tests -q -rs" in pytest_call and "--junitxml" in pytest_call
    assert "SCRATCHVAE_GPU_TESTS=cupy" in pytest_call
    assert f"PYTHONPATH=/tmp/site:{ROOT}" in pytest_call
    assert "benchmarks/gpu_epoch_check.py --models mlp-vae conv-vae vq-vae --epochs 2" in calls
    assert f"benchmarks/bench_gpu.py --out {out} --budget 160" in calls
    assert "FAKE GPU" in (out / "env.txt").read_text()


def test_a_stage_past_its_budget_is_stopped_and_the_next_runs(tmp_path):
    proc, out, calls = _run_check(tmp_path, STUB_TESTS_SLEEP="30", TESTS_BUDGET="1")
    assert proc.returncode == 1
    summary = (out / "summary.txt").read_text()
    assert "TIMEOUT after 1s" in summary and "bench_gpu.py" in calls, summary


def test_gpu_check_wants_one_argument():
    proc = subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh")], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "usage: bash benchmarks/gpu_check.sh OUTDIR" in proc.stderr


def test_captured_on_cpu_prints_the_captured_runs_losses(capsys):
    """benchmarks/captured_on_cpu.py: train's seeds through graph_step.reference_epochs."""
    import importlib.util

    import numpy as np

    from scratchvae.config import TrainConfig, make_model, make_optimizer
    from scratchvae.graph_step import counter_seed, reference_epochs
    from scratchvae.rundir import load_data, seed_sequences

    spec = importlib.util.spec_from_file_location("captured_on_cpu",
                                                  SCRIPTS / "captured_on_cpu.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--model", "mlp-vae", "--train-limit", "384", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 full batches of 128 per epoch" in out, out
    config = TrainConfig(model="mlp-vae", device="cpu", epochs=1, seed=3, train_limit=384)
    init_ss, shuffle_ss, noise_ss, _ = seed_sequences(3)
    model = make_model(config, np.random.default_rng(init_ss))
    _, (x, _), _ = load_data(config, log=lambda *a: None, progress=False)
    want = reference_epochs(model, make_optimizer(config, model.parameters()), config, x,
                            np.random.default_rng(shuffle_ss), counter_seed(noise_ss))
    assert f"epoch 1  train loss {want[0]:.3f}" in out, (want, out)
    with pytest.raises(SystemExit) as e:
        script.main(["--model", "mlp-vae", "--epochs", "0"])
    assert e.value.code == 2
    assert "--epochs: expected a positive number, got 0" in capsys.readouterr().err

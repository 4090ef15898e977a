"""``python -m scratchvae sweep``: a real sweep on a local Dask cluster, its summary
against the runs' own metrics, the Student-t interval by hand, a re-run that skips
finished runs, a worker killed mid-run, and bad input."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("distributed")

from scratchvae import files  # noqa: E402
from scratchvae.cli import main  # noqa: E402
from scratchvae.config import TrainConfig  # noqa: E402
from scratchvae.rundir import write_config  # noqa: E402
from scratchvae.sweep import checkpoint_epoch, t_interval  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--model", "mlp-vae", "--sample", "--train-limit", "64", "--test-limit", "32",
        "--batch-size", "32", "--epochs", "1", "--no-progress"]
#: runs of a few seconds, long enough to kill a worker between two checkpoints
LONGER = ["--model", "mlp-vae", "--sample", "--train-limit", "1000", "--test-limit", "32",
          "--batch-size", "32", "--epochs", "6", "--no-progress"]
TIMINGS = ("train_seconds", "seconds")


def _numbers(run_dir):
    """A run's metrics records without their timings."""
    return [{k: v for k, v in r.items() if k not in TIMINGS}
            for r in files.read_jsonl(os.path.join(run_dir, "metrics.jsonl"))]


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "scratchvae", "sweep", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as c:
        yield c


def test_t_interval_matches_a_hand_computed_case():
    # [1, 2, 3, 4]: mean 2.5, s = sqrt(5/3) = 1.2910, t_{0.975, 3} = 3.1824,
    # half-width 3.1824 * 1.2910 / 2 = 2.0542
    s = t_interval([1, 2, 3, 4])
    assert s["n"] == 4 and s["mean"] == 2.5
    assert s["sd"] == pytest.approx(1.29099, abs=1e-5)
    assert s["half_width"] == pytest.approx(2.05426, abs=1e-4)
    assert (s["low"], s["high"]) == pytest.approx((2.5 - 2.05426, 2.5 + 2.05426), abs=1e-4)
    assert t_interval([3.0])["sd"] is None   # one seed: no spread, no interval


def test_sweep_of_two_configurations_matches_its_runs_and_a_rerun_skips(tmp_path, capsys):
    out = str(tmp_path / "sw")
    args = [*TINY, "--seeds", "0-1", "--set", "latent-dim=4,8", "--out", out,
            "--workers", "2", "--threads-per-worker", "1"]
    assert main(["sweep", *args]) == 0
    printed = capsys.readouterr().out
    assert printed.count(": trained") == 4
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["metric"] == "test_nelbo" and "Student t" in summary["method"]
    assert [c["name"] for c in summary["configurations"]] == ["latent_dim=4", "latent_dim=8"]
    finals = {}
    for c in summary["configurations"]:
        assert c["seeds"] == [0, 1]
        for seed, value in zip(c["seeds"], c["metrics"]["test_nelbo"]["values"]):
            run_dir = os.path.join(out, c["name"], f"seed={seed}")
            record = files.read_jsonl(os.path.join(run_dir, "metrics.jsonl"))[-1]
            assert value == record["test_nelbo"]
            assert json.load(open(os.path.join(run_dir, "config.json")))["latent_dim"] == (
                c["settings"]["latent_dim"])
            finals[c["name"], seed] = value
        s = c["metrics"]["test_nelbo"]
        assert s["mean"] == pytest.approx(np.mean(s["values"]))
    (p,) = summary["paired"]
    assert p["differences"] == [finals["latent_dim=4", s] - finals["latent_dim=8", s]
                                for s in (0, 1)]
    assert os.path.getsize(os.path.join(out, "summary.png")) > 0
    assert "| latent_dim=4 | test_nelbo | 2 |" in open(os.path.join(out, "summary.md")).read()

    # again: every run is finished, so none trains and no file of a run changes
    runs = [os.path.join(out, c, f"seed={s}") for c in ("latent_dim=4", "latent_dim=8")
            for s in (0, 1)]
    before = {r: (open(os.path.join(r, "metrics.jsonl"), "rb").read(),
                  os.stat(os.path.join(r, "checkpoint.npz")).st_mtime_ns) for r in runs}
    assert main(["sweep", *args, "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count(": skipped") == 4 and ": trained" not in captured.err
    assert json.loads(captured.out)["configurations"] == summary["configurations"]
    assert before == {r: (open(os.path.join(r, "metrics.jsonl"), "rb").read(),
                          os.stat(os.path.join(r, "checkpoint.npz")).st_mtime_ns)
                      for r in runs}


def test_a_killed_worker_loses_nothing(tmp_path, cluster):
    address = cluster.scheduler_address
    reference = _cli(*LONGER, "--seeds", "0-1", "--out", str(tmp_path / "ref"),
                     "--scheduler", address)
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "killed"
    run_dir = str(out / "default" / "seed=0")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    sweep = subprocess.Popen([sys.executable, "-m", "scratchvae", "sweep", *LONGER, "--seeds",
                              "0-1", "--out", str(out), "--scheduler", address], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    killed = None
    while killed is None and time.monotonic() < deadline and sweep.poll() is None:
        try:   # a checkpoint written, more epochs to come: kill the lock's holder
            if 1 <= checkpoint_epoch(run_dir) < 6:
                killed = int(open(os.path.join(run_dir, ".lock")).read().split()[0])
                os.kill(killed, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            killed = None
        time.sleep(0.02)
    stdout, stderr = sweep.communicate(timeout=120)
    assert killed is not None, "the run ended before a worker could be killed"
    assert sweep.returncode == 0, stderr
    assert "default seed 0: resumed" in stdout
    for seed in (0, 1):
        ours = _numbers(str(out / "default" / f"seed={seed}"))
        assert [r["epoch"] for r in ours] == [1, 2, 3, 4, 5, 6]   # none twice, none lost
        assert ours == _numbers(str(tmp_path / "ref" / "default" / f"seed={seed}"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_scheduler_that_does_not_answer_is_an_error_within_seconds(tmp_path, capsys):
    address = f"tcp://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    assert main(["sweep", *TINY, "--seeds", "0", "--out", str(tmp_path / "o"),
                 "--scheduler", address]) == 1
    assert time.monotonic() - start < 10
    assert f"error: the scheduler {address} does not answer" in capsys.readouterr().err


def test_an_out_holding_runs_of_another_model_is_refused(tmp_path, capsys):
    other = tmp_path / "sw" / "default" / "seed=7"
    other.mkdir(parents=True)
    write_config(str(other), TrainConfig(model="conv-vae"))
    assert main(["sweep", *TINY, "--seeds", "0", "--out", str(tmp_path / "sw")]) == 1
    err = capsys.readouterr().err
    assert "holds runs of another model" in err and "conv-vae" in err
    assert sorted(os.listdir(tmp_path / "sw")) == ["default"]   # nothing written


@pytest.mark.parametrize("args, message", [
    (["--seeds", "5-2"], "got '5-2'"),
    (["--seeds", ""], "got ''"),
    (["--seeds", "a"], "got 'a'"),
    (["--seeds", "0", "--set", "latent-size=4"], "NAME a training option"),
    (["--seeds", "0", "--set", "latent-dim=4.5"], "expected an integer >= 0, got '4.5'"),
    (["--seeds", "0", "--set", "likelihood=poisson"], "expected one of"),
    (["--seeds", "0", "--workers", "64"], "more than this machine's"),
    (["--seeds", "0", "--seed", "1"], "--seed: a sweep trains the seeds of --seeds"),
    (["--seeds", "0", "--set", "beta=1", "--set", "beta=2"], "given twice"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        code = main(["sweep", *TINY, "--out", str(tmp_path / "o"), *args])
        raise SystemExit(code)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

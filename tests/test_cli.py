"""The command line's error contract (README, "Command line"): bad arguments exit 2
with argparse's usage and message, a failed run prints ``error: ...`` and exits 1,
never a traceback. Tiny runs of the bundled sample."""
import os
import subprocess
import sys

import pytest

from scratchvae.cli import main

TINY_RUN = ["--sample", "--train-limit", "64", "--test-limit", "32", "--epochs", "1",
            "--batch-size", "32", "--no-progress"]


def _scratchvae(*argv):
    """``python -m scratchvae ARGV`` in a subprocess: (exit code, stderr)."""
    result = subprocess.run([sys.executable, "-m", "scratchvae", *argv], capture_output=True,
                            text=True)
    return result.returncode, result.stderr


@pytest.mark.parametrize("argv,needle", [
    (["--model", "vq-vae", "--vq-decay", "1.5"],
     "error: argument --vq-decay: expected a number between 0 and 1"),
    (["--capacity-max", "5"],  # capacity annealing without --capacity-gamma
     "python -m scratchvae train: error: invalid training configuration: KLSchedule: "
     "capacity annealing"),
    (["--kl-warmup-steps", "10", "--capacity-gamma", "30"],  # warm-up and capacity together
     "python -m scratchvae train: error: invalid training configuration"),
])
def test_train_options_that_do_not_fit_exit_2_with_usage(tmp_path, argv, needle):
    out = tmp_path / "run"
    code, err = _scratchvae("train", *argv, "--epochs", "1", "--out", str(out))
    assert code == 2, err
    assert err.startswith("usage: python -m scratchvae train ") and needle in err
    assert "Traceback" not in err and not out.exists()


def test_usage_error_is_returned_by_main(tmp_path, capsys):
    assert main(["train", "--capacity-max", "5", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m scratchvae train ")
    assert "python -m scratchvae train: error: " in err and "capacity_gamma" in err


def test_resume_and_overwrite_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--resume", str(tmp_path), "--overwrite"])
    assert e.value.code == 2
    assert "--overwrite: not allowed with argument --resume" in capsys.readouterr().err


def test_gpu_without_cupy_is_an_error_not_a_traceback(tmp_path, capsys, monkeypatch):
    import scratchvae.backend

    run = str(tmp_path / "run")
    assert main(["train", "--out", run, *TINY_RUN]) == 0  # on the CPU
    capsys.readouterr()
    monkeypatch.setattr(scratchvae.backend, "cupy_available", lambda: False)
    for argv in (["train", "--device", "gpu", "--out", str(tmp_path / "gpu"), *TINY_RUN],
                 ["evaluate", "--checkpoint", run, "--device", "gpu", "--iw-k", "0"],
                 ["sample", "--checkpoint", run, "--device", "gpu",
                  "--out", str(tmp_path / "s.png")],
                 ["report", "--runs", run, "--device", "gpu", "--out", str(tmp_path / "r.md")]):
        assert main(argv) == 1, argv
        last = capsys.readouterr().err.splitlines()[-1]  # report logs what it does first
        assert last.startswith("error: device 'gpu' needs CuPy and a CUDA GPU"), (argv, last)
        assert "--device cpu" in last
    assert not os.path.exists(tmp_path / "gpu") and not os.path.exists(tmp_path / "s.png")

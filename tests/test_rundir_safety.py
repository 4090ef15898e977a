"""A run directory under misuse: one writer at a time (a lock the kernel releases),
output paths checked before any work, no litter from killed or failed runs, one
way out of a run killed before its first checkpoint, and readers that see saved
epochs only. Real processes where it matters (two writers, SIGKILL, SIGTERM);
tiny runs of the bundled sample."""
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from scratchvae import checkpoints as ckpt
from scratchvae import files, rundir
from scratchvae.cli import main
from scratchvae.config import TrainConfig
from scratchvae.models.vae import VAE
from scratchvae.train import train

TINY_RUN = ["--sample", "--train-limit", "64", "--test-limit", "32", "--batch-size", "32",
            "--no-progress"]
TINY = dict(use_sample=True, train_limit=64, test_limit=32, batch_size=32, epochs=1)
RUN_FILES = ["checkpoint.npz", "config.json", "metrics.jsonl"]

#: ``python -m scratchvae ARGV[3:]`` whose ARGV[2]-th checkpoint write stops halfway
#: (its temporary file holds a few bytes; it then writes ARGV[1].stopped) until the
#: file ARGV[1] exists
STOPPED_IN_A_CHECKPOINT_WRITE = """
import os, runpy, sys, time
import numpy as np
go, stop_at, calls, savez = sys.argv[1], int(sys.argv[2]), [], np.savez
def stopping(f, **arrays):
    calls.append(1)
    if len(calls) == stop_at:
        f.write(b"partial")
        f.flush()
        open(go + ".stopped", "w").close()
        deadline = time.monotonic() + 300
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.02)
        f.seek(0)
        f.truncate()
    return savez(f, **arrays)
np.savez = stopping
sys.argv = ["scratchvae", *sys.argv[3:]]
runpy.run_module("scratchvae", run_name="__main__")
"""


def _scratchvae(*argv):
    """``python -m scratchvae ARGV`` in a subprocess: (exit code, stdout, stderr)."""
    result = subprocess.run([sys.executable, "-m", "scratchvae", *argv], capture_output=True,
                            text=True, timeout=300)
    return result.returncode, result.stdout, result.stderr


def _last_line(err):
    return err.strip().splitlines()[-1]


def _epochs(run):
    return [r["epoch"] for r in files.read_jsonl(os.path.join(run, rundir.METRICS))]


class Stopped:
    """A command stopped inside its ``stop_at``-th checkpoint write, in ``run``."""

    def __init__(self, tmp_path, run, stop_at, argv):
        self.go, self.run = tmp_path / f"go-{stop_at}", run
        self.process = subprocess.Popen(
            [sys.executable, "-c", STOPPED_IN_A_CHECKPOINT_WRITE, str(self.go), str(stop_at),
             *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not os.path.exists(f"{self.go}.stopped"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"the command did not reach its checkpoint write: "
                            f"{self.process.communicate()}")
            time.sleep(0.02)

    def go_on(self):
        """Let it finish: (exit code, stderr)."""
        self.go.touch()
        _, err = self.process.communicate(timeout=300)
        return self.process.returncode, err

    def stop(self, sig):
        self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=300)
        return self.process.returncode, err


@pytest.fixture
def stopped(tmp_path):
    """stopped(stop_at, argv): a :class:`Stopped` command; killed at the end if alive."""
    made = []

    def start(stop_at, argv):
        made.append(Stopped(tmp_path, tmp_path / "run", stop_at, argv))
        return made[-1]
    yield start
    for s in made:
        if s.process.poll() is None:
            s.process.kill()
            s.process.communicate()


# --------------------------------------------------------------------------
# 1. one writer at a time
# --------------------------------------------------------------------------

def test_a_second_writer_fails_at_once_and_the_first_finishes_untouched(stopped, tmp_path):
    run = tmp_path / "run"
    first = stopped(2, ["train", "--out", str(run), "--epochs", "2", *TINY_RUN])
    # it holds the run between epoch 2's metrics line and epoch 2's checkpoint
    assert _epochs(run) == [1, 2] and ckpt.load_checkpoint(str(run))[2]["epoch"] == 1
    for argv in (["train", "--out", str(run), "--overwrite", "--seed", "1", "--epochs", "1",
                  *TINY_RUN],
                 ["train", "--resume", str(run), "--epochs", "3", "--no-progress"]):
        code, _, err = _scratchvae(*argv)
        assert code == 1, err
        assert _last_line(err).startswith(f"error: {run} is in use by process "
                                          f"{first.process.pid}: "), err
        assert first.process.poll() is None      # at once: the first one still runs
    # readers take no lock and see the saved epochs only: epoch 2 waits for its checkpoint
    assert [r["epoch"] for r in rundir.read_run(str(run))[1]] == [1]
    from scratchvae.report import summarize_run
    row = summarize_run(str(run), iw_k=0)
    assert row["epochs"] == 1
    assert row["test_nelbo"] == files.read_jsonl(run / rundir.METRICS)[0]["test_nelbo"]
    code, err = first.go_on()
    assert code == 0, err
    # untouched: the same files as the same run alone
    alone = tmp_path / "alone"
    assert _scratchvae("train", "--out", str(alone), "--epochs", "2", *TINY_RUN)[0] == 0
    assert sorted(os.listdir(run)) == RUN_FILES
    assert ((run / rundir.CONFIG).read_text()
            == (alone / rundir.CONFIG).read_text().replace(str(alone), str(run)))
    a, b = files.read_jsonl(run / rundir.METRICS), files.read_jsonl(alone / rundir.METRICS)
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    state, _, meta = ckpt.load_checkpoint(str(run))
    state_alone, _, _ = ckpt.load_checkpoint(str(alone))
    assert meta["epoch"] == 2 and all(np.array_equal(state[k], state_alone[k]) for k in state)


def test_a_killed_writer_leaves_no_stale_lock_and_its_litter_goes_at_the_resume(stopped,
                                                                                tmp_path):
    run = tmp_path / "run"
    first = stopped(2, ["train", "--out", str(run), "--epochs", "2", *TINY_RUN])
    code, _ = first.stop(signal.SIGKILL)
    assert code == -signal.SIGKILL
    litter = files.temp_files(run / rundir.CHECKPOINT)
    assert len(litter) == 1 and os.path.exists(run / files.LOCK)   # what a kill leaves
    # another writer's temporary file, killed mid-write, and a file that is not the run's
    stray = tempfile.mkstemp(dir=run, prefix="." + rundir.CONFIG, suffix=".tmp")[1]
    (run / ".notes.txt1234.tmp").write_text("not a run file")
    code, _, err = _scratchvae("train", "--resume", str(run), "--no-progress")
    assert code == 0, err
    assert _epochs(run) == [1, 2] and ckpt.load_checkpoint(str(run))[2]["epoch"] == 2
    assert not os.path.exists(litter[0]) and not os.path.exists(stray)
    assert sorted(os.listdir(run)) == [".notes.txt1234.tmp", *RUN_FILES]


def test_a_metrics_record_without_an_integer_epoch_is_named(tmp_path):
    (tmp_path / rundir.METRICS).write_text('{"epoch": 1}\n{"epoch": "2"}\n')
    with pytest.raises(files.FileError, match=r"metrics.jsonl, line 2: epoch is '2', not an "
                                              r"integer >= 1; the file is damaged"):
        rundir.read_metrics(str(tmp_path), epoch=3)
    (tmp_path / rundir.METRICS).write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')
    assert rundir.read_metrics(str(tmp_path), epoch=2) == [{"epoch": 1}, {"epoch": 2}]
    assert rundir.read_metrics(str(tmp_path)) == []        # no checkpoint: no saved epoch


def test_the_lock_is_exclusive_within_a_process_too_and_goes_on_release(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with files.locked(str(run)):
        assert (run / files.LOCK).read_text() == f"{os.getpid()}\n"
        with pytest.raises(files.DirectoryInUse,
                           match=f"^{run} is in use by process {os.getpid()}: "):
            with files.locked(str(run)):
                pass
        with pytest.raises(files.DirectoryInUse):   # before any work
            train(TrainConfig(**TINY), str(run), progress=False, log=lambda *a: None)
        assert main(["train", "--out", str(run), "--epochs", "1", *TINY_RUN]) == 1
        assert _last_line(capsys.readouterr().err).startswith(
            f"error: {run} is in use by process {os.getpid()}")
        assert os.listdir(run) == [files.LOCK]
    assert os.listdir(run) == []
    with files.locked(str(run)):    # released: it can be taken again
        pass


# --------------------------------------------------------------------------
# 2. output paths, checked before any work
# --------------------------------------------------------------------------

def _no_work(*args, **kwargs):
    raise AssertionError("the command started its work before checking its output path")


@pytest.fixture
def read_only(monkeypatch):
    """make(path): ``path`` made read-only (mode 0o555, a file 0o444). Where mode bits
    do not bind this process (root), ``os.access`` answers as for any other user."""
    made, real_access = [], os.access

    def access(path, mode, **kwargs):
        if mode & os.W_OK and not os.stat(path).st_mode & stat.S_IWUSR:
            return False
        return real_access(path, mode, **kwargs)

    def make(path):
        os.chmod(path, 0o555 if os.path.isdir(path) else 0o444)
        made.append(path)
        if real_access(path, os.W_OK):   # root: simulate
            monkeypatch.setattr(os, "access", access)
        return path
    yield make
    for path in made:
        os.chmod(path, 0o755)


def _out_path(tmp_path, case, suffix, read_only):
    """The ``--out`` of a case (a directory for train: suffix ''), and the words
    the error names."""
    (tmp_path / "file").write_text("a regular file")
    name = "run" if not suffix else "out" + suffix
    if case == "a file where a directory goes, or a directory where a file goes":
        taken = tmp_path / ("taken" + suffix)
        taken.write_text("a file") if not suffix else taken.mkdir()
        return taken, "not a directory" if not suffix else "it is a directory, not a file"
    if case == "under a regular file":
        return tmp_path / "file" / "new" / name, f"{tmp_path / 'file'} is a file, not a directory"
    if case == "in a read-only directory":
        read_only(tmp_path)
        return tmp_path / "new" / name, f"{tmp_path} is read-only (permission denied)"
    # read-only itself: a directory for train, a file for the others
    out = tmp_path / name
    out.mkdir() if not suffix else out.write_text("an old output")
    read_only(out)
    return out, "read-only (permission denied)"


COMMANDS = {
    "train": ("", lambda out, run: ["train", "--out", out, "--epochs", "1", *TINY_RUN]),
    "sample": (".png", lambda out, run: ["sample", "--checkpoint", run, "--out", out]),
    "plot": (".png", lambda out, run: ["plot", "samples", "--run", run, "--out", out]),
    "report": (".md", lambda out, run: ["report", "--runs", run, "--iw-k", "0", "--out", out]),
}
CASES = ["a file where a directory goes, or a directory where a file goes",
         "under a regular file", "in a read-only directory", "read-only itself"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_output_path_that_cannot_be_written_fails_before_any_work(
        tmp_path, monkeypatch, capsys, read_only, command, case):
    import scratchvae.figures
    import scratchvae.report
    import scratchvae.train
    for module, name in ((rundir, "load_run"), (scratchvae.figures, "load_run"),
                         (scratchvae.report, "load_run"), (scratchvae.train, "load_data")):
        monkeypatch.setattr(module, name, _no_work)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    suffix, argv = COMMANDS[command]
    out, problem = _out_path(outputs, case, suffix, read_only)
    assert main(argv(str(out), str(tmp_path / "a-run"))) == 1
    last = _last_line(capsys.readouterr().err)
    assert last.startswith("error: cannot ") and str(out) in last and problem in last, last
    assert not (outputs / "new").exists()


def test_resume_of_a_read_only_run_fails_before_any_work(tmp_path, monkeypatch, capsys,
                                                         read_only):
    import scratchvae.train
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--epochs", "1", *TINY_RUN]) == 0
    read_only(run)
    monkeypatch.setattr(scratchvae.train, "load_data", _no_work)
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 1
    assert _last_line(capsys.readouterr().err) == (
        f"error: cannot write into {run}: the directory is read-only (permission denied)")


def test_a_file_as_train_out_is_an_error_at_once_not_a_traceback(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    code, _, err = _scratchvae("train", "--out", str(taken), "--epochs", "1", *TINY_RUN)
    assert code == 1 and "Traceback" not in err
    assert err == f"error: cannot write into {taken}: it is a file, not a directory\n"
    assert taken.read_text() == "a file"


# --------------------------------------------------------------------------
# 7. no litter
# --------------------------------------------------------------------------

def _raise(error):
    def fail(*args, **kwargs):
        raise error
    return fail


@pytest.mark.parametrize("failure", ["data not found", "interrupted", "diverged"])
def test_a_new_run_that_fails_leaves_no_directory(tmp_path, monkeypatch, capsys, failure):
    import scratchvae.train
    from scratchvae.data import DataNotFoundError
    if failure == "data not found":
        monkeypatch.setattr(scratchvae.train, "load_data", _raise(DataNotFoundError("no data")))
    else:   # in the first epoch
        real_loss = VAE.loss

        def loss(self, *a, **k):
            if failure == "interrupted":
                raise KeyboardInterrupt
            value, parts = real_loss(self, *a, **k)
            return value * np.nan, parts
        monkeypatch.setattr(VAE, "loss", loss)
    out = tmp_path / "new" / "deeper" / "run"
    code = main(["train", "--out", str(out), "--epochs", "1", *TINY_RUN])
    assert code == (130 if failure == "interrupted" else 1)
    assert os.listdir(tmp_path) == [], capsys.readouterr().err


def test_sigterm_removes_the_temporary_file_and_the_lock(stopped, tmp_path):
    run = tmp_path / "run"
    first = stopped(1, ["train", "--out", str(run), "--epochs", "1", *TINY_RUN])
    code, err = first.stop(signal.SIGTERM)
    assert code == 130 and _last_line(err).startswith("interrupted"), err
    assert sorted(os.listdir(run)) == [rundir.CONFIG, rundir.METRICS]


# --------------------------------------------------------------------------
# 9. one way out of a run killed before its first checkpoint
# --------------------------------------------------------------------------

def test_a_run_killed_before_its_first_checkpoint_has_one_way_out(stopped, tmp_path):
    run = tmp_path / "run"
    first = stopped(1, ["train", "--out", str(run), "--epochs", "1", *TINY_RUN])
    first.stop(signal.SIGKILL)
    assert _epochs(run) == [1] and not (run / rundir.CHECKPOINT).exists()
    way_out = f"start it again with --out {run} --overwrite"
    for argv in (["train", "--out", str(run), "--epochs", "1", *TINY_RUN],
                 ["train", "--resume", str(run), "--epochs", "2", "--no-progress"]):
        code, _, err = _scratchvae(*argv)
        assert code == 1 and way_out in _last_line(err), (argv, err)
        assert "--resume" not in _last_line(err), err
    code, _, err = _scratchvae("train", "--out", str(run), "--overwrite", "--epochs", "1",
                               *TINY_RUN)
    assert code == 0, err
    assert sorted(os.listdir(run)) == RUN_FILES and _epochs(run) == [1]

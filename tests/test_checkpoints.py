"""A run directory's files: a new run never wrecks an old one, the metrics line is
written before the checkpoint, a non-finite epoch is never saved, and the files
get the normal mode. Tiny runs of the bundled sample."""
import json
import os

import numpy as np
import pytest

from scratchvae import checkpoints as ckpt
from scratchvae import files, rundir
from scratchvae.cli import main
from scratchvae.config import TrainConfig
from scratchvae.models.vae import VAE
from scratchvae.train import TrainingDiverged, train

TINY = dict(epochs=2, batch_size=32, train_limit=256, test_limit=64, use_sample=True,
            eval_batch_size=64)
STEPS_PER_EPOCH = 256 // 32
RUN_FILES = (rundir.CHECKPOINT, rundir.CONFIG, rundir.METRICS)


def _quiet(*args, **kwargs):
    pass


def _files(run):
    """name -> bytes of the run files in ``run``."""
    return {name: (run / name).read_bytes() for name in RUN_FILES if (run / name).exists()}


def _nan_loss_at(call):
    """A VAE.loss that returns NaN on its ``call``-th training call."""
    real_loss, calls = VAE.loss, []

    def poisoned(self, *a, **k):
        loss, parts = real_loss(self, *a, **k)
        calls.append(1)
        return (loss * np.nan if len(calls) == call else loss), parts
    return poisoned


# --------------------------------------------------------------------------
# a new run into a directory that holds one
# --------------------------------------------------------------------------

def test_new_run_refuses_a_directory_holding_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    train(TrainConfig(**{**TINY, "epochs": 1}), str(run), progress=False, log=_quiet)
    before = _files(run)
    with pytest.raises(ckpt.CheckpointError, match="already holds a run") as err:
        train(TrainConfig(**{**TINY, "seed": 1}), str(run), progress=False, log=_quiet)
    for remedy in ("--resume", "--out", "--overwrite"):
        assert remedy in str(err.value)
    assert main(["train", "--sample", "--train-limit", "64", "--test-limit", "32",
                 "--epochs", "1", "--no-progress", "--out", str(run)]) == 1
    assert "error: " in capsys.readouterr().err
    assert _files(run) == before
    # metrics alone (a run stopped before its first checkpoint) is a run too
    (run / rundir.CHECKPOINT).unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"already holds a run \(metrics.jsonl\)"):
        train(TrainConfig(**TINY), str(run), progress=False, log=_quiet)


def test_overwrite_keeps_the_old_run_until_the_first_epoch_is_written(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(TrainConfig(**{**TINY, "epochs": 1}), str(run), progress=False, log=_quiet)
    before = _files(run)
    # the new run stops in its first epoch: the old run is untouched
    monkeypatch.setattr(VAE, "loss", _nan_loss_at(3))
    with pytest.raises(TrainingDiverged, match=f"Nothing of this run was written: {run} is "
                                               f"as it was"):
        train(TrainConfig(**{**TINY, "seed": 1}), str(run), overwrite=True, progress=False,
              log=_quiet)
    monkeypatch.undo()
    assert _files(run) == before
    # the new run goes through: when its config lands, the old checkpoint is gone already
    checkpoint_present_at_config_write = []
    real_write_json = files.write_json

    def spy(path, obj):
        checkpoint_present_at_config_write.append((run / rundir.CHECKPOINT).exists())
        return real_write_json(path, obj)
    monkeypatch.setattr(files, "write_json", spy)
    history = train(TrainConfig(**{**TINY, "seed": 1}), str(run), overwrite=True,
                    progress=False, log=_quiet)
    assert checkpoint_present_at_config_write == [False]
    assert files.read_jsonl(run / rundir.METRICS) == history
    assert [r["epoch"] for r in history] == [1, 2]
    assert json.loads((run / rundir.CONFIG).read_text())["seed"] == 1
    assert ckpt.load_checkpoint(str(run))[2]["config"]["seed"] == 1
    # the same numbers as the same run into a fresh directory
    fresh = train(TrainConfig(**{**TINY, "seed": 1}), str(tmp_path / "fresh"), progress=False,
                  log=_quiet)
    assert [r["train_loss"] for r in fresh] == [r["train_loss"] for r in history]


def test_cli_overwrite(tmp_path, capsys):
    run = str(tmp_path / "run")
    argv = ["train", "--sample", "--train-limit", "64", "--test-limit", "32", "--epochs", "1",
            "--batch-size", "32", "--no-progress", "--out", run]
    assert main(argv) == 0
    assert main(argv + ["--seed", "3", "--overwrite"]) == 0
    assert json.loads(open(os.path.join(run, rundir.CONFIG)).read())["seed"] == 3
    assert len(files.read_jsonl(os.path.join(run, rundir.METRICS))) == 1


# --------------------------------------------------------------------------
# the end of an epoch: check, metrics line, config, checkpoint
# --------------------------------------------------------------------------

def test_metrics_line_is_written_before_the_checkpoint(tmp_path, monkeypatch):
    straight, run = tmp_path / "straight", tmp_path / "run"
    expected = train(TrainConfig(**{**TINY, "epochs": 3}), str(straight), progress=False,
                     log=_quiet)
    real_save, calls = ckpt.save_checkpoint, []

    def failing_once(*a, **k):  # the checkpoint of epoch 2 cannot be written
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_save(*a, **k)
    monkeypatch.setattr(ckpt, "save_checkpoint", failing_once)
    with pytest.raises(OSError, match="disk full"):
        train(TrainConfig(**{**TINY, "epochs": 3}), str(run), progress=False, log=_quiet)
    monkeypatch.undo()
    assert [r["epoch"] for r in files.read_jsonl(run / rundir.METRICS)] == [1, 2]
    assert ckpt.load_checkpoint(str(run))[2]["epoch"] == 1
    # the resume drops the line newer than the checkpoint and redoes epoch 2
    train(TrainConfig(**{**TINY, "epochs": 3}), str(run), resume=True, progress=False,
          log=_quiet)
    records = files.read_jsonl(run / rundir.METRICS)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for key in ("train_loss", "test_nelbo"):
        assert [r[key] for r in records] == [r[key] for r in expected]


def test_non_finite_parameters_are_never_checkpointed(tmp_path, monkeypatch):
    """An infinite gradient in an epoch's last step: the loss stays finite, the
    parameters do not; the epoch-1 checkpoint must stay the last one."""
    train(TrainConfig(**{**TINY, "epochs": 1}), str(tmp_path), progress=False, log=_quiet)
    before = _files(tmp_path)
    real_backward, calls = VAE.backward, []

    def overflowing(self, *a, **k):
        real_backward(self, *a, **k)
        calls.append(1)
        if len(calls) == STEPS_PER_EPOCH:  # the last step of epoch 2
            p = self.parameters()[0]
            p.grad = p.grad.copy()
            p.grad.flat[0] = np.inf
    monkeypatch.setattr(VAE, "backward", overflowing)
    with pytest.raises(TrainingDiverged,
                       match=r"became NaN or infinite in epoch 2.*checkpoint \(epoch 1\)"):
        train(TrainConfig(**TINY), str(tmp_path), resume=True, progress=False, log=_quiet)
    assert len(calls) == STEPS_PER_EPOCH
    assert _files(tmp_path) == before
    state, _, meta = ckpt.load_checkpoint(str(tmp_path))
    assert meta["epoch"] == 1 and all(np.isfinite(a).all() for a in state.values())
    assert [r["epoch"] for r in files.read_jsonl(tmp_path / rundir.METRICS)] == [1]


# --------------------------------------------------------------------------
# file modes
# --------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002, 0o027], ids=oct)
def test_run_files_get_the_normal_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        ckpt.save_checkpoint(str(tmp_path / rundir.CHECKPOINT), {"w": np.ones(3)}, {},
                             {"epoch": 1})
        files.write_json(str(tmp_path / rundir.CONFIG), {"seed": 0})
        files.append_jsonl(str(tmp_path / rundir.METRICS), {"epoch": 1})
        files.truncate_jsonl(str(tmp_path / "rewritten.jsonl"), lambda r: True)
        if umask == 0o002:  # and through a training run
            train(TrainConfig(**{**TINY, "epochs": 1}), str(tmp_path / "run"), progress=False,
                  log=_quiet)
    finally:
        os.umask(old)
    paths = [tmp_path / name for name in (*RUN_FILES, "rewritten.jsonl")]
    if umask == 0o002:
        paths += [tmp_path / "run" / name for name in RUN_FILES]
    for path in paths:
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~umask), path
    assert os.umask(old) == old  # the umask is as it was


def test_a_new_run_that_stops_in_its_first_epoch_leaves_no_directory(tmp_path, monkeypatch):
    run = tmp_path / "new" / "run"
    monkeypatch.setattr(VAE, "loss", _nan_loss_at(3))
    with pytest.raises(TrainingDiverged, match=f"Nothing was written: {run} is not created"):
        train(TrainConfig(**TINY), str(run), progress=False, log=_quiet)
    assert not run.exists()


def test_a_complete_metrics_line_that_is_not_a_record_is_refused(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n[2]\n{"epoch": 3')     # the torn last line is ignored
    with pytest.raises(files.FileError, match=r"line 2: a JSON list, not an object"):
        files.read_jsonl(path)
    path.write_text('{"epoch": 1}\n{"epoch": 2')
    assert files.read_jsonl(path) == [{"epoch": 1}]


def test_resuming_a_finished_run_trains_nothing(tmp_path):
    from scratchvae.train import NothingToTrain
    run = tmp_path / "run"
    train(TrainConfig(**{**TINY, "epochs": 1}), str(run), progress=False, log=_quiet)
    before = _files(run)
    with pytest.raises(NothingToTrain, match="has trained 1 of 1 epochs: nothing to continue"):
        train(TrainConfig(**{**TINY, "epochs": 1}), str(run), resume=True, progress=False,
              log=_quiet)
    assert _files(run) == before

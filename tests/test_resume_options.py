"""``train --resume DIR`` never ignores an option: every option given besides --epochs
and --no-progress is refused, whatever its value, its default too; and a run with
the cosine learning-rate schedule resumes exactly to its own number of epochs, while
another number (which would move the schedule's horizon) is refused. Tiny runs of
the bundled sample."""
import numpy as np
import pytest

from scratchvae import checkpoints as ckpt
from scratchvae import files, rundir
from scratchvae.cli import main
from scratchvae.config import TrainConfig
from scratchvae.train import ScheduleHorizonChanged, train

TINY = ["--sample", "--train-limit", "64", "--test-limit", "32", "--batch-size", "32",
        "--no-progress"]
RUN_FILES = (rundir.CHECKPOINT, rundir.CONFIG, rundir.METRICS)


def _files(run):
    return {name: (run / name).read_bytes() for name in RUN_FILES if (run / name).exists()}


def _quiet(*args, **kwargs):
    pass


@pytest.fixture
def run(tmp_path, capsys):
    """A one-epoch run trained with --lr 0.01, --batch-size 32 (not the defaults)."""
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "1", "--lr", "0.01", *TINY]) == 0
    capsys.readouterr()
    return out


@pytest.mark.parametrize("given,named", [
    (["--lr", "0.001", "--batch-size", "128"], "--batch-size, --lr"),   # both the defaults
    (["--out", "runs/run"], "--out"),                                   # the default --out
    (["--seed", "0", "--no-vq-ema"], "--seed, --vq-ema"),
    (["--data-dir", "", "--download"], "--data-dir, --download"),
    (["--model=mlp-vae", "--sample"], "--model, --sample"),
])
def test_resume_refuses_an_option_given_at_its_default_value(run, capsys, given, named):
    before = _files(run)
    assert main(["train", "--resume", str(run), "--epochs", "2", *given]) == 2
    err = capsys.readouterr().err
    assert (f"error: --resume continues {run} with the configuration saved there; {named} "
            f"cannot change it (only --epochs and --no-progress go with --resume), whatever "
            f"its value, its default too") in err, err
    assert _files(run) == before
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0


def test_a_vq_option_at_its_default_needs_the_vq_model(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "1", "--vq-codes", "128", *TINY]) == 2
    assert "--vq-codes: options of the vq-vae model, but --model is mlp-vae" in (
        capsys.readouterr().err)
    assert not out.exists()


# --------------------------------------------------------------------------
# the cosine schedule's horizon is the run's number of epochs
# --------------------------------------------------------------------------

def _stop_after_epoch(n):
    """A train() log that interrupts the run once epoch ``n`` is written (a kill)."""
    def log(line, *args, **kwargs):
        if line.startswith(f"epoch {n:3d}"):
            raise KeyboardInterrupt
    return log


def test_a_cosine_run_resumes_exactly_to_its_own_epochs(tmp_path, capsys):
    config = TrainConfig(epochs=4, batch_size=32, train_limit=64, test_limit=32,
                         use_sample=True, lr_schedule="cosine", lr=0.01)
    straight, split = tmp_path / "straight", tmp_path / "split"
    expected = train(config, str(straight), progress=False, log=_quiet)
    with pytest.raises(KeyboardInterrupt):
        train(config, str(split), progress=False, log=_stop_after_epoch(2))
    assert ckpt.load_checkpoint(str(split))[2]["epoch"] == 2
    assert main(["train", "--resume", str(split), "--no-progress"]) == 0  # to its 4 epochs
    records = files.read_jsonl(split / rundir.METRICS)
    for key in ("epoch", "train_loss", "test_nelbo"):
        assert [r[key] for r in records] == [r[key] for r in expected]
    a, b = ckpt.load_checkpoint(str(straight))[0], ckpt.load_checkpoint(str(split))[0]
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_cosine_run_refuses_another_number_of_epochs(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "2", "--lr-schedule", "cosine",
                 *TINY]) == 0
    capsys.readouterr()
    before = _files(out)
    for epochs in ("4", "3"):   # past its end, or (after a kill) a shorter horizon
        assert main(["train", "--resume", str(out), "--epochs", epochs, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert (f"error: the run in {out} decays its learning rate to 0 along a cosine over "
                f"its 2 epochs (--lr-schedule cosine); --epochs {epochs} would change that "
                f"horizon") in err, err
        assert f"start a new run with --epochs {epochs}" in err
    # finished: nothing to continue, and no advice to pass --epochs
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "has trained 2 of 2 epochs: nothing to continue; a cosine schedule ends with " \
           "the run: start a new run with more --epochs" in err and "N >" not in err
    config = TrainConfig(epochs=4, batch_size=32, train_limit=64, test_limit=32,
                         use_sample=True, lr_schedule="cosine")
    with pytest.raises(ScheduleHorizonChanged, match="over its 2 epochs"):   # the Python API
        train(config, str(out), resume=True, progress=False, log=_quiet)
    assert _files(out) == before
    # a constant learning rate has no horizon: its run extends exactly
    assert main(["train", "--out", str(tmp_path / "c"), "--epochs", "1", *TINY]) == 0
    assert main(["train", "--resume", str(tmp_path / "c"), "--epochs", "2",
                 "--no-progress"]) == 0

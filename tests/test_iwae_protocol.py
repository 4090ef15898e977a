"""Burda et al.'s training protocol as options: the iwae learning-rate schedule
(3^i epochs at lr 10^(-i/7)), its limit of 3280 epochs, Adam's eps, and a run on
that schedule cut anywhere that resumes to the same bits. Tiny runs of the
bundled sample."""
import numpy as np
import pytest

from scratchvae import checkpoints as ckpt
from scratchvae import files, rundir
from scratchvae.cli import main
from scratchvae.config import TrainConfig, make_optimizer
from scratchvae.optimizers import Adam
from scratchvae.schedules import IWAE_EPOCHS, iwae_epochs, iwae_stage, learning_rate

#: 64 training images in batches of 32: two steps an epoch
TINY = ["--sample", "--train-limit", "64", "--test-limit", "32", "--batch-size", "32",
        "--no-progress"]


def _quiet(*args, **kwargs):
    pass


def test_the_iwae_schedule_has_3_to_the_i_epochs_at_lr_10_to_the_minus_i_over_7():
    assert [iwae_epochs(s) for s in range(1, 9)] == [1, 4, 13, 40, 121, 364, 1093, 3280]
    assert IWAE_EPOCHS == sum(3 ** i for i in range(8)) == 3280
    stages = [iwae_stage(e) for e in range(IWAE_EPOCHS)]
    assert [stages.count(i) for i in range(8)] == [3 ** i for i in range(8)]
    assert stages == sorted(stages)
    # two steps an epoch: epoch e = step // 2
    lrs = [learning_rate("iwae", 1e-3, t, None, steps_per_epoch=2) for t in range(10)]
    expected = [1e-3] * 2 + [1e-3 * 10 ** (-1 / 7)] * 6 + [1e-3 * 10 ** (-2 / 7)] * 2
    assert lrs == pytest.approx(expected, rel=1e-15)
    assert learning_rate("iwae", 1e-3, 3279, None, 1) == pytest.approx(1e-4)   # i = 7
    with pytest.raises(ValueError, match="the iwae schedule has 3280 epochs"):
        learning_rate("iwae", 1e-3, 3280, None, 1)
    with pytest.raises(ValueError, match="needs steps_per_epoch >= 1"):
        learning_rate("iwae", 1e-3, 0, 10)


def test_an_iwae_schedule_longer_than_3280_epochs_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--lr-schedule", "iwae", "--epochs", "3281",
                 *TINY]) == 2
    err = capsys.readouterr().err
    assert "error: invalid training configuration: epochs: the iwae schedule has 3280 " \
           "epochs (3^i for i = 0..7), got 3281; give --epochs 3280 or fewer" in err, err
    assert not out.exists()
    with pytest.raises(ValueError, match="the iwae schedule has 3280 epochs"):
        TrainConfig(lr_schedule="iwae", epochs=3281)
    TrainConfig(lr_schedule="iwae", epochs=3280)
    TrainConfig(lr_schedule="constant", epochs=3281)
    # a resume past the schedule's end: refused, the run as it was
    assert main(["train", "--out", str(out), "--lr-schedule", "iwae", "--epochs", "1",
                 *TINY]) == 0
    before = (out / rundir.CHECKPOINT).read_bytes()
    assert main(["train", "--resume", str(out), "--epochs", "4000", "--no-progress"]) == 2
    assert "got 4000; give --epochs 3280 or fewer" in capsys.readouterr().err
    assert (out / rundir.CHECKPOINT).read_bytes() == before


def test_adam_eps_reaches_the_optimizer(tmp_path, capsys):
    from scratchvae.models import build_model
    model = build_model("mlp-vae", latent_dim=2, rng=np.random.default_rng(0))
    assert make_optimizer(TrainConfig(), model.parameters()).eps == 1e-8
    assert make_optimizer(TrainConfig(adam_eps=1e-4), model.parameters()).eps == 1e-4
    with pytest.raises(ValueError, match="adam_eps: an option of the adam optimizer, but "
                                         "the optimizer is sgd"):
        TrainConfig(optimizer="sgd", adam_eps=1e-4)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--epochs", "1", "--adam-eps", "1e-4",
                 *TINY]) == 0
    assert rundir.read_config(str(out)).adam_eps == 1e-4
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(tmp_path / "bad"), "--adam-eps", "0", *TINY])
    assert exit_.value.code == 2
    assert "--adam-eps: expected a positive finite number, got 0" in capsys.readouterr().err


class _Killed(Exception):
    """Stands for a kill in the middle of an epoch."""


def _kill_at_step(monkeypatch, n):
    """Adam.step raises _Killed at its n-th call from now (the optimiser's n-th update)."""
    real, calls = Adam.step, [0]

    def step(self):
        calls[0] += 1
        if calls[0] == n:
            raise _Killed
        return real(self)
    monkeypatch.setattr(Adam, "step", step)


def test_an_iwae_run_cut_anywhere_resumes_to_the_same_bits(tmp_path, capsys, monkeypatch):
    """Five epochs straight (stages i = 0, 1, 2: lr 1e-2, then 1e-2 10^(-1/7) three
    epochs, then 1e-2 10^(-2/7)) against the same run stopped after stage 0
    (--epochs 1), extended to 3 epochs and killed in the middle of its third,
    then resumed to 5: the same records, parameters and optimiser moments."""
    options = ["--model", "iwae-1l", "--lr-schedule", "iwae", "--lr", "0.01", "--binarize",
               "--adam-eps", "1e-4", *TINY]
    straight, split = tmp_path / "straight", tmp_path / "split"
    seen = []
    real = Adam.step

    def spy(self):
        seen.append(self.lr)
        return real(self)
    monkeypatch.setattr(Adam, "step", spy)
    assert main(["train", "--out", str(straight), "--epochs", "5", *options]) == 0
    monkeypatch.undo()
    expected = [0.01] * 2 + [0.01 * 10 ** (-1 / 7)] * 6 + [0.01 * 10 ** (-2 / 7)] * 2
    assert seen == pytest.approx(expected, rel=1e-15)

    assert main(["train", "--out", str(split), "--epochs", "1", *options]) == 0
    _kill_at_step(monkeypatch, 2 * 1 + 2)   # epoch 2 whole, then the middle of epoch 3
    with pytest.raises(_Killed):
        main(["train", "--resume", str(split), "--epochs", "3", "--no-progress"])
    monkeypatch.undo()
    assert ckpt.load_checkpoint(str(split))[2]["epoch"] == 2
    assert main(["train", "--resume", str(split), "--epochs", "5", "--no-progress"]) == 0

    a, b = (files.read_jsonl(run / rundir.METRICS) for run in (straight, split))
    for key in ("epoch", "train_loss", "test_nelbo"):
        assert [r[key] for r in a] == [r[key] for r in b]
    (pa, oa, _), (pb, ob, _) = (ckpt.load_checkpoint(str(run)) for run in (straight, split))
    assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
    for key in ("exp_avg", "exp_avg_sq"):
        assert all(np.array_equal(m, n) for m, n in zip(oa[key], ob[key], strict=True))
    assert np.array_equal(oa["steps"], ob["steps"]) and oa["steps"][0] == 10


def test_the_k_5000_estimate_runs_in_chunks_with_a_bar_over_images(capsys):
    """iw_nll with k = 5000 asks the model for at most ``chunk`` samples of a batch at
    a time (memory bounded: never k x N decoder rows), and its bar counts images."""
    from scratchvae.metrics import iw_nll
    from scratchvae.models import build_model

    model = build_model("iwae-1l", rng=np.random.default_rng(0))
    x = (np.random.default_rng(1).random((5, 1, 28, 28)) < 0.3).astype(np.float32)
    asked = []
    real = model.log_importance_weights

    def spy(xb, k, rng, labels=None):
        asked.append((xb.shape[0], k))
        return real(xb, k, rng, labels=labels)
    model.log_importance_weights = spy
    result = iw_nll(model, x, k=5000, chunk=100, batch_size=3, progress=True)
    assert result["iw_k"] == 5000 and np.isfinite(result["iw_nll"])
    assert asked == [(3, 100)] * 50 + [(2, 100)] * 50
    err = capsys.readouterr().err
    # the bar refreshes inside each batch: after the first batch of 3 it shows 3/5
    assert "IW-NLL (K=5000)" in err and "3/5" in err and "image" in err
    assert "5000/5000 samples of images 4-5" in err

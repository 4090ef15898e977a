"""Trainer, checkpoints and CLI on tiny runs of the bundled MNIST sample."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from scratchvae import checkpoints as ckpt
from scratchvae import files
from scratchvae.cli import main
from scratchvae.config import TrainConfig
from scratchvae.rundir import evaluate_run
from scratchvae.train import TrainingDiverged, train

TINY = dict(epochs=2, batch_size=32, train_limit=256, test_limit=64, use_sample=True,
            eval_batch_size=64)


def _quiet(*args, **kwargs):
    pass


def test_train_writes_metrics_checkpoint_and_config(tmp_path):
    history = train(TrainConfig(**TINY), str(tmp_path), progress=False, log=_quiet)
    assert [r["epoch"] for r in history] == [1, 2]
    records = files.read_jsonl(tmp_path / "metrics.jsonl")
    assert records == history
    for key in ("epoch", "train_loss", "test_nelbo", "test_recon", "test_kl",
                "train_seconds", "seconds"):
        assert key in records[0]
    assert records[1]["train_loss"] < records[0]["train_loss"]
    r = records[-1]
    assert r["test_nelbo"] == pytest.approx(r["test_recon"] + r["test_kl"])
    assert r["seconds"] >= r["train_seconds"] > 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"] == "mlp-vae" and config["epochs"] == 2
    # evaluate reproduces the last epoch's test metrics exactly
    ev = evaluate_run(str(tmp_path), log=_quiet)
    assert ev["epoch"] == 2
    assert ev["test_nelbo"] == pytest.approx(r["test_nelbo"], rel=1e-12)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_resume_continues_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(TrainConfig(**TINY), str(straight), progress=False, log=_quiet)
    train(TrainConfig(**{**TINY, "epochs": 1}), str(split), progress=False, log=_quiet)
    train(TrainConfig(**TINY), str(split), resume=True, progress=False, log=_quiet)
    a, _, _ = ckpt.load_checkpoint(str(straight))
    b, _, _ = ckpt.load_checkpoint(str(split))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ra, rb = files.read_jsonl(straight / "metrics.jsonl"), files.read_jsonl(split / "metrics.jsonl")
    assert [r["train_loss"] for r in ra] == [r["train_loss"] for r in rb]
    assert [r["test_nelbo"] for r in ra] == [r["test_nelbo"] for r in rb]


def test_cli_trains_and_resumes_conv_vae(tmp_path, capsys):
    """`python -m scratchvae train --model conv-vae`: metrics, checkpoint, config,
    and a resume that continues exactly (1 + 1 epochs == 2 epochs, bit for bit)."""
    argv = ["train", "--model", "conv-vae", "--latent-dim", "4", "--sample", "--batch-size",
            "32", "--train-limit", "96", "--test-limit", "64", "--no-progress"]
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    assert main(argv + ["--epochs", "2", "--out", straight]) == 0
    assert main(argv + ["--epochs", "1", "--out", split]) == 0
    # Z = 4 instead of 10: 6 fewer latent units, each with 2 encoder outputs (128 weights
    # and a bias each) and 128 decoder weights
    assert f"conv-vae: {876_757 - 6 * (2 * 129 + 128):,} parameters" in capsys.readouterr().out
    records = files.read_jsonl(os.path.join(split, "metrics.jsonl"))
    assert [r["epoch"] for r in records] == [1]
    r = records[0]
    for key in ("train_loss", "test_nelbo", "test_recon", "test_kl", "train_seconds", "seconds"):
        assert np.isfinite(r[key]), key
    assert r["test_nelbo"] == pytest.approx(r["test_recon"] + r["test_kl"])
    assert 0 < r["test_kl"] and 0 < r["test_recon"] < 784 * np.log(2)   # learnt something
    config = json.loads((tmp_path / "split" / "config.json").read_text())
    assert config["model"] == "conv-vae" and config["latent_dim"] == 4
    state, optim, meta = ckpt.load_checkpoint(split)
    assert meta["epoch"] == 1 and [int(t) for t in optim["steps"]] == [3] * len(state)
    assert state["encoder.layers.0.weight"].shape == (32, 1, 4, 4)          # Conv2d(1, 32)
    assert state["encoder.layers.7.weight"].shape == (8, 128)               # -> [mu | logvar]
    assert state["decoder.layers.0.weight"].shape == (128, 4)
    assert state["decoder.layers.7.weight"].shape == (32, 1, 4, 4)          # ConvT(32, 1)
    assert all(a.dtype == np.float32 for a in state.values())
    assert evaluate_run(split, log=_quiet)["test_nelbo"] == pytest.approx(r["test_nelbo"],
                                                                          rel=1e-12)

    assert main(["train", "--resume", split, "--epochs", "2", "--no-progress"]) == 0
    a, _, _ = ckpt.load_checkpoint(straight)
    b, _, meta = ckpt.load_checkpoint(split)
    assert meta["epoch"] == 2 and sorted(a) == sorted(b)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ra = files.read_jsonl(os.path.join(straight, "metrics.jsonl"))
    rb = files.read_jsonl(os.path.join(split, "metrics.jsonl"))
    assert [r["epoch"] for r in rb] == [1, 2]
    for key in ("train_loss", "test_nelbo", "test_recon", "test_kl"):
        assert [r[key] for r in ra] == [r[key] for r in rb], key
    assert rb[1]["train_loss"] < rb[0]["train_loss"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    train(TrainConfig(**{**TINY, "epochs": 1}), str(tmp_path), progress=False, log=_quiet)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    from scratchvae.models.vae import VAE
    real_loss = VAE.loss
    calls = {"n": 0}

    def poisoned(self, *a, **k):
        loss, parts = real_loss(self, *a, **k)
        calls["n"] += 1
        return (loss * np.nan if calls["n"] == 3 else loss), parts

    monkeypatch.setattr(VAE, "loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2, step 3.*epoch 1"):
        train(TrainConfig(**TINY), str(tmp_path), resume=True, progress=False, log=_quiet)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert [r["epoch"] for r in files.read_jsonl(tmp_path / "metrics.jsonl")] == [1]


def test_crash_during_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    path = str(tmp_path / "c.npz")
    ckpt.save_checkpoint(path, {"w": np.ones(3)}, {"t": 1}, {"epoch": 1})

    def exploding_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", exploding_savez)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(path, {"w": np.zeros(3)}, {"t": 2}, {"epoch": 2})
    monkeypatch.undo()
    state, optim, meta = ckpt.load_checkpoint(path)
    assert np.array_equal(state["w"], np.ones(3)) and meta["epoch"] == 1 and optim["t"] == 1
    assert os.listdir(tmp_path) == ["c.npz"]


def test_cosine_schedule_sets_the_learning_rate_of_every_step(tmp_path, monkeypatch):
    from scratchvae.optimizers import Adam
    seen = []
    real_step = Adam.step

    def spy(self):
        seen.append(self.lr)
        return real_step(self)
    monkeypatch.setattr(Adam, "step", spy)
    config = TrainConfig(**{**TINY, "lr_schedule": "cosine", "lr": 0.01})
    train(config, str(tmp_path), progress=False, log=_quiet)
    T = 2 * (256 // 32)
    expected = [0.01 * 0.5 * (1 + np.cos(np.pi * t / T)) for t in range(T)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[0] == 0.01 and seen[-1] < 0.01 * 0.01


def test_classifier_trains_with_random_shifts(tmp_path):
    config = TrainConfig(**{**TINY, "model": "classifier", "augment_shift": 2})
    history = train(config, str(tmp_path), progress=False, log=_quiet)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert json.loads((tmp_path / "config.json").read_text())["augment_shift"] == 2


def test_corrupt_checkpoint_is_refused(tmp_path):
    path = tmp_path / "checkpoint.npz"
    ckpt.save_checkpoint(str(path), {"w": np.ones(3)}, {}, {"epoch": 1})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ckpt.CheckpointError, match="corrupt or truncated"):
        ckpt.load_checkpoint(str(path))
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        ckpt.load_checkpoint(str(tmp_path / "missing"))


def test_torn_metrics_line_is_ignored(tmp_path):
    path = tmp_path / "m.jsonl"
    files.append_jsonl(str(path), {"epoch": 1})
    with open(path, "a") as f:
        f.write('{"epoch": 2, "tra')
    assert files.read_jsonl(str(path)) == [{"epoch": 1}]


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="augment_shift must be >= 0"):
        TrainConfig(augment_shift=-1)
    with pytest.raises(ValueError, match="unknown configuration keys"):
        TrainConfig.from_dict({"nope": 1})


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------

SUBCOMMANDS = ("train", "sweep", "evaluate", "sample", "gradcheck", "data", "plot", "report")


def test_cli_help_lists_every_subcommand():
    from scratchvae.cli import COMMANDS

    out = subprocess.run([sys.executable, "-m", "scratchvae", "--help"], capture_output=True,
                         text=True, check=True).stdout
    listed = re.findall(r"^ {4}(\w+)", out, re.MULTILINE)  # "    NAME  its help" under COMMAND
    assert sorted(listed) == sorted(SUBCOMMANDS)
    assert sorted(COMMANDS) == sorted(SUBCOMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_cli_help_of_each_subcommand(command):
    result = subprocess.run([sys.executable, "-m", "scratchvae", command, "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m scratchvae {command} ")


@pytest.mark.parametrize("argv,needle", [
    (["train", "--epochs", "0"], "expected a positive integer"),
    (["train", "--lr", "abc"], "expected a positive finite number"),
    (["train", "--model", "resnet"], "invalid choice"),
    (["train", "--lr-schedule", "step"], "invalid choice"),
    (["train", "--augment-shift", "-2"], "expected an integer >= 0"),
    (["evaluate"], "--checkpoint"),
    (["frobnicate"], "invalid choice"),
])
def test_cli_bad_arguments_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_cli_train_evaluate_json(tmp_path, capsys):
    out = str(tmp_path / "run")
    code = main(["train", "--sample", "--epochs", "1", "--batch-size", "64", "--train-limit",
                 "128", "--test-limit", "64", "--out", out, "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "epoch   1" in printed and "test -ELBO" in printed
    assert main(["evaluate", "--checkpoint", out, "--json", "--iw-k", "200", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    last = files.read_jsonl(os.path.join(out, "metrics.jsonl"))[-1]
    assert result["test_nelbo"] == pytest.approx(last["test_nelbo"], rel=1e-12)
    # the importance-weighted bound is tighter than the ELBO
    assert result["iw_k"] == 200 and result["iw_images"] == 64 and result["iw_nll_se"] > 0
    assert result["iw_nll"] < result["test_nelbo"]


def test_cli_evaluate_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path)]) == 1
    assert "error:" in capsys.readouterr().err


def test_cli_gradcheck_json(capsys):
    assert main(["gradcheck", "--json", "--only", "KL"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results and all(r["passed"] and r["max_rel_error"] <= 1e-7 for r in results)


def test_retain_freed_memory_applies_on_glibc():
    import platform
    from scratchvae.backend import retain_freed_memory
    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert retain_freed_memory() is on_glibc

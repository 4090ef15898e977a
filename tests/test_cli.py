"""The command line's error contract (README, "Command line"): bad arguments exit 2
with argparse's usage and message, a failed run prints ``error: ...`` and exits 1,
never a traceback. Tiny runs of the bundled sample."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from scratchvae.cli import build_parser, config_from_args, main
from scratchvae.config import TrainConfig

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


@pytest.fixture
def tiny_run(tmp_path, capsys):
    """A one-epoch mlp-vae run of the bundled sample."""
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY_RUN]) == 0
    capsys.readouterr()
    return run


@pytest.mark.parametrize("argv,needle", [
    (["--dataset", "fashion-mnist", "--sample"],
     "use_sample: the package bundles a sample of mnist only, not of fashion-mnist"),
    (["--model", "mlp-vae", "--vq-codes", "64", "--vq-ema"],
     "--vq-codes, --vq-ema: options of the vq-vae model, but --model is mlp-vae"),
])
def test_options_that_do_not_fit_the_model_or_data_set_exit_2(tmp_path, capsys, argv, needle):
    assert main(["train", "--out", str(tmp_path / "run"), "--epochs", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m scratchvae train ") and needle in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--cuda-graph"], "cuda_graph: a CUDA graph runs on the GPU; give --device gpu "
                       "(got device cpu)"),
    (["--cuda-graph", "--device", "gpu", "--model", "conv-cvae"],
     "cuda_graph: supported for the models mlp-vae, conv-vae, iwae-1l, vq-vae, not conv-cvae"),
    (["--cuda-graph", "--device", "gpu", "--model", "vq-vae", "--vq-ema"],
     "cuda_graph: the EMA codebook keeps its step count on the host; a captured VQ-VAE "
     "learns its codebook by its loss (--no-vq-ema)"),
    (["--cuda-graph", "--device", "gpu", "--clip-grad-norm", "5", "--optimizer", "sgd"],
     "cuda_graph: the captured step takes Adam with a constant KL weight, without "
     "clip_grad_norm, optimizer sgd"),
])
def test_cuda_graph_options_that_do_not_fit_exit_2(tmp_path, capsys, argv, needle):
    assert main(["train", "--out", str(tmp_path / "run"), "--epochs", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m scratchvae train ") and needle in err, err
    assert not (tmp_path / "run").exists()


def test_resume_takes_only_epochs_and_no_progress(tiny_run, capsys):
    before = (tiny_run / "checkpoint.npz").read_bytes()
    argv = ["train", "--resume", str(tiny_run), "--epochs", "2"]
    assert main([*argv, "--model", "conv-vae", "--offline", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert (f"error: --resume continues {tiny_run} with the configuration saved there; "
            f"--model, --lr, --offline cannot change it (only --epochs and --no-progress go "
            f"with --resume)") in err, err
    # a finished run: nothing to continue without a larger --epochs
    assert main(["train", "--resume", str(tiny_run)]) == 2
    assert "has trained 1 of 1 epochs: nothing to continue; pass --epochs N with N > 1" in (
        capsys.readouterr().err)
    assert (tiny_run / "checkpoint.npz").read_bytes() == before
    assert main([*argv, "--no-progress"]) == 0       # what --resume is for


def test_png_outputs_must_be_named_png(tiny_run, tmp_path, capsys):
    for argv in (["sample", "--checkpoint", str(tiny_run)],
                 ["plot", "samples", "--run", str(tiny_run)]):
        with pytest.raises(SystemExit) as e:
            main([*argv, "--out", str(tmp_path / "grid.jpg")])
        assert e.value.code == 2
        assert "argument --out: expected a file name ending in .png, got" in (
            capsys.readouterr().err)
    assert not (tmp_path / "grid.jpg").exists()


def _damage(run, what):
    """Damage a run directory in one of the ways a user may meet."""
    if what == "missing run":
        for name in os.listdir(run):
            os.remove(run / name)
        os.rmdir(run)
    elif what == "checkpoint of another model":
        config = json.loads((run / "config.json").read_text())
        config["model"] = "conv-vae"
        (run / "config.json").write_text(json.dumps(config))
    elif what == "unknown model":
        config = json.loads((run / "config.json").read_text())
        config["model"] = "foo"
        (run / "config.json").write_text(json.dumps(config))
    elif what == "entry missing from the checkpoint":
        with np.load(run / "checkpoint.npz") as z:
            arrays = {k: z[k] for k in z.files if not k.startswith("optim/")}
        np.savez(run / "checkpoint.npz", **arrays)


@pytest.mark.parametrize("what,needle", [
    ("missing run", "config.json"),
    ("checkpoint of another model", "does not fit the VAE that"),
    ("unknown model", "unknown model 'foo'; expected one of"),
    ("entry missing from the checkpoint", "is incomplete: its header lists an entry"),
])
def test_a_damaged_run_is_an_error_with_exit_1_in_every_command(tiny_run, tmp_path, capsys,
                                                                 what, needle):
    _damage(tiny_run, what)
    run = str(tiny_run)
    commands = [["evaluate", "--checkpoint", run, "--iw-k", "0"],
                ["sample", "--checkpoint", run, "--out", str(tmp_path / "s.png")],
                ["train", "--resume", run, "--epochs", "2", "--no-progress"],
                ["plot", "samples", "--run", run, "--out", str(tmp_path / "p.png")],
                ["report", "--runs", run, "--iw-k", "0", "--out", str(tmp_path / "r.md")]]
    for argv in commands:
        if what == "entry missing from the checkpoint" and argv[0] != "train":
            continue   # only --resume reads the optimiser's state
        assert main(argv) == 1, argv
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("error: ") and needle in last, (argv, last)


def test_a_damaged_metrics_line_is_named(tiny_run, capsys):
    metrics = tiny_run / "metrics.jsonl"
    metrics.write_text('{"epoch": 1, "train_loss": \x01}\n')
    assert main(["train", "--resume", str(tiny_run), "--epochs", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {metrics}, line 1: not JSON (") and "damaged" in err


def test_a_closed_stdout_pipe_ends_quietly():
    """``python -m scratchvae ... | head``: the reader goes away, no traceback."""
    process = subprocess.Popen([sys.executable, "-m", "scratchvae", "gradcheck", "--only",
                                "Linear"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()           # before the command writes its first line
    err = process.stderr.read().decode()
    assert process.wait() == 1
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_train_options_are_generated_from_the_config_fields():
    """One option per TrainConfig field that declares one, with the field's default,
    and a config from parsed options that is the config those options describe."""
    parser = build_parser().command_parsers["train"]
    actions = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(TrainConfig):
        assert "cli" in f.metadata, f"{f.name}: declare it with config.option(...)"
        if not f.metadata["cli"]:
            continue
        assert f.name in actions, f.name
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        assert flag in actions[f.name].option_strings, f.name
        if f.name != "epochs":  # None: not given (see cli.config_from_args)
            assert actions[f.name].default == f.default, f.name
        assert actions[f.name].help == f.metadata["help"], f.name
    assert config_from_args(parser.parse_args([])) == TrainConfig()
    given = parser.parse_args(["--samples", "3", "--vq-ema", "--vq-decay", "0.5", "--epochs", "4",
                               "--offline", "--data-dir", "d", "--model", "vq-vae"])
    assert config_from_args(given) == TrainConfig(
        n_samples=3, vq_ema=True, vq_decay=0.5, epochs=4, download="no", data_dir="d",
        model="vq-vae")
    assert config_from_args(parser.parse_args(["--sample"])).use_sample is True

"""``python -m scratchvae sweep --twin``: a real sweep whose PyTorch twins train from
the runs' weights, batches and noise (their first losses are ours to float32
rounding), the summary's scratchvae - PyTorch differences against the per-seed
values, a re-run that skips finished twins, a twin that fails, the twin of a run that
fails, and bad input
(skipped when PyTorch or Dask is not installed)."""
import json
import os
import sys

import pytest

pytest.importorskip("distributed")
pytest.importorskip("torch")

from scratchvae import files  # noqa: E402
from scratchvae.cli import main  # noqa: E402
from scratchvae.sweep import t_interval  # noqa: E402

TINY = ["--model", "mlp-vae", "--sample", "--train-limit", "96", "--test-limit", "64",
        "--batch-size", "32", "--epochs", "2", "--no-progress"]


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as c:
        yield c


def _final(path):
    return files.read_jsonl(path)[-1]


def test_twins_match_their_runs_the_summary_pairs_them_and_a_rerun_skips(tmp_path, capsys,
                                                                          cluster):
    out = str(tmp_path / "sw")
    args = ["sweep", *TINY, "--seeds", "0-1", "--out", out, "--twin",
            "--scheduler", cluster.scheduler_address]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count(": trained") == 2 and printed.count(": twin trained") == 2
    runs = {s: os.path.join(out, "default", f"seed={s}") for s in (0, 1)}
    for run_dir in runs.values():
        ours = files.read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
        theirs = files.read_jsonl(os.path.join(run_dir, "twin", "metrics.jsonl"))
        assert [r["epoch"] for r in theirs] == [1, 2]
        # the same weights, batches and noise: the first epoch's losses agree to ~6 digits
        assert theirs[0]["train_loss"] == pytest.approx(ours[0]["train_loss"], rel=1e-5)
        for key in ("test_nelbo", "test_recon", "test_kl"):
            assert theirs[0][key] == pytest.approx(ours[0][key], rel=1e-4, abs=1e-4)
        result = json.load(open(os.path.join(run_dir, "twin", "result.json")))
        assert result["epochs"] == 2 and result["record"] == theirs[-1]

    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["twin"] is True
    (c,) = summary["configurations"]
    t = c["twin"]
    assert t["metric"] == "test_nelbo" and t["seeds"] == [0, 1]
    ours = [_final(os.path.join(runs[s], "metrics.jsonl"))["test_nelbo"] for s in (0, 1)]
    theirs = [_final(os.path.join(runs[s], "twin", "metrics.jsonl"))["test_nelbo"]
              for s in (0, 1)]
    assert t["scratchvae"] == ours and t["pytorch"] == theirs
    assert t["differences"] == [a - b for a, b in zip(ours, theirs)]
    expected = t_interval([a - b for a, b in zip(ours, theirs)])
    assert {k: t[k] for k in expected} == expected
    assert max(abs(d) for d in t["differences"]) < 0.05   # 2 epochs: barely drifted
    text = open(os.path.join(out, "summary.md")).read()
    assert "scratchvae - PyTorch" in text
    assert f"| default | 0 | {ours[0]:.4f} | {theirs[0]:.4f} |" in text
    assert os.path.getsize(os.path.join(out, "summary.png")) > 0

    # again: runs and twins are finished, so none trains and no twin file changes
    twin_files = [os.path.join(runs[s], "twin", n) for s in (0, 1)
                  for n in ("metrics.jsonl", "result.json")]
    before = {p: os.stat(p).st_mtime_ns for p in twin_files}
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count(": twin skipped") == 2 and "trained" not in printed
    assert before == {p: os.stat(p).st_mtime_ns for p in twin_files}
    assert json.load(open(os.path.join(out, "summary.json"))) == summary

    # a twin that cannot write its directory: exit 1 naming its run, the rest kept
    for name in ("metrics.jsonl", "result.json"):
        os.unlink(os.path.join(runs[1], "twin", name))
    os.rmdir(os.path.join(runs[1], "twin"))
    open(os.path.join(runs[1], "twin"), "w").close()       # a file where its directory goes
    assert main([*args, "--retries", "0"]) == 1
    err = capsys.readouterr().err
    assert f"error: {runs[1]} (twin)" in err
    assert f"the twins of 1 of 2 runs failed: {runs[1]}" in err
    after = json.load(open(os.path.join(out, "summary.json")))
    assert [m["values"] for m in after["configurations"][0]["metrics"].values()] == (
        [m["values"] for m in c["metrics"].values()])
    assert after["configurations"][0]["twin"]["seeds"] == [0]

    # a run that fails: its twin does not train, and is told apart from a failed twin
    with open(os.path.join(runs[0], "checkpoint.npz"), "wb") as f:
        f.write(b"not a checkpoint")
    assert main([*args, "--retries", "0"]) == 1
    err = capsys.readouterr().err
    assert f"{runs[0]} (twin): not trained, its run failed" in err
    assert f"1 of 2 runs failed: {runs[0]}" in err
    assert f"the twins of 1 of 2 runs failed: {runs[1]};" in err
    assert "PyTorch twins: none finished." in open(os.path.join(out, "summary.md")).read()


def _exit_2(capsys, tmp_path, *args):
    """The stderr of a sweep that must stop with argparse's error before any run."""
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exit_:
        raise SystemExit(main(["sweep", *TINY, "--seeds", "0", "--out", str(out), "--twin",
                               *args]))
    assert exit_.value.code == 2
    assert not out.exists()
    return capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--model", "iwae-1l"], "model iwae-1l has no PyTorch twin; the twins are those of "
                             "mlp-vae, conv-vae, conv-cvae, vq-vae, pixelcnn"),
    (["--likelihood", "gaussian"], "likelihood gaussian: the twins have the Bernoulli "
                                   "likelihood only"),
    (["--k", "5"], "k 5: the twins draw one z sample per image"),
    (["--objective", "iwae", "--k", "5"], "objective iwae: the twins train the ELBO"),
    (["--optimizer", "sgd"], "optimizer sgd: the twins step with Adam only"),
    (["--model", "vq-vae", "--vq-ema"], "vq_ema: the VQ twin learns its codebook by the "
                                        "codebook loss"),
    (["--set", "likelihood=bernoulli,gaussian"],
     "--twin (the configuration likelihood=gaussian): likelihood gaussian"),
])
def test_options_the_twins_do_not_implement_exit_2(tmp_path, capsys, args, message):
    assert message in _exit_2(capsys, tmp_path, *args)


def test_twin_without_pytorch_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)   # import torch raises ImportError
    assert "--twin trains each run's PyTorch twin, but PyTorch is not installed" in (
        _exit_2(capsys, tmp_path))


@pytest.mark.parametrize("model, options", [
    ("vq-vae", {}),                       # dead-code restarts draw rows from the run's noise
    ("conv-cvae", {"kl_warmup_steps": 3, "lr_schedule": "cosine", "clip_grad_norm": 50.0,
                   "weight_decay": 1e-4, "binarize": True}),
])
def test_train_twin_follows_its_run(tmp_path, model, options):
    """train_twin on its own: the twin's epoch losses and test metrics are the run's
    to float32 rounding, its configuration's options included."""
    from scratchvae.config import TrainConfig
    from scratchvae.twins.train import train_twin

    config = TrainConfig(model=model, use_sample=True, train_limit=96, test_limit=64,
                         batch_size=32, epochs=2, seed=4, **options)
    run_dir = str(tmp_path / "run")
    ours, theirs = _run_and_twin(config, run_dir)
    for a, b in zip(ours, theirs, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        for key in [k for k in a if k.startswith("test_") and isinstance(a[k], float)]:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-4), key
    assert train_twin(run_dir, log=lambda *a, **k: None)["status"] == "skipped"


def _run_and_twin(config, run_dir):
    """Train ``config`` into run_dir, then its twin: (our records, the twin's)."""
    from scratchvae.train import train
    from scratchvae.twins.train import train_twin

    ours = train(config, run_dir, progress=False, log=lambda *a, **k: None)
    done = train_twin(run_dir, log=lambda *a, **k: None)
    theirs = files.read_jsonl(os.path.join(run_dir, "twin", "metrics.jsonl"))
    assert done["status"] == "trained" and done["record"] == theirs[-1]
    return ours, theirs


@pytest.mark.parametrize("conditional", [False, True])
def test_train_twin_of_a_prior_follows_its_run(tmp_path, conditional):
    """A PixelCNN prior's twin learns the same VQ-VAE's code maps from the prior's
    weights and batches: its epoch losses and test NLL are the run's to float32
    rounding."""
    vq = str(tmp_path / "vq")
    assert main(["train", "--model", "vq-vae", "--sample", "--train-limit", "96",
                 "--test-limit", "64", "--batch-size", "32", "--epochs", "1",
                 "--no-progress", "--out", vq]) == 0
    from scratchvae.config import TrainConfig

    config = TrainConfig(model="pixelcnn", vq_run=vq, conditional=conditional,
                         prior_channels=8, prior_layers=2, batch_size=32, epochs=2, seed=3)
    ours, theirs = _run_and_twin(config, str(tmp_path / "prior"))
    for a, b in zip(ours, theirs, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        for key in ("test_nll", "test_bits_per_code"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
    assert ours[1]["train_loss"] != ours[0]["train_loss"]   # it learned: not a fixed point


def test_a_sweep_of_priors_pairs_them_with_their_twins_by_test_nll(tmp_path, capsys, cluster):
    vq = str(tmp_path / "vq")
    assert main(["train", "--model", "vq-vae", *TINY[2:], "--out", vq]) == 0
    out = str(tmp_path / "sw")
    assert main(["sweep", "--model", "pixelcnn", "--vq-run", vq, "--prior-channels", "8",
                 "--prior-layers", "2", "--batch-size", "32", "--epochs", "1", "--no-progress",
                 "--seeds", "0-1", "--out", out, "--twin",
                 "--scheduler", cluster.scheduler_address]) == 0
    assert capsys.readouterr().out.count(": twin trained") == 2
    (c,) = json.load(open(os.path.join(out, "summary.json")))["configurations"]
    t = c["twin"]
    assert t["metric"] == "test_nll" and t["seeds"] == [0, 1]
    assert t["scratchvae"] == [_final(os.path.join(out, "default", f"seed={s}",
                                                   "metrics.jsonl"))["test_nll"] for s in (0, 1)]
    assert max(abs(d) for d in t["differences"]) < 1e-3 * min(t["scratchvae"])

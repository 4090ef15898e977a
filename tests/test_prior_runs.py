"""A PixelCNN prior over a VQ-VAE's codes, end to end: its sampling, its run
(train --model pixelcnn --vq-run), sample --prior, evaluate, and the errors of
a prior used with the wrong VQ-VAE. Tiny runs of the bundled sample."""
import json
import os

import numpy as np
import pytest

from scratchvae.cli import main
from scratchvae.models import pixelcnn
from scratchvae.prior import codebook_checksum, load_prior_pair
from scratchvae.rundir import load_run, read_config, read_metrics

TINY = ["--sample", "--train-limit", "64", "--test-limit", "32", "--epochs", "1",
        "--batch-size", "32", "--no-progress"]
TINY_PRIOR = ["--prior-channels", "8", "--prior-layers", "2", "--batch-size", "32",
              "--no-progress"]


# -- sampling ---------------------------------------------------------------------------

@pytest.mark.parametrize("n_classes", [0, 3])
def test_sampling_reads_the_logits_of_the_whole_map(n_classes):
    """At a temperature near 0 every sampled code is the argmax of the logits that
    the full forward gives on the finished map: the per-row vertical pass and the
    cropped horizontal pass of sample() compute exactly the model's conditionals."""
    model = pixelcnn(num_codes=6, channels=8, layers=3, n_classes=n_classes,
                     rng=np.random.default_rng(1), dtype=np.float64)
    rng = np.random.default_rng(5)
    for p in model.parameters():      # weights large enough to give varied argmaxes
        p.data = rng.standard_normal(p.data.shape)
    labels = np.arange(5) % 3 if n_classes else None
    codes = model.sample(5, np.random.default_rng(2), labels=labels, temperature=1e-9,
                         height=4, width=5)
    logits = model.logits(codes, labels)
    np.testing.assert_array_equal(codes, logits.argmax(axis=1))
    assert len(np.unique(codes)) > 1      # not a constant map that any model would give


def test_sampling_draws_from_the_softmax():
    """The first code's frequencies over 20,000 draws match softmax(logits / T)
    (chi-square, 5 bins), at T = 1 and T = 0.5."""
    from scipy.stats import chisquare

    model = pixelcnn(num_codes=5, channels=8, layers=2, rng=np.random.default_rng(0))
    model.embedding.weight.data *= 20   # spread the first position's logits
    for T in (1.0, 0.5):
        codes = model.sample(20000, np.random.default_rng(3), temperature=T, height=1, width=2)
        logits = model.logits(np.zeros((1, 1, 2), np.int64))[0, :, 0, 0].astype(np.float64) / T
        p = np.exp(logits - logits.max())
        p /= p.sum()
        observed = np.bincount(codes[:, 0, 0], minlength=5)
        assert chisquare(observed, 20000 * p).pvalue > 1e-3, (observed, 20000 * p)


def test_sampling_refuses_a_bad_temperature_and_labels():
    model = pixelcnn(num_codes=4, channels=4, layers=1, n_classes=2,
                     rng=np.random.default_rng(0))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="temperature > 0"):
        model.sample(2, rng, labels=0, temperature=0.0)
    with pytest.raises(ValueError, match=r"labels in \[0, 2\)"):
        model.sample(2, rng, labels=2)
    with pytest.raises(ValueError, match="class-conditional: pass labels"):
        model.sample(2, rng)


# -- runs -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs: a VQ-VAE, a second one (another seed), a conv VAE, a CVAE, a classifier."""
    root = tmp_path_factory.mktemp("prior-runs")
    for name, extra in (("vq", ["--model", "vq-vae"]),
                        ("vq2", ["--model", "vq-vae", "--seed", "1"]),
                        ("vae", ["--model", "conv-vae"]),
                        ("cvae", ["--model", "conv-cvae"]),
                        ("clf", ["--model", "classifier"])):
        assert main(["train", *extra, *TINY, "--out", str(root / name)]) == 0
    return root


def _prior(runs, name, *extra, epochs=1):
    out = runs / name
    if not out.exists():
        assert main(["train", "--model", "pixelcnn", "--vq-run", str(runs / "vq"),
                     "--epochs", str(epochs), *TINY_PRIOR, *extra, "--out", str(out)]) == 0
    return out


def test_a_prior_run_records_its_vq_vae_and_its_metrics(runs):
    prior = _prior(runs, "prior")
    config = read_config(prior)
    _, vq, _ = load_run(runs / "vq")
    assert config.vq_run == os.path.abspath(runs / "vq")
    assert config.vq_codes == vq.quantizer.num_codes == 128
    assert config.vq_codebook == codebook_checksum(vq)
    assert config.use_sample and config.train_limit == 64   # the VQ-VAE's own data
    (record,) = read_metrics(prior)
    assert record["test_bits_per_code"] == pytest.approx(
        record["test_nll"] / 49 / np.log(2), rel=1e-12)
    assert record["train_bits_per_code"] == pytest.approx(
        record["train_loss"] / 49 / np.log(2), rel=1e-12)
    assert 0 < record["test_bits_per_code"] < 8    # below log2(128) + a margin: it learned


def test_a_prior_resumes_to_the_same_bits(runs):
    straight = _prior(runs, "prior-2", epochs=2)
    resumed = _prior(runs, "prior-1", epochs=1)
    assert main(["train", "--resume", str(resumed), "--epochs", "2", "--no-progress"]) == 0
    a, b = load_run(straight)[1].state_dict(), load_run(resumed)[1].state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert read_metrics(straight)[-1]["test_nll"] == read_metrics(resumed)[-1]["test_nll"]


def test_evaluate_gives_the_prior_nll_and_the_elbo(runs, capsys):
    prior = _prior(runs, "prior")
    capsys.readouterr()                  # the training's log
    assert main(["evaluate", "--checkpoint", str(prior), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    vq_record = read_metrics(runs / "vq")[-1]
    assert result["test_nll"] == pytest.approx(read_metrics(prior)[-1]["test_nll"], rel=1e-5)
    assert result["test_recon"] == pytest.approx(vq_record["test_recon"], rel=1e-5)
    assert result["test_nelbo"] == pytest.approx(result["test_recon"] + result["test_nll"])


def test_sample_with_a_prior_writes_a_grid(runs, tmp_path, capsys):
    prior = _prior(runs, "prior-cond", "--conditional")
    for extra in ([], ["--label", "8", "--temperature", "0.7"]):
        out = tmp_path / f"grid{len(extra)}.png"
        assert main(["sample", "--checkpoint", str(runs / "vq"), "--prior", str(prior),
                     "--n", "20", "--out", str(out), *extra]) == 0
        assert out.stat().st_size > 0
    assert "of class 8" in capsys.readouterr().out
    pair = load_prior_pair(prior)
    assert pair.prior.n_classes == 10 and pair.epoch == 1


@pytest.mark.parametrize("case,code,needle", [
    ("another vq-vae", 1, "is a prior over the codes of the VQ-VAE run"),
    ("label out of range", 1, "--label must be in 0..9"),
    ("label without classes", 1, "--label needs a class-conditional prior"),
    ("temperature 0", 2, "argument --temperature: expected a positive finite number"),
    ("temperature without prior", 2, "--temperature goes with --prior"),
    ("prior with a vae", 1, "holds a conv-vae run; expected a trained vq-vae run"),
    ("a vq-vae without prior", 1, "a VQ-VAE has no prior of its own"),
    ("prior is not a prior", 1, "holds a vq-vae run; expected a pixelcnn prior"),
])
def test_sample_with_a_prior_refuses_what_does_not_fit(runs, tmp_path, capsys, case, code,
                                                       needle):
    prior, cond = _prior(runs, "prior"), _prior(runs, "prior-cond", "--conditional")
    vq = str(runs / "vq")
    argv = {"another vq-vae": ["--checkpoint", str(runs / "vq2"), "--prior", str(prior)],
            "label out of range": ["--checkpoint", vq, "--prior", str(cond), "--label", "10"],
            "label without classes": ["--checkpoint", vq, "--prior", str(prior), "--label", "1"],
            "temperature 0": ["--checkpoint", vq, "--prior", str(prior), "--temperature", "0"],
            "temperature without prior": ["--checkpoint", vq, "--temperature", "0.5"],
            "prior with a vae": ["--checkpoint", str(runs / "vae"), "--prior", str(prior)],
            "a vq-vae without prior": ["--checkpoint", vq],
            "prior is not a prior": ["--checkpoint", vq, "--prior", vq]}[case]
    out = tmp_path / "grid.png"
    try:
        assert main(["sample", *argv, "--n", "4", "--out", str(out)]) == code
    except SystemExit as e:           # argparse
        assert e.code == code
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_train_refuses_what_a_prior_cannot_learn(runs, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["train", "--model", "pixelcnn", "--vq-run", str(runs / "vae"),
                 *TINY_PRIOR, "--out", str(out)]) == 1
    assert "--vq-run" in capsys.readouterr().err and not out.exists()
    assert main(["train", "--model", "pixelcnn", "--vq-run", str(tmp_path / "none"),
                 *TINY_PRIOR, "--out", str(out)]) == 1
    assert "config.json" in capsys.readouterr().err
    assert main(["train", "--model", "pixelcnn", "--vq-run", str(runs / "vq"), "--beta", "2",
                 *TINY_PRIOR, "--out", str(out)]) == 2
    assert "beta: options of the VAE models" in capsys.readouterr().err
    assert main(["train", "--model", "pixelcnn", *TINY_PRIOR, "--out", str(out)]) == 2
    assert "--vq-run DIR" in capsys.readouterr().err
    assert main(["train", "--model", "conv-vae", "--conditional", *TINY, "--out",
                 str(out)]) == 2
    assert "conditional: options of the pixelcnn model" in capsys.readouterr().err


def test_a_prior_does_not_resume_over_a_changed_vq_vae(runs, tmp_path, capsys):
    """The VQ-VAE trained further has another codebook: its codes mean other vectors."""
    import shutil

    vq = tmp_path / "vq"
    shutil.copytree(runs / "vq", vq)
    prior = tmp_path / "prior"
    assert main(["train", "--model", "pixelcnn", "--vq-run", str(vq), "--epochs", "1",
                 *TINY_PRIOR, "--out", str(prior)]) == 0
    assert main(["train", "--resume", str(vq), "--epochs", "2", "--no-progress"]) == 0
    assert main(["train", "--resume", str(prior), "--epochs", "2", "--no-progress"]) == 1
    assert "trained further" in capsys.readouterr().err
    assert [r["epoch"] for r in read_metrics(prior)] == [1]      # nothing written


def _example(name):
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(root, "examples", name + ".py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_prior_figure_script_trains_and_reuses(tmp_path):
    import matplotlib.image

    script = _example("fig_vq_prior")
    argv = ["--sample", "--train-limit", "64", "--test-limit", "32", "--epochs", "1",
            "--prior-epochs", "1", "--runs-dir", str(tmp_path / "runs"),
            "--out", str(tmp_path / "u.png"), "--out-label", str(tmp_path / "l.png")]
    for path in script.main(argv):
        assert matplotlib.image.imread(path)[..., :3].std() > 0.05    # a grid, not blank
    prior = tmp_path / "runs" / "fig-pixelcnn-cond" / "checkpoint.npz"
    stamp = prior.stat().st_mtime_ns
    script.main(argv)                          # the same runs: reused, not retrained
    assert prior.stat().st_mtime_ns == stamp


def test_quality_and_report_of_a_prior_run(runs, tmp_path, capsys):
    """evaluate --classifier scores the pair's samples (FD, IS, a conditional prior's
    accuracy); report writes its row ("vq-vae + pixelcnn") and its samples' figure."""
    prior, cond = _prior(runs, "prior"), _prior(runs, "prior-cond", "--conditional")
    capsys.readouterr()                  # the training's log
    assert main(["evaluate", "--checkpoint", str(cond), "--classifier", str(runs / "clf"),
                 "--quality-samples", "20", "--cond-samples", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert np.isfinite([result["fd"], result["is"], result["fd_floor"]]).all()
    assert 0 <= result["cond_accuracy"] <= 1 and len(result["cond_accuracy_per_class"]) == 10
    assert result["test_nelbo"] == pytest.approx(result["test_recon"] + result["test_nll"])
    out = tmp_path / "report.md"
    assert main(["report", "--runs", str(prior), str(runs / "vae"), "--classifier",
                 str(runs / "clf"), "--quality-samples", "20", "--cond-samples", "2",
                 "--iw-k", "0", "--figures", "--out", str(out)]) == 0
    text = out.read_text()
    (line,) = [row for row in text.splitlines() if row.startswith("| prior |")]
    assert "vq-vae + pixelcnn" in line and f"{564416 + 79057:,}" not in line   # tiny prior
    evaluated = json.loads(json.dumps(read_metrics(prior)[-1]))
    assert evaluated["test_nll"] > 0 and (tmp_path / "samples_prior.png").exists()


def test_the_side_by_side_figure_prints_each_fd(runs, tmp_path, capsys):
    import matplotlib.image

    prior = _prior(runs, "prior")
    out = _example("fig_model_samples").main(
        ["--vae", str(runs / "vae"), "--beta-vae", str(runs / "vae"), "--cvae",
         str(runs / "cvae"), "--prior", str(prior), "--classifier", str(runs / "clf"),
         "--fd-samples", "20", "--out", str(tmp_path / "m.png")])
    assert matplotlib.image.imread(out)[..., :3].std() > 0.05
    printed = capsys.readouterr().out
    assert all(f"{name}: FD " in printed for name in ("VAE", "CVAE", "VQ-VAE + PixelCNN"))

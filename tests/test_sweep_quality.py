"""``sweep --classifier``: each finished run's samples scored (FD, IS) under a trained
classifier run, kept in RUN/quality.json, summarised over seeds beside the test
metrics, skipped on a re-run; and the options that do not fit."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("distributed")

from scratchvae.cli import main  # noqa: E402
from scratchvae.quality import (classifier_reference, load_classifier, run_quality,  # noqa: E402
                                run_sampler)
from scratchvae.rundir import load_run  # noqa: E402
from scratchvae.sweep import QUALITY_FILE  # noqa: E402

TINY = ["--sample", "--train-limit", "64", "--test-limit", "32", "--batch-size", "32",
        "--epochs", "1", "--no-progress"]
SAMPLES = 40


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cls") / "classifier")
    assert main(["train", "--model", "classifier", *TINY, "--out", out]) == 0
    return out


def test_quality_over_seeds_matches_the_runs_scores_and_a_rerun_skips(tmp_path, classifier,
                                                                       capsys):
    out = str(tmp_path / "sw")
    args = ["sweep", "--model", "mlp-cvae", *TINY, "--seeds", "0-1", "--out", out,
            "--workers", "2", "--classifier", classifier, "--quality-samples", str(SAMPLES)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("quality measured") == 2, printed
    summary = json.load(open(os.path.join(out, "summary.json")))
    [c] = summary["configurations"]
    for name in ("fd", "is", "cond_accuracy", "test_nelbo"):
        assert c["metrics"][name]["n"] == 2, (name, c["metrics"].keys())
    # seed 1's scores: its quality.json, and the same computation made here
    run_dir = os.path.join(out, "default", "seed=1")
    saved = json.load(open(os.path.join(run_dir, QUALITY_FILE)))
    assert saved["measured_with"] == {"classifier": os.path.abspath(classifier),
                                      "samples": SAMPLES, "epoch": 1}
    config, model, _ = load_run(run_dir)
    cls = load_classifier(classifier)
    want = run_quality(config, run_sampler(config, model), cls,
                       classifier_reference(classifier, cls, n=SAMPLES, log=lambda *a: None),
                       SAMPLES)
    for name in ("fd", "is", "cond_accuracy"):
        # (the worker ran on one thread, this process on more: BLAS rounding)
        assert saved["scores"][name] == pytest.approx(want[name], rel=1e-6), name
        assert c["metrics"][name]["values"][1] == saved["scores"][name]
    assert np.isfinite(c["metrics"]["fd"]["mean"]) and 1 <= c["metrics"]["is"]["mean"] <= 10
    assert "| default | fd | 2 |" in open(os.path.join(out, "summary.md")).read()
    # again: runs and scores skipped, the same summary
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count(": skipped") == 2 and printed.count("quality skipped") == 2, printed
    assert json.load(open(os.path.join(out, "summary.json"))) == summary
    # more samples asked for: measured again
    args[-1] = str(SAMPLES + 10)
    assert main(args) == 0
    assert capsys.readouterr().out.count("quality measured") == 2


@pytest.mark.parametrize("model, which, message", [
    ("vq-vae", "classifier", "vq-vae has no prior to sample from"),
    ("mlp-vae", "run", "holds mlp-vae, not a classifier"),
    ("mlp-vae", "nothing", "--classifier: expected a trained classifier run"),
])
def test_a_classifier_that_does_not_fit_exits_2(tmp_path, classifier, capsys, model, which,
                                                message):
    given = {"classifier": classifier, "nothing": str(tmp_path / "none")}
    if which == "run":
        given["run"] = str(tmp_path / "vae")
        assert main(["train", "--model", "mlp-vae", *TINY, "--out", given["run"]]) == 0
        capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        raise SystemExit(main(["sweep", "--model", model, *TINY, "--seeds", "0",
                               "--out", str(tmp_path / "o"), "--classifier", given[which]]))
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

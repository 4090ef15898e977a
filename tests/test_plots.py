"""Figures, the report and their command line, on tiny runs of the bundled sample."""
import importlib.util
import json
import os
from statistics import NormalDist

import numpy as np
import pytest

import matplotlib

matplotlib.use("Agg")  # headless, whatever the environment says

from scratchvae import figures, latent_plots, plots, report, rundir, toy  # noqa: E402
from scratchvae.cli import main  # noqa: E402
from scratchvae.config import TrainConfig  # noqa: E402
from scratchvae.rundir import load_run  # noqa: E402
from scratchvae.train import train  # noqa: E402

TINY = dict(use_sample=True, train_limit=256, test_limit=64, epochs=1, batch_size=64,
            eval_batch_size=64)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny trained runs: name -> run directory."""
    base = tmp_path_factory.mktemp("runs")
    specs = {"vae2": dict(model="mlp-vae", latent_dim=2),
             "vae10": dict(model="mlp-vae", latent_dim=10),
             "beta10": dict(model="mlp-vae", latent_dim=10, beta=4.0),
             "cvae": dict(model="mlp-cvae", latent_dim=4),
             "vq": dict(model="vq-vae"),
             "classifier": dict(model="classifier")}
    out = {}
    for name, fields in specs.items():
        out[name] = str(base / name)
        train(TrainConfig(**TINY, **fields), out[name], progress=False, log=_quiet)
    return out


def assert_png(path, min_std=0.02):
    """A valid, non-empty, non-blank PNG."""
    assert os.path.exists(path), path
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 2000
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    gray = img[..., :3].mean(axis=2)
    assert gray.std() > min_std, f"{path} looks blank (pixel std {gray.std():.4f})"
    assert gray.min() < 0.5 and gray.max() > 0.8  # both dark and light pixels


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples",
                                                                     name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------
# grids and lattices
# --------------------------------------------------------------------------

def test_image_grid_layout_and_row_labels(tmp_path):
    imgs = np.zeros((5, 1, 4, 3))
    imgs[2] = 1.0
    grid = plots.image_grid(imgs, ncol=3, padding=1)
    assert grid.shape == (2 * 5 + 1, 3 * 4 + 1)
    assert grid[1:5, 9:12].min() == 1.0 and grid[1:5, 1:4].max() == 0.0  # image 2, image 0
    assert grid[6:10, 9:12].min() == 1.0  # the empty sixth cell is padding
    rng = np.random.default_rng(0)
    path = plots.save_image_grid(rng.random((20, 1, 28, 28)), str(tmp_path / "g.png"), ncol=10,
                                 row_labels=["a long row label", "b"], title="t")
    assert_png(path)
    with pytest.raises(ValueError, match="row labels"):
        plots.save_image_grid(rng.random((20, 1, 28, 28)), str(tmp_path / "h.png"), ncol=10,
                              row_labels=["a"])


def test_normal_lattice_is_the_inverse_cdf():
    v = latent_plots.normal_lattice(5)
    inv = NormalDist().inv_cdf
    np.testing.assert_allclose(v, [inv(p) for p in (0.05, 0.275, 0.5, 0.725, 0.95)], atol=1e-12)
    np.testing.assert_allclose(v, -v[::-1], atol=1e-12)
    assert v[0] == pytest.approx(-1.6448536, abs=1e-6)


# --------------------------------------------------------------------------
# the figures
# --------------------------------------------------------------------------

def test_training_curves_one_panel_per_model(runs, tmp_path):
    path = plots.plot_training_curves([runs["vae2"], runs["vae10"], runs["vq"],
                                       runs["classifier"]], str(tmp_path / "c.png"), title="t")
    assert_png(path)
    with pytest.raises(ValueError):
        plots.plot_training_curves([], str(tmp_path / "d.png"))


def test_latent_dim_sweep(runs, tmp_path):
    results = plots.latent_sweep_results([runs["vae10"], runs["vae2"]])
    assert [r["latent_dim"] for r in results] == [2, 10]
    for r in results:
        assert r["test_nelbo"] == pytest.approx(r["test_recon"] + r["test_kl"])
    assert_png(plots.plot_latent_dim(results, str(tmp_path / "z.png"), title="1 epoch"))


def test_prior_samples_and_cvae_grids(runs, tmp_path):
    _, vae, _ = load_run(runs["vae10"])
    assert_png(plots.plot_prior_samples(vae, str(tmp_path / "s.png"), n=16))
    _, cvae, _ = load_run(runs["cvae"])
    assert_png(plots.plot_cvae_samples(cvae, str(tmp_path / "c.png"), per_class=4))
    assert_png(plots.plot_cvae_label(cvae, 8, str(tmp_path / "8.png"), n=16))
    with pytest.raises(ValueError, match="label"):
        plots.plot_cvae_label(cvae, 10, str(tmp_path / "x.png"))


def test_latent_space_2d(runs, tmp_path):
    config, vae, _ = load_run(runs["vae2"])
    x, y = rundir.load_test_images(config)
    assert x.shape == (64, 1, 28, 28) and y.shape == (64,)
    images, v = latent_plots.manifold_images(vae, n=4)
    assert images.shape == (16, 1, 28, 28)
    # the top-left cell is z = (v[0], v[-1]): decode it directly
    z = np.array([[v[0], v[-1]]], dtype=np.float32)
    np.testing.assert_allclose(images[0], vae.mean_image(vae.decode(z))[0], rtol=1e-5, atol=1e-6)
    assert_png(latent_plots.plot_latent_space(vae, x, y, str(tmp_path / "l.png"), n_grid=6))
    _, vae10, _ = load_run(runs["vae10"])
    with pytest.raises(ValueError, match="Z = 2"):
        latent_plots.plot_latent_space(vae10, x, y, str(tmp_path / "m.png"))


def test_traversal_moves_one_dimension(runs, tmp_path):
    config, vae, _ = load_run(runs["vae10"])
    x, _ = rundir.load_test_images(config, 1)
    out = latent_plots.latent_traversal(vae, x, np.linspace(-3, 3, 5))
    assert out.shape == (10, 5, 1, 28, 28)
    # setting z_d to its own posterior mean reproduces the reconstruction
    mu = vae.encode(x)[0][0]
    for d in (0, 7):
        same = latent_plots.latent_traversal(vae, x, [float(mu[d])], dims=[d])[0, 0]
        np.testing.assert_allclose(same, vae.reconstruct(x)[0], rtol=1e-4, atol=1e-5)
    _, beta, _ = load_run(runs["beta10"])
    kl = rundir.read_run(runs["beta10"])[1][-1]["test_kl_per_dim"]
    assert_png(latent_plots.plot_traversals([("VAE", vae, None), ("β-VAE", beta, kl)], x,
                                            str(tmp_path / "t.png"), title="t"))


def test_reconstructions_of_every_family(runs, tmp_path):
    config, vae, _ = load_run(runs["vae10"])
    x, y = rundir.load_test_images(config, 6)
    models = [(name, load_run(runs[name])[1]) for name in ("vae10", "beta10", "cvae", "vq")]
    for _, m in models:
        r = plots.reconstruct(m, x, y)
        assert r.shape == x.shape and 0 <= r.min() and r.max() <= 1
    assert_png(plots.plot_reconstructions(models, x, y, str(tmp_path / "r.png"), title="t"))


def test_ring_points_and_fit(tmp_path):
    pts = toy.ring_points(2000, np.random.default_rng(0))
    radius = np.linalg.norm(pts, axis=1)
    assert pts.dtype == np.float32 and radius.min() >= 1.0 and radius.mean() < 1.2
    ring = _load_example("fig_ring")
    out = ring.main(["--epochs", "2", "--points", "512", "--samples", "300", "--hidden", "16",
                     "--runs-dir", str(tmp_path), "--out", str(tmp_path / "ring.png")])
    assert_png(out)
    again = ring.main(["--run", str(tmp_path / "fig-ring"), "--samples", "300",
                       "--out", str(tmp_path / "ring2.png")])
    assert_png(again)


# --------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------

def test_report_table(runs, tmp_path):
    out = str(tmp_path / "report.md")
    rows = report.write_report([runs["vae10"], runs["cvae"], runs["vq"], runs["classifier"]],
                               out, iw_k=8,
                               iw_images=16, classifier_dir=runs["classifier"],
                               cond_per_class=5, figures=True, log=_quiet, quality_samples=20)
    text = open(out, encoding="utf-8").read()
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [h for _, h in report.COLUMNS]
    assert len(lines) == 2 + 4
    cells = [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]
    vae, cvae, vq, clf = cells
    assert vae["model"] == "mlp-vae" and vae["IW-NLL"] != "–" and vae["perplexity"] == "–"
    assert cvae["cond. acc."].endswith("%") and vae["cond. acc."] == "–"
    assert vq["IW-NLL"] == "–" and vq["test −ELBO"] == "–" and vq["codes used"] != "–"
    assert int(vq["parameters"].replace(",", "")) == load_run(runs["vq"])[1].num_parameters()
    # a classifier run shows its own metric, not a row of dashes
    assert clf["model"] == "classifier" and clf["test acc."].endswith("%")
    assert all(row["test acc."] == "–" for row in (vae, cvae, vq))
    assert vae["FD"] != "–" and cvae["IS"] != "–" and vq["FD"] == clf["IS"] == "–"
    # the IW bound is an estimate of -log p(x): at most the -ELBO plus noise
    assert rows[0]["iw_nll"] < rows[0]["test_nelbo"] + 5
    assert 0 <= rows[1]["cond_accuracy"] <= 1 and rows[2]["mse"] > 0
    for name in ("training_curves.png", "reconstructions.png", "samples_vae10.png",
                 "samples_cvae.png"):
        assert f"]({name})" in text
        assert_png(str(tmp_path / name))


# --------------------------------------------------------------------------
# command line and scripts
# --------------------------------------------------------------------------

def test_cli_plot_and_report(runs, tmp_path, capsys):
    out = str(tmp_path / "curves.png")
    assert main(["plot", "curves", "--run", runs["vae2"], runs["vq"], "--out", out]) == 0
    assert_png(out)
    out = str(tmp_path / "cvae8.png")
    assert main(["plot", "cvae", "--run", runs["cvae"], "--label", "8", "--n", "16",
                 "--out", out]) == 0
    assert_png(out)
    assert main(["plot", "samples", "--run", runs["vae2"], runs["vae10"],
                 "--out", str(tmp_path / "x.png")]) == 2  # one run only
    assert "expected one run" in capsys.readouterr().err
    md = str(tmp_path / "r.md")
    assert main(["report", "--runs", runs["vae2"], runs["vq"], "--iw-k", "4", "--iw-images",
                 "8", "--out", md]) == 0
    assert "| run | model |" in open(md, encoding="utf-8").read()


def test_cli_evaluate_with_classifier(runs, capsys):
    import json
    assert main(["evaluate", "--checkpoint", runs["cvae"], "--classifier", runs["classifier"],
                 "--cond-samples", "3", "--iw-k", "0", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    per_class = result["cond_accuracy_per_class"]
    assert len(per_class) == 10 and all(a in (0, 1 / 3, 2 / 3, 1) for a in per_class)
    assert result["cond_accuracy"] == pytest.approx(np.mean(per_class))
    # a model without labels: its samples' FD and IS, no cond_accuracy
    assert main(["evaluate", "--checkpoint", runs["vae2"], "--classifier", runs["classifier"],
                 "--quality-samples", "20", "--iw-k", "0", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "cond_accuracy" not in result and np.isfinite(result["fd"])
    # a model that cannot sample, or a --classifier run that is not a classifier: exit 2
    assert main(["evaluate", "--checkpoint", runs["vq"], "--classifier", runs["classifier"],
                 "--iw-k", "0"]) == 2
    assert "vq-vae has no prior to sample from" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", runs["cvae"], "--classifier", runs["vae2"]]) == 2
    assert "not a classifier" in capsys.readouterr().err


def test_example_scripts_reuse_and_train(runs, tmp_path):
    out = _load_example("fig_traversals").main(
        ["--run", runs["vae10"], runs["beta10"], "--out", str(tmp_path / "t.png")])
    assert_png(out)
    out = _load_example("fig_prior_samples").main(
        ["--sample", "--train-limit", "128", "--test-limit", "32", "--epochs", "1",
         "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "p.png")])
    assert_png(out)
    assert os.path.exists(tmp_path / "runs" / "fig-mlp-vae" / "checkpoint.npz")


def test_ensure_run_reuses_resumes_and_replaces(tmp_path):
    from scratchvae.files import read_jsonl

    out = str(tmp_path / "run")

    def epochs():
        return [r["epoch"] for r in read_jsonl(os.path.join(out, "metrics.jsonl"))]

    one = TrainConfig(model="mlp-vae", latent_dim=2, **TINY)
    figures.ensure_run(one, out, log=_quiet)
    first = open(os.path.join(out, "checkpoint.npz"), "rb").read()
    figures.ensure_run(one, out, log=_quiet)                       # same config: reused
    assert open(os.path.join(out, "checkpoint.npz"), "rb").read() == first
    two = TrainConfig(**dict(TINY, model="mlp-vae", latent_dim=2, epochs=2))
    figures.ensure_run(two, out, log=_quiet)                       # more epochs: resumed
    assert epochs() == [1, 2] and load_run(out)[2]["epoch"] == 2
    other = TrainConfig(model="mlp-vae", latent_dim=3, **TINY)
    figures.ensure_run(other, out, log=_quiet)                     # another config: replaced
    assert load_run(out)[0].latent_dim == 3 and epochs() == [1]
    figures.ensure_run(other, out, retrain=True, log=_quiet)       # --retrain: replaced
    assert epochs() == [1] and load_run(out)[2]["epoch"] == 1
    # the directory train recorded its data in does not make the run another one
    recorded = json.loads(open(os.path.join(out, "config.json")).read())
    recorded["data_dir"] = str(tmp_path / "where-the-data-was-found")
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(recorded, f)
    figures.ensure_run(other, out, log=_quiet)                     # reused, not retrained
    assert json.loads(open(os.path.join(out, "config.json")).read()) == recorded

"""Generative quality (scratchvae/quality.py): the Fréchet distance on the
classifier's features against closed forms, the Inception score at its bounds,
the classifier's feature layer, and ``evaluate`` / ``report`` with --classifier
on tiny runs of the bundled sample."""
import json
import math

import numpy as np
import pytest

from scratchvae import quality
from scratchvae.cli import main
from scratchvae.data import images_to_float, load_sample
from scratchvae.models import cnn_classifier, mlp_cvae, mlp_vae

TINY_RUN = ["--sample", "--train-limit", "64", "--test-limit", "40", "--epochs", "1",
            "--batch-size", "32", "--no-progress"]


@pytest.fixture(scope="module")
def images():
    """200 test images of the bundled sample, float (200, 1, 28, 28) in [0, 1]."""
    return images_to_float(load_sample("mnist").test_images[:200])


@pytest.fixture(scope="module")
def classifier():
    return cnn_classifier(rng=np.random.default_rng(1))


def _rotation(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


# --------------------------------------------------------------------------
# the Fréchet distance and the Inception score
# --------------------------------------------------------------------------

def test_frechet_distance_of_gaussians_with_a_closed_form():
    a, b = np.array([1.0, 4.0, 9.0, 0.25]), np.array([2.0, 3.0, 5.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, 0.0])
    want = ((np.sqrt(a) - np.sqrt(b)) ** 2).sum() + ((mu1 - mu2) ** 2).sum()
    got = quality.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(want, rel=1e-12)
    assert quality.frechet_distance(mu2, np.diag(b), mu1, np.diag(a)) == pytest.approx(got)
    # the same Gaussians rotated: S1 and S2 full, commuting; the distance is unchanged
    q = _rotation(4, 0)
    got = quality.frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(want, rel=1e-9)
    # a term off by its factor (2 Tr sqrt -> Tr sqrt) misses the closed form
    assert abs(want - (np.sqrt(a) * np.sqrt(b)).sum()) > 1


def test_frechet_distance_of_non_commuting_2x2_covariances():
    """For 2x2 S1 S2 with eigenvalues l1, l2 > 0: (sqrt l1 + sqrt l2)^2 = tr + 2 sqrt det."""
    s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    s2 = np.array([[0.5, -0.2], [-0.2, 3.0]])
    m = s1 @ s2
    tr_sqrt = math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))
    want = np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert quality.frechet_distance(np.zeros(2), s1, np.zeros(2), s2) == pytest.approx(want, rel=1e-12)
    assert quality.frechet_distance(np.zeros(2), s2, np.zeros(2), s1) == pytest.approx(want, rel=1e-12)


def test_frechet_distance_of_a_distribution_with_itself_is_zero_even_when_singular():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 128)) @ rng.normal(size=(128, 128))
    mu, cov = quality.feature_moments(features)
    assert abs(quality.frechet_distance(mu, cov, mu, cov)) < 1e-8 * np.trace(cov)
    features[:, :30] = 0.0           # dead ReLU units: a singular covariance
    features = features[:60]         # and fewer samples than features
    mu, cov = quality.feature_moments(features)
    fd = quality.frechet_distance(mu, cov, mu, cov)
    assert np.isfinite(fd) and abs(fd) < 1e-3 * np.trace(cov)
    np.testing.assert_allclose(cov, np.cov(features.T), rtol=1e-12)   # ddof = 1
    with pytest.raises(ValueError, match="expected means"):
        quality.frechet_distance(mu, cov, mu[:5], cov)


def test_frechet_distance_retries_a_product_without_a_finite_root():
    """S1 S2 nilpotent (what rounding can leave of singular covariances): sqrtm
    gives inf; (S1 + eps I)(S2 + eps I) = (1 + eps) [[eps, 1], [0, eps]] has the
    root of trace 2 sqrt(eps (1 + eps))."""
    eps = 1e-6
    nilpotent = np.array([[0.0, 1.0], [0.0, 0.0]])
    got = quality.frechet_distance(np.zeros(2), nilpotent, np.zeros(2), np.eye(2), eps=eps)
    assert got == pytest.approx(2 - 4 * math.sqrt(eps * (1 + eps)), rel=1e-9)


def test_inception_score_at_its_bounds():
    K = 10
    confident = np.eye(K)[np.arange(50) % K]        # one-hot, every class as often
    assert quality.inception_score(confident) == pytest.approx(K, rel=1e-12)
    same = np.tile(np.random.default_rng(0).dirichlet(np.ones(K)), (50, 1))
    assert quality.inception_score(same) == pytest.approx(1.0, rel=1e-12)
    one_class = np.eye(K)[np.zeros(50, dtype=int)]  # confident, but always class 0
    assert quality.inception_score(one_class) == pytest.approx(1.0)
    probs = np.random.default_rng(1).dirichlet(np.full(K, 0.3), size=200)
    assert 1.0 < quality.inception_score(probs) < K
    # exp E[KL], not E[exp KL] nor exp of the entropy
    kl = (probs * (np.log(probs) - np.log(probs.mean(axis=0)))).sum(axis=1)
    assert quality.inception_score(probs) == pytest.approx(math.exp(kl.mean()), rel=1e-12)


# --------------------------------------------------------------------------
# the classifier's features and a sampler's scores
# --------------------------------------------------------------------------

def test_features_are_the_input_of_the_last_linear(classifier, images):
    x = images[:16]
    h = classifier.features(x)
    assert h.shape == (16, 128) and h.dtype == np.float32 and (h >= 0).all()
    last = classifier.net.layers[-1]
    np.testing.assert_allclose(classifier.logits(x), h @ last.weight.data.T + last.bias.data,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(classifier.logits(x), classifier.net.forward(x))


def test_classifier_statistics_in_batches(classifier, images):
    f, p = quality.classifier_statistics(classifier, images[:50])
    f7, p7 = quality.classifier_statistics(classifier, images[:50], batch_size=7)
    assert f.shape == (50, 128) and p.shape == (50, 10) and f.dtype == p.dtype == np.float64
    np.testing.assert_allclose(f, f7, rtol=1e-5, atol=1e-7)   # the GEMM's blocks differ
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(p.argmax(axis=1), classifier.predict(images[:50]))


def test_sample_quality_of_the_test_images_themselves(classifier, images):
    train, test = images[:100], images[100:]
    ref = quality.reference(classifier, train, test, n=60)
    assert ref["floor_images"] == 60 and ref["fd_floor"] > 0
    assert 1 <= ref["is_ceiling"] <= 10

    def replay(n, rng, labels):   # the test set, in order
        start = replay.done
        replay.done += n
        return test[start:start + n]
    replay.done = 0
    scores = quality.sample_quality(replay, classifier, ref, n=100, batch_size=30)
    assert abs(scores["fd"]) < 1e-6 * ref["fd_floor"] and "cond_accuracy" not in scores
    assert scores["is"] == pytest.approx(ref["is_ceiling"], rel=1e-6)
    # other images: farther than zero
    replay.done = 0
    noise = lambda n, rng, labels: rng.random((n, 1, 28, 28)).astype(np.float32)  # noqa: E731
    assert quality.sample_quality(noise, classifier, ref, n=100)["fd"] > ref["fd_floor"]


def test_conditional_accuracy_counts_the_requested_labels(classifier, images):
    x = images[:40]
    predicted = classifier.predict(x)
    labels = predicted.copy()
    labels[:10] = (labels[:10] + 1) % 10      # 10 of 40 asked for another class
    ref = quality.reference(classifier, x, x, n=20)
    seen = []

    def sampler(n, rng, labels_):
        seen.append(labels_)
        start = sum(len(s) for s in seen[:-1])
        return x[start:start + n]
    scores = quality.sample_quality(sampler, classifier, ref, n=40, labels=labels, batch_size=16)
    assert scores["cond_accuracy"] == 0.75
    np.testing.assert_array_equal(np.concatenate(seen), labels)   # in batches of 16, in order


def test_samplers_of_models():
    rng = np.random.default_rng(0)
    vae = quality.model_sampler(mlp_vae(latent_dim=2, hidden_dim=8))
    cvae = quality.model_sampler(mlp_cvae(latent_dim=2, hidden_dim=8))
    assert vae.n_classes == 0 and cvae.n_classes == 10
    out = vae(5, rng)
    assert isinstance(out, np.ndarray) and out.shape == (5, 1, 28, 28)
    assert cvae(4, rng, np.array([0, 1, 2, 3])).shape == (4, 1, 28, 28)
    with pytest.raises(ValueError, match="labels required"):
        cvae(4, rng)
    with pytest.raises(ValueError, match="unconditional"):
        vae(4, rng, np.zeros(4, dtype=int))
    np.testing.assert_array_equal(quality.balanced_labels(12, 10),
                                  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
    assert quality.balanced_labels(12, 0) is None


def test_samples_that_are_not_images_are_refused(classifier, images):
    ref = quality.reference(classifier, images[:30], images[30:60], n=10)
    nan = lambda n, rng, labels: np.full((n, 1, 28, 28), np.nan, np.float32)  # noqa: E731
    with pytest.raises(ValueError, match="not finite"):
        quality.sample_quality(nan, classifier, ref, n=10)
    flat = lambda n, rng, labels: np.zeros((n, 784), np.float32)  # noqa: E731
    with pytest.raises(ValueError, match=r"got shape \(10, 784\)"):
        quality.sample_quality(flat, classifier, ref, n=10)


# --------------------------------------------------------------------------
# evaluate and report
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("quality-runs")
    out = {}
    for name, model in (("vae", "mlp-vae"), ("cvae", "mlp-cvae"), ("clf", "classifier")):
        out[name] = str(base / name)
        assert main(["train", "--model", model, *TINY_RUN, "--out", out[name]]) == 0
    return out


def _evaluate(capsys, *argv):
    code = main(["evaluate", *argv, "--iw-k", "0", "--json", "--no-progress"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


def test_evaluate_with_a_classifier_scores_every_model_that_samples(runs, capsys):
    keys = ("fd", "is", "fd_floor", "is_ceiling")
    code, vae, _ = _evaluate(capsys, "--checkpoint", runs["vae"], "--classifier", runs["clf"],
                             "--quality-samples", "30")
    assert code == 0 and all(np.isfinite(vae[k]) for k in keys)
    assert 1 <= vae["is"] <= 10 and 1 <= vae["is_ceiling"] <= 10 and vae["fd_floor"] > 0
    assert "cond_accuracy" not in vae
    code, cvae, _ = _evaluate(capsys, "--checkpoint", runs["cvae"], "--classifier", runs["clf"],
                              "--quality-samples", "30", "--cond-samples", "2")
    assert code == 0 and all(np.isfinite(cvae[k]) for k in keys)
    assert len(cvae["cond_accuracy_per_class"]) == 10
    assert cvae["fd_floor"] == vae["fd_floor"] and cvae["is_ceiling"] == vae["is_ceiling"]
    code, plain, _ = _evaluate(capsys, "--checkpoint", runs["cvae"], "--classifier",
                               runs["clf"], "--quality-samples", "0", "--cond-samples", "2")
    assert code == 0 and not set(keys) & set(plain) and "cond_accuracy" in plain
    # a model that cannot sample, a classifier run that is not one, too few samples: exit 2
    code, _, err = _evaluate(capsys, "--checkpoint", runs["clf"], "--classifier", runs["clf"])
    assert code == 2 and "error: classifier has no prior to sample from" in err
    code, _, err = _evaluate(capsys, "--checkpoint", runs["vae"], "--classifier", runs["vae"])
    assert code == 2 and f"--classifier {runs['vae']} holds mlp-vae, not a classifier" in err
    code, _, err = _evaluate(capsys, "--checkpoint", runs["vae"], "--classifier", runs["clf"],
                             "--quality-samples", "1")
    assert code == 2 and "expected at least 2 images" in err


def test_report_has_fd_and_is_columns_and_their_note(runs, tmp_path, capsys):
    md = str(tmp_path / "report.md")
    assert main(["report", "--runs", runs["vae"], runs["cvae"], runs["clf"], "--classifier",
                 runs["clf"], "--quality-samples", "30", "--cond-samples", "2", "--iw-k", "0",
                 "--out", md]) == 0
    text = open(md, encoding="utf-8").read()
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header.index("test −ELBO") < header.index("MSE") < header.index("FD") \
        < header.index("IS") < header.index("cond. acc.") < header.index("s/epoch")
    cells = [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]
    vae, cvae, clf = cells
    for row in (vae, cvae):
        assert float(row["FD"]) >= 0 and 1 <= float(row["IS"]) <= 10
    assert clf["FD"] == clf["IS"] == "–" and cvae["cond. acc."].endswith("%")
    assert "not comparable with published Inception FIDs" in text
    assert "test set and 30 training images" in text and "ceiling: the test set's IS" in text


def test_a_classifier_of_another_data_set_is_refused(runs, classifier):
    from scratchvae.rundir import load_run

    config, model, _ = load_run(runs["vae"])
    ref = {"dataset": "fashion-mnist", "mu": np.zeros(128), "cov": np.eye(128)}
    with pytest.raises(ValueError, match="trained on fashion-mnist, the run on mnist"):
        quality.run_quality(config, quality.model_sampler(model), classifier, ref, n=10)
    config.model = "vq-vae"
    with pytest.raises(ValueError, match="vq-vae has no prior to sample from"):
        quality.run_sampler(config, model)

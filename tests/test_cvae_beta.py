"""KL schedules (beta warm-up, capacity annealing), active units, the
conditional VAEs, the image grid and the `sample` command."""
import numpy as np
import pytest

from scratchvae import gradcheck as checks
from scratchvae.cli import main
from scratchvae.gradcheck import check_model
from scratchvae.models import CVAE, build_model, conv_cvae, mlp_cvae, mlp_vae
from scratchvae.models.vae import active_units
from scratchvae.plots import image_grid, save_image_grid
from scratchvae.schedules import KLSchedule, learning_rate

F64 = np.float64


# ---------------------------------------------------------------------------
# the schedule itself
# ---------------------------------------------------------------------------

def test_warmup_ramps_beta_linearly():
    s = KLSchedule(beta=4.0, warmup_steps=100)
    assert [s.beta_at(t) for t in (0, 25, 100, 1000)] == [0.0, 1.0, 4.0, 4.0]
    assert s.beta_at(None) == 4.0  # evaluation: the schedule's end
    assert s.term(2.5, 25) == (2.5, 1.0)
    assert KLSchedule(beta=0.5).term(3.0, 0) == (1.5, 0.5)  # no warm-up: constant beta


def test_capacity_term_and_its_derivative():
    s = KLSchedule(capacity_max=20.0, capacity_steps=100, capacity_gamma=10.0)
    assert [s.capacity_at(t) for t in (0, 50, 100, 500, None)] == [0, 10, 20, 20, 20]
    assert s.term(4.0, 50) == (60.0, -10.0)   # KL below C: gamma |KL - C|, slope -gamma
    assert s.term(13.0, 50) == (30.0, 10.0)   # KL above C: slope +gamma
    assert s.term(10.0, 50) == (0.0, 0.0)     # at the kink: subgradient 0
    # no ramp: C = C_max from step 0
    assert KLSchedule(capacity_max=5.0, capacity_gamma=2.0).term(1.0, 0) == (8.0, -2.0)


def test_learning_rate_schedules():
    assert learning_rate("constant", 0.1, 7, 10) == 0.1
    cosine = [learning_rate("cosine", 0.1, t, 10) for t in (0, 5, 10)]
    assert cosine == pytest.approx([0.1, 0.05, 0])
    assert learning_rate("cosine", 0.1, 2, 10) == pytest.approx(0.05 * (1 + np.cos(0.2 * np.pi)))
    with pytest.raises(ValueError, match="expected a schedule in"):
        learning_rate("step", 0.1, 0, 10)
    with pytest.raises(ValueError, match="0 <= step <= total_steps"):
        learning_rate("cosine", 0.1, 11, 10)


@pytest.mark.parametrize("kwargs,message", [
    (dict(capacity_max=5.0), "needs capacity_gamma > 0"),
    (dict(capacity_steps=10), "needs capacity_gamma > 0"),
    (dict(warmup_steps=10, capacity_gamma=1.0), "not both"),
    (dict(beta=-1.0), "beta must be"),
    (dict(capacity_max=float("nan"), capacity_gamma=1.0), "capacity_max must be"),
])
def test_inconsistent_schedules_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KLSchedule(**kwargs)
    with pytest.raises(ValueError, match="step >= 0"):
        KLSchedule(warmup_steps=5).beta_at(-1)


def _tiny_vae(rng, **options):
    return mlp_vae(image_shape=(1, 3, 4), hidden_dim=7, latent_dim=3, rng=rng, dtype=F64,
                   **options)


def test_model_loss_follows_the_schedule():
    rng = np.random.default_rng(0)
    x, eps = rng.random((5, 1, 3, 4)), rng.standard_normal((1, 5, 3))
    warm = _tiny_vae(np.random.default_rng(1), beta=3.0, kl_warmup_steps=10)
    loss, p = warm.loss(x, eps=eps, step=4)
    assert loss == pytest.approx(p["recon"] + 1.2 * p["kl"], rel=1e-12)
    loss, p = warm.loss(x, eps=eps)  # step None: the end of the warm-up
    assert loss == pytest.approx(p["recon"] + 3.0 * p["kl"], rel=1e-12)
    assert p["nelbo"] == pytest.approx(p["recon"] + p["kl"], rel=1e-12)  # reported at beta 1

    cap = _tiny_vae(np.random.default_rng(1), capacity_max=8.0, capacity_steps=4,
                    capacity_gamma=50.0)
    loss, p = cap.loss(x, eps=eps, step=1)  # C = 2
    assert loss == pytest.approx(p["recon"] + 50.0 * abs(p["kl"] - 2.0), rel=1e-12)


# ---------------------------------------------------------------------------
# gradients of the scheduled KL term
# ---------------------------------------------------------------------------

def _capacity_model_check(step, gamma=10.0, c_max=40.0):
    rng = np.random.default_rng(3)
    model = _tiny_vae(rng, capacity_max=c_max, capacity_steps=100, capacity_gamma=gamma)
    x, eps = rng.random((3, 1, 3, 4)), rng.standard_normal((1, 3, 3))
    kl = float(model.loss(x, eps=eps)[1]["kl"])
    result = check_model("capacity", model, x, rng=rng, loss_kwargs={"eps": eps, "step": step},
                         h=1e-4)
    return result, kl, model.kl_schedule.capacity_at(step)


def test_capacity_gradient_is_right_on_both_sides_of_the_target():
    below, kl, c = _capacity_model_check(step=50)  # C = 20 > KL
    assert kl < c - 1 and below.passed, below.errors
    above, kl, c = _capacity_model_check(step=0)   # C = 0 < KL
    assert kl > c + 1e-3 and above.passed, above.errors


def test_wrong_capacity_backward_is_caught(monkeypatch):
    # a backward that forgets the sign of d|KL - C|/dKL (i.e. treats the term
    # as gamma (KL - C)) is wrong exactly where KL < C
    real = KLSchedule.term

    def unsigned(self, kl, step):
        value, slope = real(self, kl, step)
        return value, abs(slope)

    monkeypatch.setattr(KLSchedule, "term", unsigned)
    result, kl, c = _capacity_model_check(step=50)
    assert kl < c and not result.passed
    # the decoder never sees the KL: its gradients still check out
    assert result.errors["decoder.layers.2.weight"] < 1e-7
    assert result.errors["encoder.layers.3.weight"] > 1e-2


def test_wrong_warmup_backward_is_caught(monkeypatch):
    # the backward uses the final beta instead of beta_t
    monkeypatch.setattr(KLSchedule, "term",
                        lambda self, kl, step: (self.beta_at(step) * float(kl), self.beta))
    rng = np.random.default_rng(0)
    model = _tiny_vae(rng, beta=4.0, kl_warmup_steps=100)
    x, eps = rng.random((3, 1, 3, 4)), rng.standard_normal((1, 3, 3))
    result = check_model("warm-up", model, x, rng=rng, loss_kwargs={"eps": eps, "step": 30},
                         h=1e-4)
    assert not result.passed


def test_catalogue_has_the_new_checks():
    names = " ".join(checks.check_names())
    for text in ("KL warm-up", "capacity", "mlp-cvae", "conv-cvae"):
        assert text in names, text


# ---------------------------------------------------------------------------
# active units and KL per dimension
# ---------------------------------------------------------------------------

def test_active_units_on_a_constructed_case():
    rng = np.random.default_rng(0)
    n = 10_000
    mu = np.stack([np.full(n, 3.0),                  # constant: inactive
                   0.05 * rng.standard_normal(n),    # variance 0.0025: inactive
                   0.2 * rng.standard_normal(n),     # variance 0.04: active
                   rng.standard_normal(n) + 5.0],    # variance 1: active
                  axis=1)
    count, variances = active_units(mu)
    assert count == 2
    np.testing.assert_allclose(variances, [0, 0.0025, 0.04, 1], rtol=0.05, atol=1e-12)
    assert active_units(mu, threshold=1e-3)[0] == 3
    with pytest.raises(ValueError, match="active_units"):
        active_units(np.zeros(5))


def test_test_metrics_report_kl_per_dim_and_active_units():
    rng = np.random.default_rng(0)
    Z = 4
    model = mlp_vae(image_shape=(1, 3, 4), hidden_dim=7, latent_dim=Z, rng=rng, dtype=F64)
    head = model.encoder.layers[3]  # Linear(7, 2Z): rows 0..Z-1 mu, Z..2Z-1 logvar
    # dimensions 0 and 2 ignore the input: mu_i = b_i, logvar_i = b_{Z+i}
    for i in (0, 2):
        head.weight.data[[i, Z + i]] = 0.0
    head.bias.data[:] = [0.5, 0.0, -0.3, 0.0, 0.2, 0.0, -0.4, 0.0]
    head.weight.data[[1, 3]] *= 20  # dimensions 1 and 3 clearly vary with x
    x = rng.random((300, 1, 3, 4))
    m = model.test_metrics(x, batch_size=128, rng=np.random.default_rng(1))
    assert m["active_units"] == 2
    kl_dims = m["test_kl_per_dim"]
    assert len(kl_dims) == Z and sum(kl_dims) == pytest.approx(m["test_kl"], rel=1e-10)
    for i in (0, 2):  # the closed form of a constant posterior
        b, v = head.bias.data[i], head.bias.data[Z + i]
        assert kl_dims[i] == pytest.approx(0.5 * (b * b + np.exp(v) - 1 - v), rel=1e-10)


# ---------------------------------------------------------------------------
# conditional VAEs
# ---------------------------------------------------------------------------

def test_cvae_architectures():
    conv = build_model("conv-cvae", latent_dim=10, rng=np.random.default_rng(0))
    assert isinstance(conv, CVAE) and conv.num_parameters() == 879_317
    shapes = {n: p.shape for n, p in conv.named_parameters()}
    assert shapes["encoder.head.layers.0.weight"] == (128, 3136 + 10)
    assert shapes["decoder.net.layers.0.weight"] == (128, 10 + 10)
    mlp = build_model("mlp-cvae", latent_dim=20, rng=np.random.default_rng(0))
    shapes = {n: p.shape for n, p in mlp.named_parameters()}
    assert shapes["encoder.head.layers.0.weight"] == (400, 784 + 10)
    assert shapes["encoder.head.layers.2.weight"] == (40, 400)
    assert shapes["decoder.net.layers.0.weight"] == (400, 20 + 10)
    encoder, decoder = 794 * 400 + 400 + 400 * 40 + 40, 30 * 400 + 400 + 400 * 784 + 784
    assert mlp.num_parameters() == encoder + decoder


def _tiny_cvae(rng, **options):
    return mlp_cvae(image_shape=(1, 3, 4), hidden_dim=7, latent_dim=3, n_classes=4, rng=rng,
                    dtype=F64, **options)


def test_cvae_label_is_concatenated_after_the_features():
    rng = np.random.default_rng(0)
    model = _tiny_cvae(rng)
    x, y = rng.random((5, 1, 3, 4)), np.array([0, 3, 1, 1, 2])
    c = np.eye(4)[y]
    mu, logvar = model.encode(x, model.one_hot(y, 5))
    l1, l2 = model.encoder.head.layers[0], model.encoder.head.layers[2]
    hidden = np.maximum(np.concatenate([x.reshape(5, -1), c], 1) @ l1.weight.data.T
                        + l1.bias.data, 0)
    h = hidden @ l2.weight.data.T + l2.bias.data
    np.testing.assert_allclose(np.concatenate([mu, logvar], 1), h, rtol=1e-12)
    z = rng.standard_normal((5, 3))
    d1 = model.decoder.net.layers[0]
    first = model.decode(z, model.one_hot(y, 5))  # runs the net; check its first layer's input
    assert first.shape == (5, 1, 3, 4)
    np.testing.assert_array_equal(d1.cache[0], np.concatenate([z, c], 1))


def test_cvae_decoder_depends_on_the_label():
    rng = np.random.default_rng(0)
    model = _tiny_cvae(rng)
    a = model.sample(6, np.random.default_rng(5), labels=1)
    b = model.sample(6, np.random.default_rng(5), labels=2)
    assert a.shape == (6, 1, 3, 4) and not np.allclose(a, b)
    mixed = model.sample(2, np.random.default_rng(5), labels=np.array([1, 2]))
    np.testing.assert_allclose(mixed[0], a[0])


@pytest.mark.parametrize("labels,message", [
    (None, "needs the class labels"),
    (np.array([0, 1, 4]), r"labels in \[0, 3\]"),
    (np.array([0, -1, 2]), r"labels in \[0, 3\]"),
    (np.array([0, 1]), r"labels of shape \(3,\)"),
    (np.array([0.0, 1.0, 2.0]), "integer labels"),
])
def test_cvae_rejects_bad_labels(labels, message):
    rng = np.random.default_rng(0)
    model = _tiny_cvae(rng)
    with pytest.raises(ValueError, match=message):
        model.loss(rng.random((3, 1, 3, 4)), rng=rng, labels=labels)


def test_cvae_with_two_samples_is_the_mean_of_single_samples():
    # L = 2: the decoder sees [z | c] with c repeated for both samples; the
    # loss equals the mean of the two L = 1 losses
    rng = np.random.default_rng(0)
    model = _tiny_cvae(rng)
    x, y = rng.random((3, 1, 3, 4)), np.array([2, 0, 3])
    eps = rng.standard_normal((2, 3, 3))
    both, _ = model.loss(x, eps=eps, labels=y)
    one = [model.loss(x, eps=eps[l:l + 1], labels=y)[0] for l in range(2)]
    p_both = model.loss(x, eps=eps, labels=y)[1]["recon"]
    p_one = [model.loss(x, eps=eps[l:l + 1], labels=y)[1]["recon"] for l in range(2)]
    assert p_both == pytest.approx(np.mean(p_one), rel=1e-12)
    assert both == pytest.approx(np.mean(one), rel=1e-12)


@pytest.mark.parametrize("build,shape,extra", [
    (mlp_cvae, (1, 3, 4), {}),
    (conv_cvae, (1, 4, 4), {"channels": (3, 4)}),
])
def test_cvae_gradcheck_catches_a_dropped_label_path(build, shape, extra, monkeypatch):
    """A check that cannot fail is no check: routing the wrong half of the
    decoder's input gradient (the label's columns) into z is caught."""
    from scratchvae.models import cvae as cvae_module

    name = "mlp-cvae loss (Bernoulli, L=2, 4 classes)" if build is mlp_cvae else \
        "conv-cvae loss (Bernoulli, 4x4 images, 4 classes)"
    assert checks.run_check(name).passed

    def wrong(self, dout):
        du = self.net.backward(dout)
        return du[:, -3:]  # the last 3 columns (label part) instead of the first Z = 3

    monkeypatch.setattr(cvae_module.ConditionalDecoder, "backward", wrong)
    assert not checks.run_check(name).passed


# ---------------------------------------------------------------------------
# image grid and the sample command
# ---------------------------------------------------------------------------

def test_image_grid_layout():
    images = np.stack([np.full((1, 2, 3), v) for v in (0.1, 0.2, 0.3)])
    g = image_grid(images, ncol=2, padding=1, pad_value=1.0)
    assert g.shape == (2 * 3 + 1, 2 * 4 + 1)
    assert np.all(g[1:3, 1:4] == 0.1) and np.all(g[1:3, 5:8] == 0.2)
    assert np.all(g[4:6, 1:4] == 0.3) and np.all(g[4:6, 5:8] == 1.0)  # empty cell
    assert np.all(g[0] == 1.0) and np.all(g[:, 4] == 1.0)  # padding
    with pytest.raises(ValueError, match="image_grid"):
        image_grid(np.zeros((2, 28, 28)))


def _png_shape(path):
    import matplotlib.image

    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    return matplotlib.image.imread(path).shape


def test_save_image_grid_writes_a_png(tmp_path):
    images = np.random.default_rng(0).random((20, 1, 28, 28))
    plain = _png_shape(save_image_grid(images, str(tmp_path / "a.png"), ncol=5))
    labelled = _png_shape(save_image_grid(images, str(tmp_path / "b.png"), ncol=5,
                                          row_labels=list("abcd"), title="t"))
    grid_px = np.array([3 * (4 * 30 + 2), 3 * (5 * 30 + 2)])  # scale 3, 2 px padding
    assert np.all(grid_px <= plain[:2]) and np.all(plain[:2] <= grid_px + 20)  # + margin
    assert labelled[0] > plain[0] and labelled[1] > plain[1]
    with pytest.raises(ValueError, match="row labels"):
        save_image_grid(images, str(tmp_path / "c.png"), ncol=5, row_labels=["x"])


TINY_RUN = ["--sample", "--train-limit", "256", "--test-limit", "64", "--epochs", "1",
            "--batch-size", "64", "--no-progress"]


def test_cli_sample_from_a_cvae_and_a_vae(tmp_path, capsys):
    run = str(tmp_path / "cvae")
    assert main(["train", "--model", "mlp-cvae", "--out", run, "--kl-warmup-steps", "3",
                 *TINY_RUN]) == 0
    rows = str(tmp_path / "rows.png")
    assert main(["sample", "--checkpoint", run, "--n", "20", "--out", rows]) == 0
    h_rows, w_rows = _png_shape(rows)[:2]
    one = str(tmp_path / "eight.png")
    assert main(["sample", "--checkpoint", run, "--label", "8", "--n", "16", "--out", one]) == 0
    h_one, w_one = _png_shape(one)[:2]
    assert h_rows > 2 * h_one  # 10 rows of 2 against 4 rows of 4
    assert main(["sample", "--checkpoint", run, "--label", "10", "--out", one]) == 2
    assert "0..9" in capsys.readouterr().err

    vae = str(tmp_path / "vae")
    assert main(["train", "--model", "mlp-vae", "--out", vae, *TINY_RUN]) == 0
    out = str(tmp_path / "vae.png")
    assert main(["sample", "--checkpoint", vae, "--n", "9", "--out", out]) == 0
    _png_shape(out)
    assert main(["sample", "--checkpoint", vae, "--label", "3", "--out", out]) == 2
    assert "conditional" in capsys.readouterr().err


def test_cli_sample_draws_the_label_asked_for(tmp_path, monkeypatch):
    """The grid holds model.sample(n, rng(seed), labels=K): the label reaches the model."""
    import scratchvae.plots
    from scratchvae.rundir import load_run

    run = str(tmp_path / "cvae")
    assert main(["train", "--model", "mlp-cvae", "--out", run, *TINY_RUN]) == 0
    saved = {}
    monkeypatch.setattr(scratchvae.plots, "save_image_grid",
                        lambda images, path, **kw: saved.setdefault(path, images))
    out = str(tmp_path / "eight.png")
    assert main(["sample", "--checkpoint", run, "--label", "8", "--n", "6", "--seed", "3",
                 "--out", out]) == 0
    model = load_run(run)[1]
    expected = {k: model.sample(6, np.random.default_rng(3), labels=k) for k in range(10)}
    assert np.array_equal(saved[out], expected[8])
    assert not any(np.array_equal(saved[out], expected[k]) for k in range(10) if k != 8)


def test_cli_schedule_flags_reach_the_model(tmp_path, capsys, monkeypatch):
    from scratchvae.models.vae import VAE

    steps = []
    real = VAE.loss

    def recording(self, *a, **k):
        if k.get("training", True):
            steps.append((k.get("step"), self.kl_schedule))
        return real(self, *a, **k)

    monkeypatch.setattr(VAE, "loss", recording)
    run = str(tmp_path / "cap")
    assert main(["train", "--model", "mlp-vae", "--out", run, "--capacity-max", "5",
                 "--capacity-steps", "4", "--capacity-gamma", "30", *TINY_RUN]) == 0
    assert [s for s, _ in steps] == [0, 1, 2, 3]  # 256 images / batch 64
    assert steps[0][1] == KLSchedule(1.0, 0, 5.0, 4, 30.0)
    assert main(["train", "--out", run, "--capacity-max", "5", *TINY_RUN]) == 2
    assert "capacity_gamma" in capsys.readouterr().err

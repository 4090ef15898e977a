"""Images that a model's loss refuses: NaN, infinities, and for a Bernoulli
likelihood (the VAEs by default, the VQ-VAE) values outside [0, 1].

Every model's ``loss`` checks its images (``losses.check_values``) unless
``check_inputs=False``, which the training loop passes: its images come from
uint8 pixels.
"""
import numpy as np
import pytest

from scratchvae import losses
from scratchvae.models import build_model

#: a bad pixel value -> what the message says about it
BAD = {"nan": (np.nan, "NaN"), "inf": (np.inf, "infinite"), "-inf": (-np.inf, "infinite"),
       "1.5": (1.5, r"values from 0 to 1\.5"), "-0.1": (-0.1, r"values from -0\.1 to 1")}


def _model(name, **options):
    latent = {"vq-vae": 16, "classifier": 0}.get(name, 4)
    return build_model(name, latent_dim=latent, rng=np.random.default_rng(0), **options)


def _images(n=3, bad=None):
    x = np.random.default_rng(1).random((n, 1, 28, 28)).astype(np.float32)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0          # the clean range spans [0, 1]
    if bad is not None:
        x[2, 0, 5, 7] = bad
    return x


def _loss(model, x, **kwargs):
    return model.loss(x, rng=np.random.default_rng(2), labels=np.arange(len(x)) % 10, **kwargs)


@pytest.mark.parametrize("name,op", [("mlp-vae", "VAE.loss"), ("conv-vae", "VAE.loss"),
                                     ("mlp-cvae", "CVAE.loss"), ("conv-cvae", "CVAE.loss"),
                                     ("vq-vae", "VQVAE.loss")])
@pytest.mark.parametrize("bad", list(BAD))
def test_bernoulli_models_refuse_bad_pixels_naming_the_op(name, op, bad):
    model = _model(name)
    value, said = BAD[bad]
    with pytest.raises(ValueError, match=rf"^{op}: expected finite images \(bernoulli "
                                         rf"likelihood\) in \[0, 1\], got {said}"):
        _loss(model, _images(bad=value))
    assert model._cache is None                       # refused before any work
    loss, _ = _loss(model, _images())                 # clean images pass
    assert np.isfinite(float(loss))


@pytest.mark.parametrize("likelihood", ["gaussian", "gaussian-learned"])
def test_gaussian_likelihood_accepts_any_finite_value_but_not_nan_or_inf(likelihood):
    model = _model("mlp-vae", likelihood=likelihood)
    for value in (1.5, -0.1, 37.0):
        assert np.isfinite(float(_loss(model, _images(bad=value))[0]))
    for bad in ("nan", "inf", "-inf"):
        value, said = BAD[bad]
        with pytest.raises(ValueError, match=rf"^VAE.loss: expected finite images "
                                             rf"\({likelihood} likelihood\), got {said}"):
            _loss(model, _images(bad=value))


def test_classifier_refuses_non_finite_images():
    model = _model("classifier")
    assert np.isfinite(float(_loss(model, _images(bad=1.5))[0]))
    for bad in ("nan", "inf"):
        with pytest.raises(ValueError, match=rf"^Classifier.loss: expected finite images, "
                                             rf"got {BAD[bad][1]}"):
            _loss(model, _images(bad=BAD[bad][0]))


def test_test_metrics_refuse_bad_images_too():
    model = _model("mlp-vae")
    with pytest.raises(ValueError, match="VAE.loss: .*NaN"):
        model.test_metrics(_images(bad=np.nan), rng=np.random.default_rng(0))


@pytest.mark.parametrize("name", ["mlp-vae", "vq-vae", "classifier"])
def test_check_inputs_false_skips_the_check_and_changes_nothing(name):
    """The training loop's path: the same numbers, no check (a NaN goes through)."""
    x = _images()
    checked, _ = _loss(_model(name), x)
    unchecked, _ = _loss(_model(name), x, check_inputs=False)
    assert float(checked) == float(unchecked)
    assert np.isnan(float(_loss(_model(name), _images(bad=np.nan), check_inputs=False)[0]))


def test_check_values_is_exact_at_the_bounds():
    x = np.array([[0.0, 1.0]], np.float32)
    losses.check_values("Op", "x", x, 0.0, 1.0)                  # the bounds are inside
    losses.check_values("Op", "x", np.zeros((0, 3), np.float32), 0.0, 1.0)   # empty: nothing
    for bad in (np.nextafter(np.float32(1), np.float32(2)),
                np.nextafter(np.float32(0), np.float32(-1))):
        with pytest.raises(ValueError, match=r"^Op: expected finite x in \[0, 1\]"):
            losses.check_values("Op", "x", np.array([0.5, bad], np.float32), 0.0, 1.0)
    with pytest.raises(ValueError, match="NaN"):                 # NaN where min/max ignore it
        losses.check_values("Op", "x", np.array([np.nan, 0.5], np.float64))


def test_the_training_loop_skips_the_check(tmp_path, monkeypatch):
    """train() calls model.loss with check_inputs=False: of one epoch of two steps
    and its evaluation (one batch), only the evaluation is checked."""
    from scratchvae.config import TrainConfig
    from scratchvae.train import train

    checked = []
    monkeypatch.setattr(losses, "check_values", lambda op, *args: checked.append(op))
    config = TrainConfig(model="mlp-vae", epochs=1, batch_size=64, train_limit=128,
                         test_limit=64, use_sample=True)
    train(config, str(tmp_path / "run"), progress=False, log=lambda *a, **k: None)
    assert checked == ["VAE.loss"]

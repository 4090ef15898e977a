"""Every op, loss and model passes its float64 gradient check, and the check
catches deliberately wrong backward passes (a check that cannot fail is no check)."""
import numpy as np
import pytest

from scratchvae import checks, losses
from scratchvae.gradcheck import (check_model, check_module, check_op, gradcheck,
                                  relative_error)
from scratchvae.layers import Linear
from scratchvae.models import mlp_vae, vae as vae_module
from scratchvae.ops import activations as A
from scratchvae.ops.linear import linear_backward, linear_forward
from scratchvae.ops.sampler import reparameterize_backward, reparameterize_forward


@pytest.mark.parametrize("name", checks.check_names())
def test_catalogue_check_passes(name):
    result = checks.run_check(name, seed=0)
    assert result.errors, "the check compared nothing"
    assert result.passed, str(result) + f" errors={result.errors}"
    assert result.max_error <= 1e-7


#: every check of the catalogue, by its exact name: dropping or renaming one fails
CATALOGUE = [
    # layers, ops and losses (scratchvae/checks.py)
    "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Flatten",
    "ReLU (channels-last input)", "Flatten (channels-last input)", "Reshape", "Concat",
    "Sequential(Linear, Tanh, Linear)", "Reparameterize (L=2)", "GaussianKL",
    "BernoulliNLL (reference)", "BernoulliNLL (fused kernel)", "GaussianNLL (lambda=0.3)",
    "GaussianNLLLearned (per-sample logvar)", "GaussianNLLLearned (shared logvar)",
    "SoftmaxCrossEntropy",
    # whole models: VAEs, beta-VAE and KL schedules, conditional VAEs, the classifier
    "mlp-vae loss (Bernoulli)",
    "mlp-vae loss (Bernoulli, L=3, beta=4)",
    "mlp-vae loss (Gaussian, lambda=0.5)",
    "mlp-vae loss (Gaussian, learned variance)",
    "conv-vae loss (Bernoulli, 4x4 images)",
    "conv-vae loss (Bernoulli, L=2, 2x4x8 images)",
    "conv-vae loss (Bernoulli, 4x4 images, channels (4, 5))",
    "mlp-vae loss (beta=4, KL warm-up, step 30 of 100)",
    "mlp-vae loss (capacity: 10 |KL - C|, C = 20 > KL)",
    "mlp-cvae loss (Bernoulli, L=2, 4 classes)",
    "conv-cvae loss (Bernoulli, 4x4 images, 4 classes)",
    "classifier loss (softmax cross-entropy)",
    # convolutions (scratchvae/checks_conv.py)
    "conv2d op N=2 C=3 7x6 O=4 k=(3, 2) s=(2, 1) p=(1, 0) bias=True",
    "conv2d op N=3 C=2 8x7 O=3 k=4 s=2 p=1 bias=True",
    "conv2d op N=1 C=2 5x6 O=2 k=3 s=3 p=2 bias=False",
    "conv2d op N=2 C=3 4x5 O=2 k=1 s=1 p=0 bias=True",
    "conv2d op N=2 C=5 6x5 O=4 k=(3, 2) s=2 p=1 bias=True",
    "conv_transpose2d op N=2 C=3 4x3 O=2 k=(3, 2) s=(2, 3) p=(1, 0) op=(1, 2) bias=True",
    "conv_transpose2d op N=2 C=3 3x4 O=2 k=4 s=2 p=1 op=0 bias=True",
    "conv_transpose2d op N=1 C=2 3x3 O=3 k=3 s=3 p=2 op=1 bias=False",
    "conv_transpose2d op N=2 C=3 4x5 O=2 k=1 s=1 p=0 op=0 bias=True",
    "conv_transpose2d op N=2 C=4 3x3 O=5 k=(3, 2) s=2 p=1 op=1 bias=True",
    "Conv2d(3, 4, (3, 2), stride=(2, 1), padding=1)",
    "ConvTranspose2d(3, 2, 4, stride=2, padding=1, output_padding=1)",
    # vector quantiser and VQ-VAE (scratchvae/checks_vq.py)
    "VQ codebook loss (w.r.t. codebook)",
    "VQ commitment loss (w.r.t. z_e)",
    "vq-vae loss (straight-through surrogate, codebook loss)",
    "vq-vae loss (straight-through surrogate, EMA codebook)",
]


def test_catalogue_covers_every_op_loss_and_model():
    names = checks.check_names()
    assert len(set(names)) == len(names), "two checks share a name"
    assert len(set(CATALOGUE)) == len(CATALOGUE)
    missing = [name for name in CATALOGUE if name not in names]
    assert not missing, f"checks missing from the catalogue: {missing}"


def test_relative_error_definition():
    a = np.array([1.0, 2.0, 0.0])
    n = np.array([1.0, 2.5, 0.0])
    assert relative_error(a, n) == pytest.approx(0.5 / 4.5)
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.array([np.nan]), np.array([1.0])) == float("inf")


def test_gradcheck_requires_float64():
    x = np.ones(3, dtype=np.float32)
    with pytest.raises(ValueError, match="float64"):
        gradcheck(lambda: float(x.sum()), {"x": x}, {"x": np.ones(3)})


def test_large_tensor_uses_subset_and_direction():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(500)
    result = gradcheck(lambda: float(np.sum(np.sin(x))), {"x": x}, {"x": np.cos(x)},
                       rng=rng, max_elements=20)
    assert result.passed and "direction" in result.checked["x"]
    # a gradient wrong in a single element the subset missed is still caught by the direction
    g = np.cos(x)
    wrong = g.copy()
    wrong[np.argmax(np.abs(g))] *= 1.5  # one element off by 50%
    bad = gradcheck(lambda: float(np.sum(np.sin(x))), {"x": x}, {"x": wrong},
                    rng=np.random.default_rng(5), max_elements=20)
    assert not bad.passed


def test_perturbed_arrays_are_restored():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 30))
    before = x.copy()
    gradcheck(lambda: float(np.sum(x ** 3)), {"x": x}, {"x": 3 * x ** 2}, rng=rng, max_elements=10)
    assert np.array_equal(x, before)


# ---------------------------------------------------------------------------
# deliberately wrong backward passes must fail
# ---------------------------------------------------------------------------

def _linear_inputs(rng):
    return {"x": rng.standard_normal((3, 5)), "W": rng.standard_normal((4, 5)),
            "b": rng.standard_normal(4)}


def test_wrong_sign_is_caught():
    rng = np.random.default_rng(0)

    def wrong(dy, cache):
        dx, dW, db = linear_backward(dy, cache)
        return dx, -dW, db

    result = check_op("Linear sign flip", linear_forward, wrong, _linear_inputs(rng),
                      ["x", "W", "b"], rng=rng)
    assert not result.passed and result.worst() == "W" and result.errors["W"] > 0.5


def test_wrong_scale_is_caught():
    rng = np.random.default_rng(0)

    def wrong(dy, cache):
        dx, dW, db = linear_backward(dy, cache)
        return dx, dW, 2 * db

    result = check_op("Linear bias x2", linear_forward, wrong, _linear_inputs(rng),
                      ["x", "W", "b"], rng=rng)
    assert not result.passed and result.errors["b"] > 0.1
    assert result.errors["W"] < 1e-7  # the correct parts still pass


def test_op_check_requires_every_named_gradient():
    rng = np.random.default_rng(0)

    def forgets_db(dy, cache):
        return linear_backward(dy, cache)[:2]

    with pytest.raises(ValueError, match=r"backward returned 2 gradients, expected 3 \(x, W, b\)"):
        check_op("Linear without db", linear_forward, forgets_db, _linear_inputs(rng),
                 ["x", "W", "b"], rng=rng)


def test_missing_term_in_kl_is_caught():
    rng = np.random.default_rng(0)

    def wrong(dkl, cache):
        mu, var = cache
        d = dkl[:, None]
        return d * mu, d * 0.5 * var  # forgot the -1 of d/dlogvar

    result = check_op("KL missing term", losses.gaussian_kl_forward, wrong,
                      {"mu": rng.standard_normal((4, 3)), "logvar": rng.standard_normal((4, 3))},
                      ["mu", "logvar"], rng=rng)
    assert not result.passed and result.errors["logvar"] > 1e-2


def test_sampler_missing_half_is_caught():
    rng = np.random.default_rng(0)
    eps = rng.standard_normal((1, 4, 3))

    def wrong(dz, cache):
        e, sigma = cache
        dz = dz.reshape(e.shape)
        return dz.sum(0), (dz * e).sum(0) * sigma  # d sigma/d logvar is sigma/2, not sigma

    result = check_op("sampler scale", lambda mu, logvar: reparameterize_forward(mu, logvar, eps),
                      wrong, {"mu": rng.standard_normal((4, 3)),
                              "logvar": rng.standard_normal((4, 3))}, ["mu", "logvar"], rng=rng)
    assert not result.passed and result.errors["logvar"] > 0.1


def test_wrong_activation_derivative_is_caught():
    rng = np.random.default_rng(0)
    result = check_op("sigmoid", A.sigmoid_forward, lambda dy, y: dy * y * (1 + y),
                      {"x": rng.standard_normal((3, 4))}, ["x"], rng=rng)
    assert not result.passed


def _channels_last_check(name, layer, rng):
    x = np.ascontiguousarray(rng.standard_normal((2, 4, 5, 3))).transpose(0, 3, 1, 2)
    x[np.abs(x) < 0.1] = 0.5                       # away from the ReLU kink
    return check_module(name, layer, x, rng=rng)


def test_wrong_relu_kernel_is_caught(monkeypatch):
    from scratchvae.layers import ReLU
    assert _channels_last_check("ReLU", ReLU(), np.random.default_rng(0)).passed
    monkeypatch.setattr(A.kernels, "relu_backward", lambda dy, y: dy * 1.0)   # no mask
    assert not _channels_last_check("ReLU", ReLU(), np.random.default_rng(0)).passed


def test_channels_last_relu_check_runs_the_relu_kernel(monkeypatch):
    """The catalogue's "ReLU (channels-last input)" check hands backward a gradient in
    the output's layout, so the one-pass kernel (not the mixed-layout fallback) runs."""
    import kernels.relu as K
    from scratchvae.checks import run_checks
    calls = []
    kernel = K._relu_backward_cpu
    monkeypatch.setattr(K, "_relu_backward_cpu", lambda *a: (calls.append(1), kernel(*a)))
    monkeypatch.delenv("SCRATCHVAE_KERNELS", raising=False)
    [result] = run_checks(only="ReLU (channels-last input)")
    assert result.passed and calls


def test_flatten_backward_in_the_wrong_order_is_caught(monkeypatch):
    """A layout bug: reading the flat gradient in the input's memory order
    (h, w, c) instead of the logical (c, h, w) order."""
    from scratchvae.layers import Flatten
    from scratchvae.ops import shape as S
    assert _channels_last_check("Flatten", Flatten(), np.random.default_rng(0)).passed

    def memory_order_bug(dy, cache):
        (n, c, h, w), _ = cache
        return dy.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    monkeypatch.setattr(S, "flatten_backward", memory_order_bug)
    assert not _channels_last_check("Flatten", Flatten(), np.random.default_rng(0)).passed


def _vae_model_check(rng):
    model = mlp_vae(image_shape=(1, 3, 4), hidden_dim=7, latent_dim=3, rng=rng, dtype=np.float64)
    x = rng.random((3, 1, 3, 4))
    eps = rng.standard_normal((1, 3, 3))
    return check_model("vae", model, x, rng=rng, loss_kwargs={"eps": eps})


def test_whole_model_check_catches_wrong_kl_backward(monkeypatch):
    assert _vae_model_check(np.random.default_rng(0)).passed
    real = losses.gaussian_kl_backward
    monkeypatch.setattr(vae_module.losses, "gaussian_kl_backward",
                        lambda dkl, cache: tuple(2 * g for g in real(dkl, cache)))
    result = _vae_model_check(np.random.default_rng(0))
    assert not result.passed
    # only the encoder receives the KL gradient: the decoder still checks out
    assert result.errors["decoder.layers.2.weight"] < 1e-7
    assert result.errors["encoder.layers.3.weight"] > 1e-3


def test_whole_model_check_catches_wrong_sampler_backward(monkeypatch):
    def no_logvar_path(dz, cache):
        dmu, dlogvar = reparameterize_backward(dz, cache)
        return dmu, 0 * dlogvar

    monkeypatch.setattr(vae_module, "reparameterize_backward", no_logvar_path)
    result = _vae_model_check(np.random.default_rng(0))
    assert not result.passed


def test_model_check_requires_every_parameter_to_get_a_gradient(monkeypatch):
    rng = np.random.default_rng(0)
    model = mlp_vae(image_shape=(1, 3, 4), hidden_dim=7, latent_dim=3, rng=rng, dtype=np.float64)
    monkeypatch.setattr(Linear, "backward",
                        lambda self, dy: linear_backward(dy, self.cache)[0])  # forgets params
    with pytest.raises(ValueError, match="no gradient"):
        check_model("vae", model, rng.random((3, 1, 3, 4)), rng=rng,
                    loss_kwargs={"eps": rng.standard_normal((1, 3, 3))})

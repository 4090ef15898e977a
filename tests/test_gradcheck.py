"""The finite-difference check itself (scratchvae/gradcheck/core.py): its
error measure, its arguments, and that it catches deliberately wrong
backward passes (a check that cannot fail is no check). The registry's
checks and generated tests are in tests/test_op_specs.py."""
import numpy as np
import pytest

from scratchvae import losses
from scratchvae.gradcheck import (check_model, check_module, check_op, gradcheck,
                                  relative_error, run_checks)
from scratchvae.layers import Linear
from scratchvae.models import mlp_vae, vae as vae_module
from scratchvae.ops import activations as A
from scratchvae.ops.linear import linear_backward, linear_forward
from scratchvae.ops.sampler import reparameterize_backward, reparameterize_forward


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


def test_op_check_lays_out_the_upstream_gradient():
    """``layout`` hands backward G in that memory layout (the values unchanged),
    so a backward that misreads a channels-last dy is caught."""
    from scratchvae.gradcheck.problems import channels_last
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5))
    seen = []

    def tanh_backward(dy, y):
        seen.append(dy.flags.c_contiguous)
        return A.tanh_backward(dy, y)
    assert check_op("tanh", A.tanh_forward, tanh_backward, {"x": x}, ["x"], rng=rng,
                    layout=channels_last).passed
    assert seen == [False]

    def misreads_memory(dy, y):   # dy's memory taken as C-ordered
        return A.tanh_backward(np.ravel(dy, order="K").reshape(dy.shape), y)
    assert check_op("tanh", A.tanh_forward, misreads_memory, {"x": x}, ["x"],
                    rng=np.random.default_rng(0)).passed
    assert not check_op("tanh", A.tanh_forward, misreads_memory, {"x": x}, ["x"],
                        rng=np.random.default_rng(0), layout=channels_last).passed


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

    def memory_order_bug(dy, cache, input_relu=False):
        n, c, h, w = cache[0].shape
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

"""Op behaviour beyond gradients: clear errors, stability, the sampler's
distribution, and initialisation as in PyTorch."""
import numpy as np
import pytest

from scratchvae import losses
from scratchvae.layers import Concat, Linear, Reshape, Sequential, ReLU
from scratchvae.ops import activations as A
from scratchvae.ops.linear import linear_forward
from scratchvae.ops.sampler import draw_eps, reparameterize_forward


def test_linear_wrong_shape_names_op_and_shapes():
    layer = Linear(5, 3, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"Linear: expected input of shape \(\*, 5\), got \(2, 4\)"):
        layer.forward(np.zeros((2, 4), np.float32))


def test_linear_wrong_dtype():
    layer = Linear(5, 3, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="Linear: expected input of dtype float32.*got float64"):
        layer.forward(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="float32 or float64, got uint8"):
        layer.forward(np.zeros((2, 5), np.uint8))


def test_backward_rejects_wrong_upstream_shape():
    layer = Linear(5, 3, rng=np.random.default_rng(0))
    layer.forward(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"Linear.backward: expected upstream gradient of shape \(2, 3\)"):
        layer.backward(np.zeros((2, 4), np.float32))


def test_shape_ops_errors():
    with pytest.raises(ValueError, match="Reshape: expected an input with 12 values"):
        Reshape(3, 4).forward(np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match="Concat: expected input 1 to match input 0"):
        Concat().forward([np.zeros((2, 3)), np.zeros((3, 3))])


def test_loss_errors():
    with pytest.raises(ValueError, match="BernoulliNLL: expected targets of shape"):
        losses.bernoulli_nll_forward(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="GaussianNLL: expected a variance > 0"):
        losses.gaussian_nll_forward(np.zeros((2, 3)), np.zeros((2, 3)), variance=0.0)
    with pytest.raises(ValueError, match="GaussianNLLLearned: expected logvar of shape"):
        losses.gaussian_nll_learned_forward(np.zeros((2, 3)), np.zeros((3,)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="Reparameterize: expected eps of shape"):
        reparameterize_forward(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((1, 3, 2)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_is_stable_for_huge_logits(dtype):
    logits = np.array([[1e4, -1e4, 50.0, -50.0, 0.0]], dtype=dtype)
    x = np.array([[0.0, 1.0, 1.0, 0.0, 0.5]], dtype=dtype)
    for fused in (False, True):
        nll, cache = losses.bernoulli_nll_forward(logits, x, fused_grad=fused)
        # exact: 1e4 + 1e4 + log1p(e^-50) * 2 + log 2
        expected = 2e4 + 2 * np.log1p(np.exp(-50.0)) + np.log(2.0)
        assert np.isfinite(nll).all()
        assert nll[0] == pytest.approx(expected, rel=1e-6)
        g = losses.bernoulli_nll_backward(np.ones(1, dtype), cache)
        assert np.allclose(g, [[1.0, -1.0, 0.0, 0.0, 0.0]], atol=1e-6)


def test_sigmoid_does_not_overflow():
    with np.errstate(over="raise"):
        y, _ = A.sigmoid_forward(np.array([-1e4, 0.0, 1e4]))
    assert np.allclose(y, [0.0, 0.5, 1.0])


def test_sampler_uses_standard_deviation_not_variance():
    """z = mu + exp(logvar/2) eps: with logvar = log 4 the samples have std 2 (not 4)."""
    rng = np.random.default_rng(0)
    n = 200_000
    mu = np.full((1, 2), [1.0, -3.0])
    logvar = np.log(np.full((1, 2), [4.0, 0.25]))
    eps = draw_eps(rng, n, mu)
    z, _ = reparameterize_forward(mu, logvar, eps)
    assert z.shape == (n, 2)
    se = 4 * np.array([2.0, 0.5]) / np.sqrt(n)
    assert np.all(np.abs(z.mean(0) - mu[0]) < se)
    assert np.allclose(z.std(0), [2.0, 0.5], rtol=0.01)


def test_sampler_layout_of_L_samples():
    mu, logvar = np.arange(6.0).reshape(3, 2), np.zeros((3, 2))
    eps = np.stack([np.zeros((3, 2)), np.ones((3, 2))])
    z, _ = reparameterize_forward(mu, logvar, eps)
    assert np.array_equal(z[:3], mu) and np.array_equal(z[3:], mu + 1)


def test_linear_init_matches_pytorch_bounds():
    layer = Linear(400, 300, rng=np.random.default_rng(0))
    bound = 1 / np.sqrt(400)
    for p in (layer.weight.data, layer.bias.data):
        assert p.dtype == np.float32
        assert p.min() >= -bound and p.max() <= bound
        assert p.max() > 0.95 * bound and p.min() < -0.95 * bound
    assert layer.weight.data.shape == (300, 400)  # PyTorch layout (out, in)


def test_linear_matches_torch_when_available():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    layer = Linear(7, 4, rng=rng, dtype=np.float64)
    x = rng.standard_normal((5, 7))
    ref = torch.nn.functional.linear(torch.tensor(x), torch.tensor(layer.weight.data),
                                     torch.tensor(layer.bias.data)).numpy()
    assert np.allclose(layer.forward(x), ref, atol=1e-12)


def test_relu_kink_gets_zero_gradient():
    y, cache = A.relu_forward(np.array([-1.0, 0.0, 2.0]))
    assert np.array_equal(A.relu_backward(np.ones(3), cache), [0.0, 0.0, 1.0])


def test_sequential_backward_runs_in_reverse():
    rng = np.random.default_rng(0)
    net = Sequential(Linear(3, 4, rng=rng, dtype=np.float64), ReLU(),
                     Linear(4, 2, rng=rng, dtype=np.float64))
    x = rng.standard_normal((5, 3))
    out = net.forward(x)
    dx = net.backward(np.ones_like(out))
    assert dx.shape == x.shape
    assert [name for name, _ in net.named_parameters()] == [
        "layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]


def test_linear_forward_is_functional():
    rng = np.random.default_rng(0)
    x, W, b = rng.standard_normal((2, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    y, cache = linear_forward(x, W, b)
    assert np.allclose(y, x @ W.T + b)
    assert len(cache) == 2  # only x and W: backward needs nothing else


@pytest.mark.parametrize("layout", ["C", "channels-last"])
def test_flatten_gradient_keeps_the_input_layout(layout):
    """Flatten emits the logical (c, h, w) order, as PyTorch does, and hands the
    gradient back in the input's memory layout (channels-last for a conv output)."""
    from scratchvae.layers import Flatten
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    if layout == "channels-last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    f = Flatten()
    y = f.forward(x)
    np.testing.assert_array_equal(y, np.arange(120, dtype=np.float32).reshape(2, 60))
    dy = np.random.default_rng(0).standard_normal((2, 60)).astype(np.float32)
    dx = f.backward(dy)
    np.testing.assert_array_equal(dx, dy.reshape(2, 3, 4, 5))
    assert dx.strides == x.strides

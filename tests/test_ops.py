"""Op behaviour beyond gradients: clear errors, stability, the sampler's
distribution, and initialisation as in PyTorch."""
import numpy as np
import pytest

from scratchvae import layers, losses
from scratchvae.layers import (ClassBias, Concat, Conv2d, ConvTranspose2d, Embedding, Flatten,
                               Gate, LeakyReLU, Linear, MaskedConv2d, Module, Reshape, ReLU,
                               Sequential, Sigmoid, Tanh)
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


@pytest.mark.parametrize("make, message", [
    (lambda: Linear(0, 3), "Linear: expected in_features to be an int >= 1, got 0"),
    (lambda: Linear(-2, 3), "Linear: expected in_features to be an int >= 1, got -2"),
    (lambda: Linear(5, 0), "Linear: expected out_features to be an int >= 1, got 0"),
    (lambda: Linear(5, 2.5), "Linear: expected out_features to be an int >= 1, got 2.5"),
    (lambda: Linear(False, 3), "Linear: expected in_features to be an int >= 1, got False"),
])
def test_linear_rejects_bad_feature_counts(make, message):
    with pytest.raises(ValueError) as e:
        make()
    assert str(e.value) == message
    assert Linear(np.int64(5), np.int32(3), rng=np.random.default_rng(0)).weight.shape == (3, 5)


def _image(*shape):
    return np.ones(shape, np.float32)


#: every layer that keeps a forward cache: (build it, the arguments of its forward)
LAYERS_WITH_A_CACHE = {
    Linear: (lambda: Linear(4, 3, rng=np.random.default_rng(0)), lambda: (_image(2, 4),)),
    ReLU: (ReLU, lambda: (_image(2, 4),)),
    LeakyReLU: (LeakyReLU, lambda: (_image(2, 4),)),
    Sigmoid: (Sigmoid, lambda: (_image(2, 4),)),
    Tanh: (Tanh, lambda: (_image(2, 4),)),
    Gate: (Gate, lambda: (_image(2, 4),)),
    Flatten: (Flatten, lambda: (_image(2, 3, 4),)),
    Reshape: (lambda: Reshape(3, 4), lambda: (_image(2, 12),)),
    Concat: (Concat, lambda: ([_image(2, 3), _image(2, 1)],)),
    Conv2d: (lambda: Conv2d(2, 3, 3, padding=1, rng=np.random.default_rng(0)),
             lambda: (_image(2, 2, 5, 4),)),
    ConvTranspose2d: (lambda: ConvTranspose2d(2, 3, 3, stride=2, rng=np.random.default_rng(0)),
                      lambda: (_image(2, 2, 3, 4),)),
    MaskedConv2d: (lambda: MaskedConv2d(2, 3, 3, "A", rng=np.random.default_rng(0)),
                   lambda: (_image(2, 2, 5, 4),)),
    Embedding: (lambda: Embedding(5, 3, rng=np.random.default_rng(0)),
                lambda: (np.array([[0, 4], [2, 2]]),)),
    ClassBias: (lambda: ClassBias(4, 3, rng=np.random.default_rng(0)),
                lambda: (_image(2, 3, 2, 2), np.array([1, 3]))),
}


def test_every_layer_with_a_cache_is_listed():
    exported = {getattr(layers, name) for name in layers.__all__}
    modules = {c for c in exported if isinstance(c, type) and issubclass(c, Module)}
    assert modules - {Module, Sequential} == set(LAYERS_WITH_A_CACHE)


@pytest.mark.parametrize("cls", list(LAYERS_WITH_A_CACHE), ids=lambda c: c.__name__)
def test_backward_before_forward_is_a_clear_error(cls):
    make, inputs = LAYERS_WITH_A_CACHE[cls]
    layer = make()
    y = make().forward(*inputs())               # an upstream gradient of the right shape
    with pytest.raises(RuntimeError) as e:
        layer.backward(np.ones_like(y))
    assert str(e.value) == f"{cls.__name__}.backward: call forward first"
    layer.forward(*inputs())
    layer.backward(np.ones_like(y))             # after a forward it works


def test_sequential_backward_before_forward_names_its_last_layer():
    net = Sequential(Linear(4, 3, rng=np.random.default_rng(0)), Tanh())
    with pytest.raises(RuntimeError, match=r"^Tanh\.backward: call forward first$"):
        net.backward(np.ones((2, 3), np.float32))


def test_parameters_need_an_explicit_generator():
    from scratchvae.layers import Conv2d, ConvTranspose2d
    from scratchvae.models.vq_vae import VectorQuantizer

    for name, make in [("Linear", lambda rng: Linear(4, 3, rng=rng)),
                       ("Conv2d", lambda rng: Conv2d(1, 2, 3, rng=rng)),
                       ("ConvTranspose2d", lambda rng: ConvTranspose2d(2, 1, 3, rng=rng)),
                       ("VectorQuantizer", lambda rng: VectorQuantizer(4, 2, rng=rng))]:
        for bad in (None, 0, np.random.RandomState(0)):
            with pytest.raises(ValueError, match=f"^{name}: expected rng, a seeded "
                                                 f"numpy.random.Generator"):
                make(bad)
        a, b = make(np.random.default_rng(7)), make(np.random.default_rng(7))
        assert all(np.array_equal(p.data, q.data)
                   for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_shape_ops_errors():
    with pytest.raises(ValueError, match="Reshape: expected an input with 12 values"):
        Reshape(3, 4).forward(np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match="Concat: expected input 1 to match input 0"):
        Concat().forward([np.zeros((2, 3)), np.zeros((3, 3))])


def test_backward_rejects_wrong_upstream_dtype():
    linear = Linear(5, 3, rng=np.random.default_rng(0))
    linear.forward(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="Linear.backward: expected upstream gradient of "
                                         "dtype float32.*got float64"):
        linear.backward(np.zeros((2, 3)))
    leaky = LeakyReLU()
    leaky.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="LeakyReLU.backward: expected upstream gradient of "
                                         "dtype float32.*got float64"):
        leaky.backward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"LeakyReLU.backward: expected upstream gradient of "
                                         r"shape \(2, 3\)"):
        leaky.backward(np.zeros((3, 2), np.float32))


def test_shape_ops_backward_errors():
    flat = Flatten()
    flat.forward(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"Flatten.backward: expected upstream gradient of "
                                         r"shape \(2, 12\), got \(3, 8\)"):
        flat.backward(np.zeros((3, 8)))
    with pytest.raises(ValueError, match="Flatten: expected an input .* got shape \\(5,\\)"):
        Flatten().forward(np.zeros(5))
    reshape = Reshape(3, 4)
    reshape.forward(np.zeros((2, 12)))
    with pytest.raises(ValueError, match=r"Reshape.backward: expected upstream gradient of "
                                         r"shape \(2, 3, 4\), got \(2, 4, 3\)"):
        reshape.backward(np.zeros((2, 4, 3)))
    concat = Concat()
    concat.forward([np.zeros((2, 3)), np.zeros((2, 2))])
    with pytest.raises(ValueError, match=r"Concat.backward: expected upstream gradient of "
                                         r"shape \(2, 5\), got \(3, 5\)"):
        concat.backward(np.zeros((3, 5)))


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


@pytest.mark.parametrize("fused", [False, True])
def test_bce_backward_is_pure(fused):
    """Backward may be called twice on one cache: same result, no shared memory."""
    rng = np.random.default_rng(0)
    logits, x = rng.standard_normal((3, 4)), rng.random((3, 4))
    _, cache = losses.bernoulli_nll_forward(logits, x, fused_grad=fused)
    first = losses.bernoulli_nll_backward(np.array([0.5, 1.0, 2.0]), cache)
    kept = first.copy()
    second = losses.bernoulli_nll_backward(np.array([0.5, 1.0, 2.0]), cache)
    assert np.array_equal(first, kept) and np.array_equal(second, kept)
    first[...] = 0                                 # the caller owns its gradient
    third = losses.bernoulli_nll_backward(np.array([0.5, 1.0, 2.0]), cache)
    assert np.array_equal(third, kept)
    expected = np.array([0.5, 1.0, 2.0])[:, None] * (1 / (1 + np.exp(-logits)) - x)
    assert np.allclose(kept, expected, rtol=1e-12, atol=1e-12)


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


@pytest.mark.parametrize("layout", ["C", "channels-last"])
def test_relu_in_place_overwrites_its_input_and_agrees(layout):
    """ReLU(inplace=True) returns its input's memory, holding what ReLU() returns,
    and its backward gives the same gradient."""
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 5)).astype(np.float32)
    if layout == "channels-last":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    dy = np.random.default_rng(4).standard_normal(x.shape).astype(np.float32)
    plain, in_place = layers.ReLU(), layers.ReLU(inplace=True)
    expected = plain.forward(x)
    assert not np.shares_memory(expected, x)
    y = in_place.forward(x)
    assert y is x and repr(in_place) == "ReLU(inplace=True)"
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(in_place.backward(dy), plain.backward(dy))


def test_sequential_backward_runs_in_reverse():
    rng = np.random.default_rng(0)
    net = Sequential(Linear(3, 4, rng=rng, dtype=np.float64), ReLU(),
                     Linear(4, 2, rng=rng, dtype=np.float64))
    x = rng.standard_normal((5, 3))
    out = net.forward(x)
    dy = rng.standard_normal(out.shape)
    dx = net.backward(dy)
    assert [name for name, _ in net.named_parameters()] == [
        "layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]
    # the chain written out by hand: last layer first
    (W1, b1), (W2, b2) = ((lin.weight.data, lin.bias.data) for lin in (net[0], net[2]))
    h = x @ W1.T + b1
    r = np.maximum(h, 0)
    dr = dy @ W2
    dh = dr * (h > 0)
    np.testing.assert_allclose(dx, dh @ W1, rtol=1e-12)
    np.testing.assert_allclose(net[2].weight.grad, dy.T @ r, rtol=1e-12)
    np.testing.assert_allclose(net[0].weight.grad, dh.T @ x, rtol=1e-12)
    np.testing.assert_allclose(net[0].bias.grad, dh.sum(0), rtol=1e-12)


def test_linear_forward_is_functional():
    rng = np.random.default_rng(0)
    x, W, b = rng.standard_normal((2, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    y, cache = linear_forward(x, W, b)
    assert np.allclose(y, x @ W.T + b)
    assert len(cache) == 2  # only x and W: backward needs nothing else


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_relu_option_is_the_relu_of_its_output_bit_for_bit(dtype):
    """relu=True: max(x W^T + b, 0) from one bias pass; without a bias too."""
    from kernels.relu import relu_forward
    rng = np.random.default_rng(1)
    x, W, b = (rng.standard_normal(s).astype(dtype) for s in ((64, 40), (50, 40), (50,)))
    for bias in (b, None):
        y, cache = linear_forward(x, W, bias)
        y_relu, cache_relu = linear_forward(x, W, bias, relu=True)
        np.testing.assert_array_equal(y_relu.view(np.uint8), relu_forward(y).view(np.uint8))
        assert cache_relu[0] is x and cache_relu[1] is W


@pytest.mark.parametrize("layout", ["C", "channels-last"])
@pytest.mark.parametrize("op", ["flatten", "reshape"])
def test_shape_ops_through_a_relu_are_relu_backward_bit_for_bit(op, layout):
    """input_relu=True: the plain backward, then the ReLU's backward with the cached
    input as the ReLU's output, in one copy; the gradient in the plain one's layout."""
    from kernels.relu import relu_backward
    from scratchvae.ops import shape as S
    rng = np.random.default_rng(2)
    def laid_out(a):
        if layout == "C":
            return a
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    image = laid_out(np.maximum(rng.standard_normal((3, 4, 5, 6)), 0).astype(np.float32))
    if op == "flatten":
        x, forward, backward = image, S.flatten_forward, S.flatten_backward
    else:                        # (N, 120) rows -> images; the gradient in the image's layout
        x = np.ascontiguousarray(image).reshape(3, 120)
        forward, backward = (lambda v: S.reshape_forward(v, (4, 5, 6))), S.reshape_backward
    y, cache = forward(x)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    if op == "reshape":          # as a convolution hands it back
        dy = laid_out(dy)
    plain = backward(dy, cache)
    fused = backward(dy, cache, input_relu=True)
    want = relu_backward(plain, x)
    assert fused.shape == plain.shape == x.shape and fused.strides == plain.strides
    np.testing.assert_array_equal(fused.view(np.uint32), want.view(np.uint32))


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

"""The gated PixelCNN prior (scratchvae/models/pixelcnn.py): its autoregressive
property through the engine's own backward, its whole-model gradient check
(the registry's entry) and its errors."""
import numpy as np
import pytest

from scratchvae.gradcheck.registry import REGISTRY
from scratchvae.layers import Conv2d, MaskedConv2d, Module, ReLU
from scratchvae.models import PixelCNN, pixelcnn
from scratchvae.models.pixelcnn import multiply_adds

H = W = 7


def dependence(forward, backward, channels, num_codes, seed=0):
    """D[p, q] = True where output p's logits have a non-zero gradient w.r.t.
    the embedded input at position q (a random upstream gradient at p only)."""
    rng = np.random.default_rng(seed)
    D = np.zeros((H * W, H * W), dtype=bool)
    for p in range(H * W):
        forward(rng.standard_normal((1, channels, H, W)))
        dlogits = np.zeros((1, num_codes, H, W))
        dlogits[0, :, p // W, p % W] = rng.standard_normal(num_codes)
        de = backward(dlogits)
        D[p] = (de[0] != 0).any(axis=0).reshape(-1)
    return D


def autoregressive_violations(D):
    """(p, q) pairs that break the rule: q >= p read, or q < p not read."""
    before = np.tril(np.ones_like(D), k=-1)      # before[p, q] = q < p
    return np.argwhere(D != before)


def prior_dependence(model):
    return dependence(model.forward_embedded, model.backward_embedded, model.channels,
                      model.num_codes)


def test_default_prior_is_autoregressive_without_blind_spot():
    model = pixelcnn(dtype=np.float64)
    assert autoregressive_violations(prior_dependence(model)).size == 0


def test_check_fails_when_the_first_layer_reads_the_current_code():
    model = PixelCNN(128, 64, 6, 3, first_type="B", rng=np.random.default_rng(0),
                     dtype=np.float64)
    D = prior_dependence(model)
    bad = autoregressive_violations(D)
    assert len(bad) == H * W and (bad[:, 0] == bad[:, 1]).all()   # every p reads itself


class SingleStack(Module):
    """A PixelCNN with one stack of masked convolutions (A then B, 3x3, ReLU):
    the design with the blind spot up and to the right of each pixel."""

    def __init__(self, channels, layers, num_codes, rng):
        kw = dict(rng=rng, dtype=np.float64)
        self.modules = [MaskedConv2d(channels, channels, 3, "A", **kw)]
        for _ in range(layers - 1):
            self.modules += [ReLU(), MaskedConv2d(channels, channels, 3, "B", **kw)]
        self.modules += [ReLU(), Conv2d(channels, num_codes, 1, **kw)]

    def forward(self, x):
        for m in self.modules:
            x = m.forward(x)
        return x

    def backward(self, dy):
        for m in reversed(self.modules):
            dy = m.backward(dy)
        return dy


def test_check_fails_on_the_blind_spot_design():
    model = SingleStack(16, 6, 10, np.random.default_rng(0))
    D = dependence(model.forward, model.backward, 16, 10)
    assert not np.triu(D).any()                      # causal ...
    missed = autoregressive_violations(D)
    assert len(missed) > 0                           # ... but blind to some q < p
    p, q = missed[0]
    assert q < p and not D[p, q]


def test_a_shallow_prior_does_not_cover_the_map():
    """5 layers of r = 1 reach 5 columns to the right: the corner is missed."""
    model = PixelCNN(10, 8, 5, 3, rng=np.random.default_rng(0), dtype=np.float64)
    D = prior_dependence(model)
    assert not np.triu(D).any()
    assert not D[W, W - 1]                           # (1, 0) does not read (0, 6)


def test_defaults_size():
    model = pixelcnn()
    assert model.num_parameters() == 564_416
    assert multiply_adds(model) == 27_095_040
    logits = model.logits(np.zeros((2, H, W), dtype=np.int64))
    assert logits.shape == (2, 128, H, W) and logits.dtype == np.float32


@pytest.mark.parametrize("check", REGISTRY["pixelcnn"].checks, ids=lambda c: c.name)
def test_whole_model_gradcheck(check):
    assert check.run(np.random.default_rng(0)).passed


def test_the_whole_model_gradcheck_catches_a_wrong_backward(monkeypatch):
    """The residual's identity path dropped from the backward: the check fails."""
    import sys

    module = sys.modules[PixelCNN.__module__]        # models.pixelcnn names the builder
    right = module.GatedLayer.backward

    def without_residual(self, dv_next, dh_next, dskip):
        first, self.first = self.first, True       # as if the layer had no residual
        try:
            return right(self, dv_next, dh_next, dskip)
        finally:
            self.first = first

    monkeypatch.setattr(module.GatedLayer, "backward", without_residual)
    result = REGISTRY["pixelcnn"].checks[0].run(np.random.default_rng(0))
    assert not result.passed and result.max_error > 1e-3


def test_loss_parts_and_gradients_reach_every_parameter():
    model = pixelcnn(num_codes=6, channels=4, layers=2, n_classes=3,
                     rng=np.random.default_rng(1), dtype=np.float64)
    codes = np.random.default_rng(2).integers(0, 6, size=(4, 3, 5))
    loss, parts = model.loss(codes, labels=np.array([0, 2, 1, 2]))
    assert np.isclose(loss, parts["nll_per_map"].mean())
    assert np.isclose(parts["bits_per_code"], loss / 15 / np.log(2))
    model.backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(RuntimeError, match="PixelCNN.backward"):
        model.backward()


@pytest.mark.parametrize("codes, labels, message", [
    (np.full((2, 7, 7), 5), None, r"codes in \[0, 5\)"),
    (np.full((2, 7, 7), -1), None, r"codes in \[0, 5\)"),
    (np.zeros((2, 7, 7)), None, "integer codes"),
    (np.zeros((2, 49), dtype=np.int64), None, r"codes of shape \(N, H, W\)"),
])
def test_bad_codes(codes, labels, message):
    model = pixelcnn(num_codes=5, channels=4, layers=2)
    with pytest.raises(ValueError, match="PixelCNN.loss: expected " + message):
        model.loss(codes, labels)


def test_bad_labels():
    model = pixelcnn(num_codes=5, channels=4, layers=2, n_classes=3)
    codes = np.zeros((2, 7, 7), dtype=np.int64)
    with pytest.raises(ValueError, match=r"PixelCNN.loss: expected labels in \[0, 3\)"):
        model.loss(codes, np.array([0, 3]))
    with pytest.raises(ValueError, match="PixelCNN.loss: this prior is class-conditional"):
        model.loss(codes)
    with pytest.raises(ValueError, match="PixelCNN.loss: expected integer labels"):
        model.loss(codes, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="PixelCNN.logits: this prior has no classes"):
        pixelcnn(num_codes=5, channels=4, layers=2).logits(codes, np.array([0, 1]))


def test_bad_construction():
    with pytest.raises(ValueError, match="PixelCNN: expected an odd kernel"):
        pixelcnn(kernel=4)
    with pytest.raises(ValueError, match="PixelCNN: expected first_type"):
        PixelCNN(5, 4, 2, 3, first_type="C", rng=np.random.default_rng(0))

"""Softmax cross-entropy and the CNN classifier."""
import numpy as np
import pytest

from scratchvae import losses
from scratchvae.gradcheck import check_op
from scratchvae.models import build_model
from scratchvae.optimizers import Adam


def test_softmax_ce_matches_torch_and_is_stable():
    logits = np.array([[1e4, 0.0, -1e4], [1.0, 2.0, 3.0]])
    labels = np.array([1, 2])
    ce, cache = losses.softmax_cross_entropy_forward(logits, labels)
    assert np.allclose(ce, [1e4, np.log(np.exp([-2.0, -1.0, 0.0]).sum())])
    g = losses.softmax_cross_entropy_backward(np.ones(2), cache)
    assert np.allclose(g.sum(axis=1), 0)  # softmax minus one-hot sums to zero
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((6, 5))
    y = np.array([0, 4, 2, 2, 1, 3])
    ref = torch.nn.functional.cross_entropy(torch.tensor(x), torch.tensor(y), reduction="none")
    assert np.allclose(losses.softmax_cross_entropy_forward(x, y)[0], ref.numpy(), atol=1e-12)


@pytest.mark.parametrize("labels,needle", [
    (np.array([0, 3]), r"labels in \[0, 3\)"), (np.array([0.0, 1.0]), "integer labels"),
    (np.array([0]), r"expected labels of shape \(2,\)")])
def test_softmax_ce_rejects_bad_labels(labels, needle):
    with pytest.raises(ValueError, match=needle):
        losses.softmax_cross_entropy_forward(np.zeros((2, 3)), labels)


def test_wrong_softmax_backward_is_caught():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=5)

    def wrong(dce, cache):  # forgot the one-hot term
        p, _ = cache
        return dce[:, None] * p

    result = check_op("CE without one-hot", lambda logits: losses.softmax_cross_entropy_forward(
        logits, labels), wrong, {"logits": rng.standard_normal((5, 4))}, ["logits"], rng=rng)
    assert not result.passed


def test_classifier_learns_a_toy_problem():
    rng = np.random.default_rng(0)
    model = build_model("classifier", image_shape=(1, 8, 8), num_classes=2, hidden_dim=16,
                        channels=(4, 8), rng=rng)
    x = np.zeros((64, 1, 8, 8), np.float32)
    y = rng.integers(0, 2, size=64)
    x[y == 1, :, :4] = 1.0  # class 1: top half lit
    x += 0.1 * rng.random(x.shape).astype(np.float32)
    opt = Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        model.loss(x, labels=y)
        model.backward()
        opt.step()
    metrics = model.test_metrics(x, y, batch_size=16)
    assert metrics["test_accuracy"] == 1.0 and metrics["test_nll"] < 0.1
    with pytest.raises(ValueError, match="expected labels"):
        model.loss(x)

"""A small CNN classifier, trained with the engine itself; it scores the class
of images drawn by a conditional VAE.

    Conv(1,32,4,2,1) ReLU Conv(32,64,4,2,1) ReLU Flatten
    Linear(64*7*7, 128) ReLU Linear(128, 10) -> logits

features(x) is the 128-wide ReLU output before the last Linear (the
penultimate layer, scratchvae/quality.py's feature space); logits(x) =
the last Linear applied to it.

loss = mean_n CE(logits_n, y_n) (softmax cross-entropy).
"""
import numpy as np

from .. import losses
from ..backend import check_float, check_shape
from ..layers import Linear, Module, ReLU, Sequential
from .conv_vae import conv_features


class Classifier(Module):
    """Images (N, C, H, W) -> class logits (N, K); same model protocol as the VAEs."""

    def __init__(self, net, image_shape, num_classes):
        self.net = net.no_input_grad()
        self.image_shape = tuple(image_shape)
        self.num_classes = int(num_classes)
        self.param_dtype = net.dtype
        self._cache = None

    def features(self, x):
        """The penultimate layer's activations (N, hidden): every layer but the last Linear."""
        check_shape("Classifier", "images", x, (None,) + self.image_shape)
        check_float("Classifier", "images", x, self.param_dtype)
        for layer in self.net.layers[:-1]:
            x = layer.forward(x)
        return x

    def logits(self, x):
        return self.net.layers[-1].forward(self.features(x))

    def predict(self, x):
        return self.logits(x).argmax(axis=1)

    def loss(self, x, rng=None, eps=None, labels=None, step=None, training=True,
             check_inputs=True):
        """Mean cross-entropy of the batch; parts hold per-image CE and correctness.
        ``check_inputs``: refuse images that are not finite (the training loop skips it)."""
        if labels is None:
            raise ValueError("Classifier.loss: expected labels (N,), got None")
        if check_inputs:
            losses.check_values("Classifier.loss", "images", x)
        out = self.logits(x)
        ce, ce_cache = losses.softmax_cross_entropy_forward(out, labels)
        n = x.shape[0]
        self._cache = (n, ce_cache)
        correct = (out.argmax(axis=1) == self.xp.asarray(labels)).astype(out.dtype)
        return ce.mean(), {"nll_per_image": ce, "correct_per_image": correct}

    def backward(self):
        """loss = mean CE -> dlogits -> the network, in reverse."""
        n, ce_cache = self._cache
        self._cache = None
        dce = self.xp.full(n, 1.0 / n, dtype=self.param_dtype)
        self.net.backward(losses.softmax_cross_entropy_backward(dce, ce_cache))

    def test_metrics(self, x, labels=None, batch_size=1000, rng=None):
        if labels is None:
            raise ValueError("Classifier.test_metrics: expected labels, got None")
        nll = correct = 0.0
        for start in range(0, x.shape[0], batch_size):
            xb = self.xp.asarray(x[start:start + batch_size])
            _, parts = self.loss(xb, labels=labels[start:start + batch_size], training=False)
            nll += float(parts["nll_per_image"].sum())
            correct += float(parts["correct_per_image"].sum())
        self._cache = None
        return {"test_accuracy": correct / x.shape[0], "test_nll": nll / x.shape[0]}


def cnn_classifier(image_shape=(1, 28, 28), num_classes=10, hidden_dim=128, channels=(32, 64),
                   rng=None, dtype=np.float32, **_ignored):
    """Build the classifier (``_ignored`` takes the VAE options the trainer passes)."""
    rng = np.random.default_rng(0) if rng is None else rng
    kw = dict(rng=rng, dtype=dtype)
    features, width = conv_features(image_shape, channels, **kw)
    net = Sequential(
        *features,
        Linear(width, hidden_dim, **kw), ReLU(inplace=True),
        Linear(hidden_dim, num_classes, **kw),
    )
    return Classifier(net, image_shape, num_classes)

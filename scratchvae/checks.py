"""The catalogue of gradient checks: every op, loss and model of scratchvae.

``python -m scratchvae gradcheck`` runs them all and prints each one's
largest relative error; ``tests/test_gradcheck.py`` asserts that each passes.
Each check builds a small float64 problem with fixed noise and returns a
:class:`~scratchvae.gradcheck.GradcheckResult`. Inputs of kinked functions
are kept at least 0.1 away from the kink, so that a step h = 1e-6 never
crosses it.
"""
import numpy as np

from . import losses
from .gradcheck import check_model, check_module, check_op
from .layers import (Concat, Flatten, LeakyReLU, Linear, Module, ReLU, Reshape, Sequential,
                     Sigmoid, Tanh)
from .models import cnn_classifier, conv_cvae, conv_vae, mlp_cvae, mlp_vae
from .ops.sampler import reparameterize_backward, reparameterize_forward
from .checks_vq import VQ_CHECKS
from .checks_conv import CONV_CHECKS

F64 = np.float64
SMOOTH_TOL = 1e-7
MODEL_STEP = 1e-4


def away_from_zero(rng, shape, margin=0.1):
    """Normal samples pushed at least ``margin`` away from 0 (for ReLU kinks)."""
    x = rng.standard_normal(shape)
    return x + np.sign(x) * margin


def _channels_last(x):
    """An (N, C, H, W)-shaped view of a C-contiguous (N, H, W, C) copy of x:
    the memory layout the conv ops hand to the layers after them."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _module(name, make, shape, kinked=False, channels_last=False):
    def run(rng):
        x = away_from_zero(rng, shape) if kinked else rng.standard_normal(shape)
        if channels_last:
            x = _channels_last(x)
        return check_module(name, make(rng), x, rng=rng, tol=SMOOTH_TOL)
    return name, run


def _concat(rng):
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((3, 4))
    layer = Concat(axis=1)
    return check_op("Concat", lambda a, b: (layer.forward([a, b]), None),
                    lambda dy, _: tuple(layer.backward(dy)), {"a": a, "b": b}, ["a", "b"],
                    rng=rng, tol=SMOOTH_TOL)


def _reparameterize(rng):
    mu, logvar = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    eps = rng.standard_normal((2, 4, 3))  # L = 2 samples, fixed
    return check_op("Reparameterize (L=2)",
                    lambda mu, logvar: reparameterize_forward(mu, logvar, eps),
                    reparameterize_backward, {"mu": mu, "logvar": logvar},
                    ["mu", "logvar"], rng=rng, tol=SMOOTH_TOL)


def _kl(rng):
    mu, logvar = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    return check_op("GaussianKL", losses.gaussian_kl_forward, losses.gaussian_kl_backward,
                    {"mu": mu, "logvar": logvar}, ["mu", "logvar"], rng=rng, tol=SMOOTH_TOL)


def _bernoulli(fused):
    def run(rng):
        logits = 3 * rng.standard_normal((4, 6))
        targets = rng.random((4, 6))
        return check_op(f"BernoulliNLL ({'fused kernel' if fused else 'reference'})",
                        lambda logits: losses.bernoulli_nll_forward(logits, targets, fused),
                        losses.bernoulli_nll_backward, {"logits": logits}, ["logits"],
                        rng=rng, tol=SMOOTH_TOL)
    return run


def _gaussian(rng):
    mean, x = rng.standard_normal((4, 5)), rng.random((4, 5))
    return check_op("GaussianNLL (lambda=0.3)",
                    lambda mean: losses.gaussian_nll_forward(mean, x, 0.3),
                    losses.gaussian_nll_backward, {"mean": mean}, ["mean"],
                    rng=rng, tol=SMOOTH_TOL)


def _gaussian_learned(shared):
    def run(rng):
        mean, x = rng.standard_normal((4, 5)), rng.random((4, 5))
        logvar = rng.standard_normal((1, 5) if shared else (4, 5))
        return check_op(f"GaussianNLLLearned ({'shared' if shared else 'per-sample'} logvar)",
                        lambda mean, logvar: losses.gaussian_nll_learned_forward(mean, logvar, x),
                        losses.gaussian_nll_learned_backward, {"mean": mean, "logvar": logvar},
                        ["mean", "logvar"], rng=rng, tol=SMOOTH_TOL)
    return run


def _tiny_images(rng, n=3, shape=(1, 3, 4)):
    return rng.random((n,) + shape)


def _relu_inputs_distance(model, run):
    """Smallest |input| that any ReLU of ``model`` sees while ``run()`` executes."""
    relus = [m for m in _modules(model) if isinstance(m, ReLU)]
    seen = [np.inf]
    for m in relus:
        def recording(x, m=m):
            seen.append(float(np.min(np.abs(x))))
            return ReLU.forward(m, x)
        m.forward = recording
    try:
        run()
    finally:
        for m in relus:
            del m.forward
    return min(seen)


def _modules(module):
    yield module
    for value in vars(module).values():
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, Module):
                yield from _modules(item)


def _capacity_gap(model, x, loss_kwargs):
    """|KL - C_t| of the batch under capacity annealing (inf without it)."""
    schedule = model.kl_schedule
    if not schedule.uses_capacity:
        return np.inf
    kl = float(model.loss(x, **loss_kwargs)[1]["kl"])
    return abs(kl - schedule.capacity_at(loss_kwargs.get("step")))


def _vae_check(name, L=1, build=mlp_vae, shape=(1, 3, 4), step=None, n_classes=0, **options):
    """A whole VAE loss (a small instance of the same class) w.r.t. every parameter.

    Kinks: a parameter step of h moves a ReLU input by about h |input|, so the
    problem is redrawn until every ReLU input is at least 10 h from 0 and no
    central difference straddles a kink; likewise, under capacity annealing,
    until the batch KL is at least 0.01 from the capacity C_t (the kink of
    |KL - C_t|). ``step`` goes to the KL schedule; ``n_classes`` > 0 builds a
    conditional model and draws labels.
    """
    if n_classes:
        options = dict(options, n_classes=n_classes)

    def run(rng):
        for _ in range(50):
            model = build(image_shape=shape, hidden_dim=7, latent_dim=3, rng=rng, dtype=F64,
                          n_samples=L, **options)
            x = _tiny_images(rng, 3, shape)
            eps = rng.standard_normal((L, 3, 3))
            labels = rng.integers(0, n_classes, size=3) if n_classes else None
            kwargs = {"eps": eps, "step": step, "labels": labels}
            margin = _relu_inputs_distance(model, lambda: model.loss(x, **kwargs))
            if margin > 10 * MODEL_STEP and _capacity_gap(model, x, kwargs) > 1e-2:
                break
        else:  # pragma: no cover - 50 draws all near a kink: practically impossible
            raise RuntimeError(f"{name}: could not draw a problem away from ReLU kinks")
        # A whole-model loss sums many pixels, so the round-off of a central
        # difference (~1e-16 |L| / h) is larger than for a single op; h = 1e-4
        # balances it against the O(h^2) truncation error.
        return check_model(name, model, x, rng=rng, loss_kwargs=kwargs,
                           tol=SMOOTH_TOL, h=MODEL_STEP)
    return run


CHECKS = [
    _module("Linear", lambda rng: Linear(5, 4, rng=rng, dtype=F64), (3, 5)),
    _module("ReLU", lambda rng: ReLU(), (3, 5), kinked=True),
    _module("LeakyReLU", lambda rng: LeakyReLU(0.2), (3, 5), kinked=True),
    _module("Sigmoid", lambda rng: Sigmoid(), (3, 5)),
    _module("Tanh", lambda rng: Tanh(), (3, 5)),
    _module("Flatten", lambda rng: Flatten(), (2, 3, 4)),
    # the layout a convolution produces: the ReLU kernel and Flatten's layout-keeping backward
    _module("ReLU (channels-last input)", lambda rng: ReLU(), (2, 3, 4, 5), kinked=True,
            channels_last=True),
    _module("Flatten (channels-last input)", lambda rng: Flatten(), (2, 3, 4, 5),
            channels_last=True),
    _module("Reshape", lambda rng: Reshape(3, 4), (2, 12)),
    ("Concat", _concat),
    _module("Sequential(Linear, Tanh, Linear)",
            lambda rng: Sequential(Linear(5, 6, rng=rng, dtype=F64), Tanh(),
                                   Linear(6, 3, rng=rng, dtype=F64)), (4, 5)),
    ("Reparameterize (L=2)", _reparameterize),
    ("GaussianKL", _kl),
    ("BernoulliNLL (reference)", _bernoulli(False)),
    ("BernoulliNLL (fused kernel)", _bernoulli(True)),
    ("GaussianNLL (lambda=0.3)", _gaussian),
    ("GaussianNLLLearned (per-sample logvar)", _gaussian_learned(False)),
    ("GaussianNLLLearned (shared logvar)", _gaussian_learned(True)),
    ("mlp-vae loss (Bernoulli)", _vae_check("mlp-vae loss (Bernoulli)")),
    ("mlp-vae loss (Bernoulli, L=3, beta=4)",
     _vae_check("mlp-vae loss (Bernoulli, L=3, beta=4)", L=3, beta=4.0)),
    ("mlp-vae loss (Gaussian, lambda=0.5)",
     _vae_check("mlp-vae loss (Gaussian, lambda=0.5)", likelihood="gaussian",
                gaussian_variance=0.5)),
    ("mlp-vae loss (Gaussian, learned variance)",
     _vae_check("mlp-vae loss (Gaussian, learned variance)", likelihood="gaussian-learned")),
    ("conv-vae loss (Bernoulli, 4x4 images)",
     _vae_check("conv-vae loss (Bernoulli, 4x4 images)", build=conv_vae, shape=(1, 4, 4),
                channels=(3, 4))),
    ("conv-vae loss (Bernoulli, L=2, 2x4x8 images)",
     _vae_check("conv-vae loss (Bernoulli, L=2, 2x4x8 images)", L=2, build=conv_vae,
                shape=(2, 4, 8), channels=(3, 4))),
    # hidden layers of 4 and 5 channels: im2col/col2im take the run kernels
    # (more than kernels.im2col.TABLE_CHANNELS = 3 channels), not the index tables
    ("conv-vae loss (Bernoulli, 4x4 images, channels (4, 5))",
     _vae_check("conv-vae loss (Bernoulli, 4x4 images, channels (4, 5))", build=conv_vae,
                shape=(1, 4, 4), channels=(4, 5))),
    # KL schedules (scratchvae/schedules.py) and conditional VAEs (models/cvae.py)
    ("mlp-vae loss (beta=4, KL warm-up, step 30 of 100)",
     _vae_check("mlp-vae loss (beta=4, KL warm-up, step 30 of 100)", beta=4.0,
                kl_warmup_steps=100, step=30)),
    ("mlp-vae loss (capacity: 10 |KL - C|, C = 20 > KL)",
     _vae_check("mlp-vae loss (capacity: 10 |KL - C|, C = 20 > KL)", capacity_gamma=10.0,
                capacity_max=40.0, capacity_steps=100, step=50)),
    ("mlp-cvae loss (Bernoulli, L=2, 4 classes)",
     _vae_check("mlp-cvae loss (Bernoulli, L=2, 4 classes)", L=2, build=mlp_cvae, n_classes=4)),
    ("conv-cvae loss (Bernoulli, 4x4 images, 4 classes)",
     _vae_check("conv-cvae loss (Bernoulli, 4x4 images, 4 classes)", build=conv_cvae,
                shape=(1, 4, 4), channels=(3, 4), n_classes=4)),
]
# convolutions (scratchvae/checks_conv.py)
CHECKS += CONV_CHECKS
# vector quantiser and VQ-VAE (scratchvae/checks_vq.py: the straight-through surrogate)
CHECKS += VQ_CHECKS


def _softmax_ce(rng):
    logits = 3 * rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, size=5)
    return check_op("SoftmaxCrossEntropy",
                    lambda logits: losses.softmax_cross_entropy_forward(logits, labels),
                    losses.softmax_cross_entropy_backward, {"logits": logits}, ["logits"],
                    rng=rng, tol=SMOOTH_TOL)


def _classifier(rng):
    """The classifier's mean cross-entropy w.r.t. every parameter (narrow instance)."""
    for _ in range(50):
        model = cnn_classifier(image_shape=(1, 4, 4), num_classes=3, hidden_dim=5,
                               channels=(3, 4), rng=rng, dtype=F64)
        x = _tiny_images(rng, 4, (1, 4, 4))
        labels = rng.integers(0, 3, size=4)
        if _relu_inputs_distance(model, lambda: model.loss(x, labels=labels)) > 10 * MODEL_STEP:
            break
    return check_model("classifier loss (softmax cross-entropy)", model, x, rng=rng,
                       loss_kwargs={"labels": labels}, tol=SMOOTH_TOL, h=MODEL_STEP)


CHECKS += [("SoftmaxCrossEntropy", _softmax_ce),
           ("classifier loss (softmax cross-entropy)", _classifier)]


def check_names():
    return [name for name, _ in CHECKS]


def run_check(name, seed=0):
    """Run one check of the catalogue by name."""
    for n, fn in CHECKS:
        if n == name:
            return fn(np.random.default_rng(seed))
    raise KeyError(f"no gradient check named {name!r}")


def run_checks(seed=0, only=None):
    """Run every check (or those whose name contains ``only``)."""
    return [fn(np.random.default_rng(seed)) for name, fn in CHECKS
            if only is None or only.lower() in name.lower()]

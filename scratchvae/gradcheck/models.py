"""Registry entries of the whole models: each model's scalar loss w.r.t. every
parameter, on a narrow float64 instance of the same class (scratchvae/models/).

A whole-model loss sums many pixels, so the round-off of a central
difference (~1e-16 |L| / h) is larger than for a single op; the step
h = MODEL_STEP = 1e-4 balances it against the O(h^2) truncation error.
Problems are redrawn away from the ReLU kinks and, under capacity
annealing, from the kink of |KL - C_t| (problems.draw_vae). The VQ-VAE's
entry is in vq.py, beside the straight-through surrogate it differentiates.
The PixelCNN prior's loss is checked on integer code maps, with and
without classes. The two-stochastic-layer iwae-2l (tanh only: no kinks) is
checked under its ELBO and IWAE objectives with k = 3 fixed noise pairs, and
under STL and DReG as the gradient of their surrogates (:func:`hvae_surrogate`).
"""
import copy
import sys

import numpy as np

from ..models import cnn_classifier, conv_cvae, conv_vae, iwae_2l, mlp_cvae, mlp_vae, pixelcnn
from ..models import hvae as hvae_module
from ..models.classifier import Classifier
from ..models.cvae import CVAE
from ..models.hvae import HierarchicalVAE
from ..models.pixelcnn import PixelCNN
from ..models.vae import VAE
from ..models import vae as vae_module
from .core import check_model, gradcheck, model_gradients
from .problems import MODEL_STEP, draw_classifier, draw_vae
from .spec import Check, OpSpec

#: the module (its docstring derives the model); ``models.pixelcnn`` is the builder
pixelcnn_module = sys.modules[PixelCNN.__module__]

TOL = 1e-7
KINKS = "ReLU kinks; under capacity annealing, KL = C_t (draw_vae)"
#: a model runs every kernel of its layers (the CUDA ones: tests/test_gpu_path.py)
MODEL_KERNELS = ("reference", "cpu", "cuda")


def vae_check(name, build, **options):
    """A VAE's loss (``build``: its builder, ``options``: draw_vae's) w.r.t. every parameter."""
    def run(rng):
        model, x, kwargs = draw_vae(rng, build, **options)
        return check_model(name, model, x, rng=rng, loss_kwargs=kwargs, tol=TOL, h=MODEL_STEP)
    return Check(name, run)


def classifier_check(name):
    """The classifier's mean cross-entropy w.r.t. every parameter (a narrow instance)."""
    def run(rng):
        model, x, labels = draw_classifier(rng, cnn_classifier)
        return check_model(name, model, x, rng=rng, loss_kwargs={"labels": labels}, tol=TOL,
                           h=MODEL_STEP)
    return Check(name, run)


def _narrow_hvae(rng, objective, k):
    """A narrow float64 iwae-2l, 3 images of 3x4 and ``k`` fixed noise pairs."""
    model = iwae_2l(image_shape=(1, 3, 4), hidden_dim=7, z1_dim=4, hidden2_dim=5,
                    latent_dim=3, rng=rng, dtype=np.float64, objective=objective, n_samples=k)
    x = rng.random((3, 1, 3, 4))
    eps = (rng.standard_normal((k, 3, 4)), rng.standard_normal((k, 3, 3)))
    return model, x, eps


def hvae_check(name, objective, k=3):
    """iwae-2l's loss w.r.t. every parameter: widths 7 (x <-> z1), 4 (z1), 5 (z1 <-> z2),
    3 (z2), 3 images of 3x4, ``k`` fixed noise pairs (eps1, eps2)."""
    def run(rng):
        model, x, eps = _narrow_hvae(rng, objective, k)
        return check_model(name, model, x, rng=rng, loss_kwargs={"eps": eps}, tol=TOL,
                           h=MODEL_STEP)
    return Check(name, run)


def _log_normal(z, mean, logvar):
    return -0.5 * ((z - mean) ** 2 * np.exp(-logvar) + logvar + np.log(2 * np.pi)).sum(-1)


def hvae_log_weights(sample, q, p, x, eps):
    """iwae-2l's log w (k, N) with the samples z = (z1, z2) drawn through the
    inference networks of model ``sample``, the density log q(z | x) of model
    ``q``'s and log p(x, z) of model ``p``'s (plain float64 NumPy)."""
    eps1, eps2 = eps
    k, n, Z1 = eps1.shape
    Z2 = eps2.shape[2]
    h = sample.encoder1.forward(x)
    z1 = (h[:, :Z1] + np.exp(h[:, Z1:] / 2) * eps1).reshape(k * n, Z1)
    h = sample.encoder2.forward(z1)
    z2 = h[:, :Z2] + np.exp(h[:, Z2:] / 2) * eps2.reshape(k * n, Z2)
    hq1 = np.concatenate([q.encoder1.forward(x)] * k)
    hq2 = q.encoder2.forward(z1)
    hp1 = p.prior1.forward(z2)
    logits = p.decoder.forward(z1).reshape(k * n, -1)
    targets = np.concatenate([x.reshape(n, -1)] * k)
    log_px = -(np.maximum(logits, 0) - logits * targets
               + np.log1p(np.exp(-np.abs(logits)))).sum(1)
    log_w = (log_px + _log_normal(z1, hp1[:, :Z1], hp1[:, Z1:]) + _log_normal(z2, 0.0, 0.0)
             - _log_normal(z1, hq1[:, :Z1], hq1[:, Z1:])
             - _log_normal(z2, hq2[:, :Z2], hq2[:, Z2:]))
    return log_w.reshape(k, n)


def hvae_surrogate(model, frozen, x, eps):
    """The surrogate whose gradient at ``model`` = ``frozen`` (a copy held fixed) is
    STL's or DReG's (scratchvae/models/hvae.py):

        F = -1/N sum_{n,i} [ a_in log w(z(frozen); q frozen, p live)
                           + b_in log w(z(live); q frozen, p frozen) ]

    a = 1/k, b = 1/k (STL); a = w~, b = w~^2 of the frozen model (DReG). The first
    term reaches only the generative networks, the second only the inference
    networks, and through the samples only."""
    log_w_p = hvae_log_weights(frozen, frozen, model, x, eps)
    log_w_q = hvae_log_weights(model, frozen, frozen, x, eps)
    k, n = log_w_p.shape
    if model.objective == "stl":
        a = b = np.full((k, n), 1.0 / k)
    else:
        log_w = hvae_log_weights(frozen, frozen, frozen, x, eps)
        a = np.exp(log_w - log_w.max(axis=0))
        a /= a.sum(axis=0)
        b = a * a
    return -float((a * log_w_p + b * log_w_q).sum()) / n


def hvae_surrogate_check(name, objective, k=3):
    """STL's or DReG's gradient (iwae-2l's backward) against central differences
    of :func:`hvae_surrogate`, on the problem of :func:`hvae_check`."""
    def run(rng):
        model, x, eps = _narrow_hvae(rng, objective, k)
        frozen = copy.deepcopy(model)
        arrays, grads = model_gradients(name, model, x, eps=eps)
        return gradcheck(lambda: hvae_surrogate(model, frozen, x, eps), arrays, grads,
                         name=name, h=MODEL_STEP, tol=TOL, rng=rng)
    return Check(name, run)


def prior_check(name, n_classes):
    """The prior's mean NLL w.r.t. every parameter: K = 5 codes, C = 4, 3 layers,
    3 maps of 4x4 (its only kinks are the head's two ReLUs)."""
    def run(rng):
        model = pixelcnn(num_codes=5, channels=4, layers=3, kernel=3, n_classes=n_classes,
                         rng=rng, dtype=np.float64)
        codes = rng.integers(0, 5, size=(3, 4, 4))
        kwargs = {"labels": np.array([1, 0, 1])} if n_classes else {}
        return check_model(name, model, codes, rng=rng, loss_kwargs=kwargs, tol=TOL,
                           h=MODEL_STEP)
    return Check(name, run)


SPECS = (
    OpSpec(
        "mlp-vae", VAE.loss, VAE.backward,
        checks=(
            vae_check("mlp-vae loss (Bernoulli)", mlp_vae),
            vae_check("mlp-vae loss (Bernoulli, L=3, beta=4)", mlp_vae, L=3, beta=4.0),
            vae_check("mlp-vae loss (Gaussian, lambda=0.5)", mlp_vae, likelihood="gaussian",
                      gaussian_variance=0.5),
            vae_check("mlp-vae loss (Gaussian, learned variance)", mlp_vae,
                      likelihood="gaussian-learned"),
            # KL schedules (scratchvae/schedules.py)
            vae_check("mlp-vae loss (beta=4, KL warm-up, step 30 of 100)", mlp_vae, beta=4.0,
                      kl_warmup_steps=100, step=30),
            vae_check("mlp-vae loss (capacity: 10 |KL - C|, C = 20 > KL)", mlp_vae,
                      capacity_gamma=10.0, capacity_max=40.0, capacity_steps=100, step=50)),
        kinks=KINKS, h=MODEL_STEP, implementations=MODEL_KERNELS, derivation=vae_module,
        wrapper=mlp_vae,
        tests=("tests/test_models.py", "tests/test_cvae_beta.py")),
    OpSpec(
        "conv-vae", VAE.loss, VAE.backward,
        checks=(
            vae_check("conv-vae loss (Bernoulli, 4x4 images)", conv_vae, shape=(1, 4, 4),
                      channels=(3, 4)),
            vae_check("conv-vae loss (Bernoulli, L=2, 2x4x8 images)", conv_vae, L=2,
                      shape=(2, 4, 8), channels=(3, 4)),
            # hidden layers of 4 and 5 channels: the padded products go by window
            # classes (more than kernels.im2col.TABLE_CHANNELS = 3 channels), not by
            # the index tables
            vae_check("conv-vae loss (Bernoulli, 4x4 images, channels (4, 5))", conv_vae,
                      shape=(1, 4, 4), channels=(4, 5))),
        kinks=KINKS, h=MODEL_STEP, implementations=MODEL_KERNELS, derivation=vae_module,
        wrapper=conv_vae,
        tests=("tests/test_conv.py", "tests/test_gpu_path.py")),
    OpSpec(
        "mlp-cvae", CVAE.loss, CVAE.backward,
        checks=(vae_check("mlp-cvae loss (Bernoulli, L=2, 4 classes)", mlp_cvae, L=2,
                          n_classes=4),),
        kinks=KINKS, h=MODEL_STEP, implementations=MODEL_KERNELS, derivation=vae_module,
        wrapper=mlp_cvae,
        tests=("tests/test_cvae_beta.py",)),
    OpSpec(
        "conv-cvae", CVAE.loss, CVAE.backward,
        checks=(vae_check("conv-cvae loss (Bernoulli, 4x4 images, 4 classes)", conv_cvae,
                          shape=(1, 4, 4), channels=(3, 4), n_classes=4),),
        kinks=KINKS, h=MODEL_STEP, implementations=MODEL_KERNELS, derivation=vae_module,
        wrapper=conv_cvae,
        tests=("tests/test_cvae_beta.py", "tests/test_gpu_path.py")),
    OpSpec(
        "iwae-2l", HierarchicalVAE.loss, HierarchicalVAE.backward,
        checks=(hvae_check("iwae-2l loss (Monte-Carlo ELBO, k=3)", "elbo"),
                hvae_check("iwae-2l loss (IWAE bound, k=3)", "iwae"),
                hvae_surrogate_check("iwae-2l STL surrogate (k=3)", "stl"),
                hvae_surrogate_check("iwae-2l DReG surrogate (k=3)", "dreg")),
        kinks="none (tanh)", h=MODEL_STEP, implementations=MODEL_KERNELS,
        derivation=hvae_module, wrapper=iwae_2l, tests=("tests/test_hvae.py",)),
    OpSpec(
        "classifier", Classifier.loss, Classifier.backward,
        checks=(classifier_check("classifier loss (softmax cross-entropy)"),),
        kinks="ReLU kinks (draw_classifier)", h=MODEL_STEP,
        implementations=MODEL_KERNELS, wrapper=cnn_classifier,
        tests=("tests/test_classifier.py",)),
    OpSpec(
        "pixelcnn", PixelCNN.loss, PixelCNN.backward,
        checks=(prior_check("pixelcnn loss (K=5, C=4, 3 layers, 4x4 maps)", 0),
                prior_check("pixelcnn loss (K=5, C=4, 3 layers, 4x4 maps, 2 classes)", 2)),
        kinks="the head's ReLU kinks", h=MODEL_STEP, implementations=MODEL_KERNELS,
        derivation=pixelcnn_module, wrapper=pixelcnn, tests=("tests/test_pixelcnn_model.py",)),
)

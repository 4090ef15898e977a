"""Registry entries of the VAE's sampler and loss terms (scratchvae/ops/sampler.py,
scratchvae/losses.py). Each is checked as a functional pair with its
non-differentiated inputs (targets, fixed noise eps, labels) held fixed."""
import kernels

from .. import losses
from ..ops import iwae, sampler
from .problems import Problem
from .spec import Case, OpSpec


def _reparameterize(rng):
    mu, logvar = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    eps = rng.standard_normal((2, 4, 3))  # L = 2 samples, fixed
    return Problem({"mu": mu, "logvar": logvar, "eps": eps}, ("mu", "logvar"))


def _kl(rng):
    return Problem({"mu": rng.standard_normal((4, 3)), "logvar": rng.standard_normal((4, 3))},
                   ("mu", "logvar"))


def _bernoulli(fused, shape=(4, 6)):
    def make(rng):
        logits = 3 * rng.standard_normal(shape)
        targets = rng.random(shape)
        return Problem({"logits": logits, "targets": targets, "fused_grad": fused}, ("logits",))
    return make


def _gaussian(shape=(4, 5)):
    def make(rng):
        mean, x = rng.standard_normal(shape), rng.random(shape)
        return Problem({"mean": mean, "targets": x, "variance": 0.3}, ("mean",))
    return make


def _gaussian_learned(shared, shape=(4, 5)):
    def make(rng):
        mean, x = rng.standard_normal(shape), rng.random(shape)
        logvar = rng.standard_normal((1,) + shape[1:] if shared else shape)
        return Problem({"mean": mean, "logvar": logvar, "targets": x}, ("mean", "logvar"))
    return make


def _softmax_ce(rng):
    logits = 3 * rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, size=5)
    return Problem({"logits": logits, "labels": labels}, ("logits",))


def _softmax_ce_map(rng):
    """K = 4 classes at every position of a (3, 4, 2, 3) logit map, targets (3, 2, 3)."""
    logits = 3 * rng.standard_normal((3, 4, 2, 3))
    labels = rng.integers(0, 4, size=(3, 2, 3))
    return Problem({"logits": logits, "labels": labels}, ("logits",))


def _iwae(k):
    """k log-weights of 3 images around -100 nats (a Bernoulli image's scale), spread 3."""
    def make(rng):
        return Problem({"log_w": -100 + 3 * rng.standard_normal((k, 3))}, ("log_w",))
    return make


IMAGES = (2, 2, 3, 4)   # 4-D cases: a conv decoder's output, laid out channels-last by the tests

SPECS = (
    OpSpec(
        "reparameterize", sampler.reparameterize_forward, sampler.reparameterize_backward,
        cases=(Case("Reparameterize (L=2)", _reparameterize),),
        derivation=sampler, tests=("tests/test_ops.py", "tests/test_gradcheck.py")),
    OpSpec(
        "gaussian_kl", losses.gaussian_kl_forward, losses.gaussian_kl_backward,
        cases=(Case("GaussianKL", _kl),),
        tests=("tests/test_gradcheck.py", "tests/test_models.py")),
    OpSpec(
        "bernoulli_nll", losses.bernoulli_nll_forward, losses.bernoulli_nll_backward,
        cases=(Case("BernoulliNLL (reference)", _bernoulli(False)),
               Case("BernoulliNLL (fused kernel)", _bernoulli(True)),
               Case(None, _bernoulli(True, IMAGES))),
        implementations=("reference", "cpu", "cuda"),
        kernels=(kernels.bce_with_logits, kernels.bce_with_logits_forward),
        references=(kernels.bce_with_logits_reference,
                    kernels.bce_with_logits_forward_reference),
        tests=("tests/test_kernels_adam_bce.py", "tests/test_ops.py")),
    OpSpec(
        "gaussian_nll", losses.gaussian_nll_forward, losses.gaussian_nll_backward,
        cases=(Case("GaussianNLL (lambda=0.3)", _gaussian()), Case(None, _gaussian(IMAGES))),
        tests=("tests/test_ops.py",)),
    OpSpec(
        "gaussian_nll_learned", losses.gaussian_nll_learned_forward,
        losses.gaussian_nll_learned_backward,
        cases=(Case("GaussianNLLLearned (per-sample logvar)", _gaussian_learned(False)),
               Case("GaussianNLLLearned (shared logvar)", _gaussian_learned(True)),
               Case(None, _gaussian_learned(True, IMAGES))),
        tests=("tests/test_ops.py",)),
    OpSpec(
        "softmax_cross_entropy", losses.softmax_cross_entropy_forward,
        losses.softmax_cross_entropy_backward,
        cases=(Case("SoftmaxCrossEntropy", _softmax_ce),
               Case("SoftmaxCrossEntropy (K classes at every position)", _softmax_ce_map)),
        tests=("tests/test_ops.py", "tests/test_classifier.py",
               "tests/test_pixelcnn_ops.py")),
    OpSpec(
        "iwae_bound", iwae.iwae_forward, iwae.iwae_backward,
        cases=(Case("IWAEBound (k=5)", _iwae(5)), Case("IWAEBound (k=1)", _iwae(1))),
        derivation=iwae, tests=("tests/test_gradcheck.py",)),
)

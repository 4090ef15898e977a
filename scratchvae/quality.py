"""Generative quality of a model's samples, measured with the project's own
MNIST classifier (scratchvae/models/classifier.py) in place of Inception.

Fréchet distance on the project classifier's features (FD): the FID recipe
(Heusel et al. 2017) with the classifier's penultimate layer phi(x) (128 ReLU
units) as the feature map. Fit a Gaussian to the features of each set of
images, N(mu_1, S_1) and N(mu_2, S_2), and take the Fréchet (2-Wasserstein)
distance between them:

    FD = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

Lower is closer; 0 for identical moments. The number depends on the feature
map, so it is NOT comparable with published (Inception) FIDs, only between
models scored with the same classifier and sample size.

Classifier-based Inception score (IS; Salimans et al. 2016) with p(y|x) the
classifier's softmax and p(y) = mean_x p(y|x) over the samples:

    IS = exp( E_x[ KL(p(y|x) || p(y)) ] )

1 <= IS <= K (K classes): high when each sample is confidently one class and
the classes are used evenly.

The reference of a data set brackets them: the FLOOR is the FD between the
test set and n training images (what real digits score at that sample size),
the CEILING the IS of the test set itself.
"""
import warnings

import numpy as np
from scipy import linalg
from scipy.special import xlogy

from .backend import to_numpy
from .prior import prior_sampler
from .rundir import load_data, load_run, read_config

#: the models whose runs can draw samples (a prior over a VQ-VAE's codes adds its own)
SAMPLING_MODELS = ("mlp-vae", "conv-vae", "mlp-cvae", "conv-cvae", "iwae-1l", "iwae-2l")


# --------------------------------------------------------------------------
# the statistics
# --------------------------------------------------------------------------

def classifier_statistics(classifier, images, batch_size=500):
    """Features phi(x) (N, hidden) and class probabilities p(y|x) (N, K) of host
    images, both float64 host arrays; p = softmax(logits) computed stably as
    exp(l - max l) / sum exp(l - max l)."""
    last = classifier.net.layers[-1]
    features, probs = [], []
    for start in range(0, images.shape[0], batch_size):
        xb = classifier.xp.asarray(images[start:start + batch_size], dtype=classifier.param_dtype)
        h = classifier.features(xb)
        logits = to_numpy(last.forward(h)).astype(np.float64)
        features.append(to_numpy(h).astype(np.float64))
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs.append(e / e.sum(axis=1, keepdims=True))
    return np.concatenate(features), np.concatenate(probs)


def feature_moments(features):
    """Mean (D,) and covariance (D, D) of features (N, D), the covariance with
    ddof=1: S = sum_n (f_n - mu)(f_n - mu)^T / (N - 1)."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False, ddof=1)


def frechet_distance(mu1, cov1, mu2, cov2, eps=1e-6):
    """Fréchet distance on the project classifier's features (FD) between
    N(mu1, cov1) and N(mu2, cov2), in float64:

        ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})

    (S1 S2)^{1/2} by scipy.linalg.sqrtm, handled as the FID reference code does:
    a product too singular for a finite root is retried as (S1 + eps I)(S2 + eps I),
    and the imaginary part that rounding leaves is dropped (ValueError if its
    diagonal is not negligible). Not comparable with published Inception FIDs.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: expected means (D,) and covariances (D, D) of one D, "
                         f"got {mu1.shape}, {cov1.shape}, {mu2.shape}, {cov2.shape}")
    with warnings.catch_warnings():   # a singular product: checked below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov1 @ cov2)
        if not np.isfinite(covmean).all():
            offset = eps * np.eye(cov1.shape[0])
            covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: the square root of S1 S2 has an imaginary part "
                             f"of {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def inception_score(probs):
    """Classifier-based Inception score of p(y|x) (N, K), one value over all N:

        IS = exp( (1/N) sum_n sum_y p(y|x_n) (log p(y|x_n) - log p(y)) ),
        p(y) = (1/N) sum_n p(y|x_n),

    with 0 log 0 = 0. 1 <= IS <= K."""
    probs = np.asarray(probs, dtype=np.float64)
    marginal = probs.mean(axis=0)
    kl = (xlogy(probs, probs) - xlogy(probs, marginal)).sum(axis=1)
    return float(np.exp(kl.mean()))


# --------------------------------------------------------------------------
# a data set's reference and a sampler's scores
# --------------------------------------------------------------------------

def reference(classifier, train_images, test_images, n=10000, seed=0):
    """The test set's feature moments ("mu", "cov"), its own IS (``is_ceiling``)
    and the FD floor (``fd_floor``): the FD between the test set and min(n, N_train)
    training images drawn without replacement by a generator seeded with ``seed``;
    ``floor_images`` is that number."""
    n = min(int(n), train_images.shape[0])
    _check_count("reference", n)
    features, probs = classifier_statistics(classifier, test_images)
    mu, cov = feature_moments(features)
    pick = np.sort(np.random.default_rng(seed).choice(train_images.shape[0], n, replace=False))
    train_features, _ = classifier_statistics(classifier, train_images[pick])
    return {"mu": mu, "cov": cov, "is_ceiling": inception_score(probs),
            "fd_floor": frechet_distance(*feature_moments(train_features), mu, cov),
            "floor_images": n}


def _check_count(name, n):
    if n < 2:
        raise ValueError(f"{name}: expected at least 2 images (a covariance), got {n}")


def balanced_labels(n, n_classes):
    """Labels 0, 1, ..., K-1, 0, 1, ... (n,) for a conditional sampler; None for K = 0."""
    return np.arange(n) % n_classes if n_classes else None


def sample_quality(sampler, classifier, reference, n=10000, labels=None, batch_size=500, seed=0):
    """FD (against ``reference``'s moments) and IS of n samples, drawn in batches
    of ``batch_size`` by ``sampler(m, rng, labels)`` with one generator seeded by
    ``seed``. ``labels`` (n,): the classes asked for; then also ``cond_accuracy``,
    the share of samples whose most probable class under the classifier is theirs."""
    _check_count("sample_quality", n)
    rng = np.random.default_rng(seed)
    features, probs = [], []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        images = np.asarray(sampler(m, rng, None if labels is None else labels[start:start + m]))
        if images.shape != (m,) + tuple(classifier.image_shape):
            raise ValueError(f"sample_quality: expected {m} images of shape "
                             f"{tuple(classifier.image_shape)}, got shape {images.shape}")
        if not np.isfinite(images).all():
            raise ValueError("sample_quality: the samples hold values that are not finite")
        f, p = classifier_statistics(classifier, images, batch_size)
        features.append(f)
        probs.append(p)
    features, probs = np.concatenate(features), np.concatenate(probs)
    result = {"fd": frechet_distance(*feature_moments(features), reference["mu"],
                                     reference["cov"]),
              "is": inception_score(probs)}
    if labels is not None:
        result["cond_accuracy"] = float((probs.argmax(axis=1) == np.asarray(labels)).mean())
    return result


# --------------------------------------------------------------------------
# samplers of trained runs
# --------------------------------------------------------------------------

def model_sampler(model):
    """``sampler(n, rng, labels)`` -> host images (n, C, H, W) of a VAE
    (``model.sample(n, rng)``) or a CVAE (``model.sample(n, rng, labels=labels)``);
    its ``n_classes`` is the CVAE's number of classes, 0 for a VAE."""
    n_classes = getattr(model, "n_classes", 0)

    def sampler(n, rng, labels=None):
        if (labels is None) != (n_classes == 0):
            raise ValueError(f"{type(model).__name__}.sample: labels "
                             + ("required" if n_classes else "given to an unconditional model"))
        images = model.sample(n, rng) if labels is None else model.sample(n, rng, labels=labels)
        return to_numpy(images)

    sampler.n_classes = n_classes
    return sampler


def run_sampler(config, model):
    """The sampler of a trained run's model (``config.model`` says which); a
    ValueError for a model with no prior to sample from."""
    if config.model in SAMPLING_MODELS:
        return model_sampler(model)
    if config.model == "pixelcnn":     # a prior: its code maps, decoded by its VQ-VAE
        return prior_sampler(config, model)
    hint = (": score its PixelCNN prior's run, which samples through it"
            if config.model == "vq-vae" else "")
    raise ValueError(f"{config.model} has no prior to sample from{hint}; FD and IS need a "
                     f"model that samples ({', '.join(SAMPLING_MODELS)}, or a pixelcnn prior)")


def load_classifier(run_dir, device="cpu"):
    """The trained classifier of a run directory; ValueError if it holds another model."""
    config, classifier, _ = load_run(run_dir, device=device)
    if config.model != "classifier":
        raise ValueError(f"--classifier {run_dir} holds {config.model}, not a classifier")
    return classifier


def classifier_reference(classifier_dir, classifier, n=10000, seed=0, log=print):
    """:func:`reference` on the data set of the classifier run ``classifier_dir``
    (its test set and n of its training images), with its ``dataset`` name."""
    config = read_config(classifier_dir)
    _, (xtr, _), (xte, _) = load_data(config, log=log, progress=False)
    return dict(reference(classifier, xtr, xte, n, seed), dataset=config.dataset)


def run_quality(config, sampler, classifier, reference, n=10000, seed=0):
    """FD and IS of n samples of a trained run's ``sampler`` (:func:`run_sampler`;
    a conditional one draws the labels 0..K-1 in turn, and its ``cond_accuracy``
    is given too), beside the reference's ``fd_floor`` and ``is_ceiling``.
    ValueError for a run of another data set than the reference's
    (``config.dataset``)."""
    if config.dataset != reference["dataset"]:
        raise ValueError(f"the classifier was trained on {reference['dataset']}, the run on "
                         f"{config.dataset}; FD and IS need a classifier of the run's data set")
    labels = balanced_labels(n, sampler.n_classes)
    scores = sample_quality(sampler, classifier, reference, n, labels, seed=seed)
    return dict(scores, fd_floor=reference["fd_floor"], is_ceiling=reference["is_ceiling"])


__all__ = ["classifier_statistics", "feature_moments", "frechet_distance", "inception_score",
           "reference", "balanced_labels", "sample_quality", "model_sampler", "run_sampler",
           "load_classifier", "classifier_reference", "run_quality", "SAMPLING_MODELS"]

"""PyTorch twins of scratchvae's models, and what a twin run supports.

A twin is the same model in PyTorch (:mod:`scratchvae.twins.models`), trained by
:func:`scratchvae.twins.train.train_twin` from a scratchvae run's initial weights,
on its batches, with its noise: only the arithmetic differs (our hand-derived
backward and kernels against autograd and oneDNN/MKL), so the difference of the
two runs' test metrics is the engine's. PyTorch is no dependency of the engine:
this module imports it only inside functions (:func:`has_torch`,
:func:`fastest_adam`), and only ``sweep --twin`` and the benchmarks import the twins.
"""

#: the models with a twin that trains as the run does
TWIN_MODELS = ("mlp-vae", "conv-vae", "conv-cvae", "vq-vae", "pixelcnn")
#: a run's twin lives in RUN/<TWIN_DIR>
TWIN_DIR = "twin"


def has_torch():
    """Whether PyTorch imports in this process (the twins need it)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def twin_problems(config):
    """What of ``config`` (a TrainConfig) the twins do not implement, each naming the
    option and what the twins do; empty when a twin can train it."""
    if config.model not in TWIN_MODELS:
        return [f"model {config.model} has no PyTorch twin; the twins are those of "
                f"{', '.join(TWIN_MODELS)}"]
    problems = []
    if config.likelihood != "bernoulli":
        problems.append(f"likelihood {config.likelihood}: the twins have the Bernoulli "
                        f"likelihood only")
    if config.objective != "elbo":
        problems.append(f"objective {config.objective}: the twins train the ELBO "
                        f"(--objective elbo) only")
    if config.n_samples != 1:
        problems.append(f"k {config.n_samples}: the twins draw one z sample per image (--k 1)")
    if config.optimizer != "adam":
        problems.append(f"optimizer {config.optimizer}: the twins step with Adam only")
    if config.vq_ema:
        problems.append("vq_ema: the VQ twin learns its codebook by the codebook loss "
                        "(--no-vq-ema)")
    return problems


def check_twin(config):
    """Raise ValueError naming what a twin of ``config`` cannot train (:func:`twin_problems`)."""
    problems = twin_problems(config)
    if problems:
        raise ValueError("--twin: " + "; ".join(problems))


def fastest_adam(params, lr=1e-3, eps=1e-8, weight_decay=0.0):
    """PyTorch's fused Adam (one kernel per step for all parameters: the same update,
    PyTorch's fastest on a CPU), or its default Adam where fused is missing:
    (optimizer, its name for a table). Every PyTorch twin steps with it."""
    import torch

    params = list(params)
    try:
        return (torch.optim.Adam(params, lr=lr, eps=eps, weight_decay=weight_decay,
                                 fused=True), "fused")
    except (RuntimeError, TypeError, ValueError):
        return (torch.optim.Adam(params, lr=lr, eps=eps, weight_decay=weight_decay),
                "default (fused unavailable)")

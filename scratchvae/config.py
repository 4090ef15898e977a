"""The configuration of a training run: :class:`TrainConfig`, and what it builds.

Each field is declared once, with what the command line needs to offer it
(``python -m scratchvae train`` generates its options from these fields,
see ``scratchvae/cli.py``): the help text, the choices, the flag where it is
not ``--`` + the name with dashes, the metavar, and the kind of number it takes
(``bound``: ``"positive"`` > 0, ``"nonneg"`` >= 0, ``"fraction"`` in (0, 1)),
and further spellings of the flag (``aliases``).
A field with ``cli=False`` has no option of its own. :meth:`TrainConfig.__post_init__`
checks every field against this schema (its type: an ``int`` field takes an integer,
never a bool or a float; a ``float`` field a finite number; its choices; its bound)
and the fields together, whoever builds the config: the command line, the Python
API, or :meth:`TrainConfig.from_dict` reading a run's ``config.json``.
"""
import dataclasses
import math
import numbers
from dataclasses import dataclass

import numpy as np

from .data import FULL_DATASETS, SAMPLES
from .models import DEFAULT_LATENT_DIM, LIKELIHOODS, MODELS, build_model
from .models.vae import OBJECTIVES, check_objective
from .models.pixelcnn import DEFAULTS as PRIOR
from .models.vq_vae import CODEBOOK_INITS, DEFAULTS as VQ
from .models.hvae import option_problems as hvae_problems
from .optimizers import OPTIMIZERS
from .schedules import IWAE_EPOCHS, LR_SCHEDULES, KLSchedule

#: the argument groups of the VQ-VAE's and the PixelCNN prior's options on the command line
VQ_GROUP = "VQ-VAE (--model vq-vae)"
PRIOR_GROUP = "PixelCNN prior over a VQ-VAE's codes (--model pixelcnn)"
#: classes of a class-conditional prior (the digits / garments of both data sets)
PRIOR_CLASSES = 10
#: the models without a Gaussian latent q(z | x), which train no multi-sample bound
NOT_GAUSSIAN_LATENT = ("vq-vae", "pixelcnn", "classifier")
#: the models whose training step --cuda-graph captures (scratchvae/graph_step.py)
GRAPH_MODELS = ("mlp-vae", "conv-vae", "iwae-1l", "vq-vae")


def option(default, help=None, *, bound=None, choices=None, flag=None, metavar=None,
           group=None, negatable=False, cli=True, aliases=()):
    """A dataclass field with its command-line option in the field's metadata."""
    return dataclasses.field(default=default, metadata=dict(
        help=help, bound=bound, choices=choices, flag=flag, metavar=metavar, group=group,
        negatable=negatable, cli=cli, aliases=aliases))


@dataclass
class TrainConfig:
    model: str = option("mlp-vae", choices=sorted(MODELS))
    dataset: str = option("mnist", choices=list(FULL_DATASETS))
    epochs: int = option(10, "number of epochs (default 10; with --resume, the new total, "
                                 "except for a cosine schedule: see --lr-schedule; at most "
                                 f"{IWAE_EPOCHS} with the iwae schedule)",
                         bound="positive")
    batch_size: int = option(128, bound="positive")
    lr: float = option(1e-3, "learning rate (default 1e-3)", bound="positive")
    lr_schedule: str = option(
        "constant", "constant; cosine: decayed to 0 over the run's steps (a cosine run "
                    "resumes only to its own --epochs); iwae: Burda et al.'s 3^i epochs at "
                    "lr 10^(-i/7), i = 0..7 (3280 epochs; --epochs 40 runs i = 0..3 and a "
                    "resume with more --epochs continues the schedule)",
        choices=list(LR_SCHEDULES))
    optimizer: str = option("adam", choices=sorted(OPTIMIZERS))
    adam_eps: float = option(1e-8, "Adam's epsilon (default 1e-8; Burda et al. use 1e-4)",
                             bound="positive", metavar="EPS")
    momentum: float = option(0.9, "SGD momentum", bound="nonneg")
    weight_decay: float = option(0.0, bound="nonneg")
    clip_grad_norm: float = option(0.0, "clip gradients to this global L2 norm (0: off)",
                                   bound="nonneg", metavar="MAX")
    seed: int = option(0, bound="nonneg")
    latent_dim: int = option(0, "latent dimension (default: the model's, 20 for mlp-vae)",
                             bound="nonneg", metavar="Z")
    likelihood: str = option("bernoulli", choices=list(LIKELIHOODS))
    gaussian_variance: float = option(1.0, "variance of the fixed-variance Gaussian likelihood",
                                      bound="positive", metavar="LAMBDA")
    beta: float = option(1.0, "weight of the KL term", bound="nonneg")
    kl_warmup_steps: int = option(
        0, "linear KL warm-up: beta_t = beta min(1, step/N) (0: off)", bound="nonneg",
        metavar="N")
    capacity_max: float = option(
        0.0, "capacity annealing (Burgess et al. 2018): loss = recon + G |KL - C_t|, C_t raised "
             "linearly from 0 to C nats; needs --capacity-gamma", bound="nonneg", metavar="C")
    capacity_steps: int = option(
        0, "steps over which C_t rises to --capacity-max (0: C from the start)", bound="nonneg",
        metavar="N")
    capacity_gamma: float = option(
        0.0, "weight G of |KL - C_t|; > 0 turns capacity annealing on (replaces beta)",
        bound="nonneg", metavar="G")
    # VQ-VAE (model vq-vae only; defaults: scratchvae.models.vq_vae.DEFAULTS)
    vq_codes: int = option(VQ["num_codes"], f"codebook size (default {VQ['num_codes']})",
                           bound="positive", metavar="K", group=VQ_GROUP)
    vq_commitment: float = option(
        VQ["commitment"], f"weight of the commitment term (default {VQ['commitment']})",
        bound="nonneg", metavar="BETA", group=VQ_GROUP)
    vq_init: str = option(
        VQ["codebook_init"], "codebook initialisation: uniform in +-1/K, or N(0, 1) "
                             f"(default {VQ['codebook_init']})",
        choices=list(CODEBOOK_INITS), group=VQ_GROUP)
    vq_ema: bool = option(
        VQ["ema"], "exponential-moving-average codebook instead of the codebook loss "
                   f"(default {'on' if VQ['ema'] else 'off'})", negatable=True, group=VQ_GROUP)
    vq_decay: float = option(VQ["decay"], f"EMA decay, < 1 (default {VQ['decay']})",
                             bound="fraction", metavar="D", group=VQ_GROUP)
    vq_restart: int = option(
        VQ["restart_after"], "re-initialise codes unused for this many training steps from "
                             f"random encoder outputs (0: off; default {VQ['restart_after']})",
        bound="nonneg", metavar="STEPS", group=VQ_GROUP)
    # PixelCNN prior (model pixelcnn only; defaults: scratchvae.models.pixelcnn.DEFAULTS)
    vq_run: str = option("", "the trained VQ-VAE run whose code maps the prior learns (its "
                             "data set, codebook size and codebook checksum are recorded)",
                         metavar="DIR", group=PRIOR_GROUP)
    conditional: bool = option(False, "class-conditional prior p(z | y)", group=PRIOR_GROUP)
    prior_channels: int = option(PRIOR["channels"], f"channels C of both stacks (default "
                                                    f"{PRIOR['channels']})", bound="positive",
                                 metavar="C", group=PRIOR_GROUP)
    prior_layers: int = option(PRIOR["layers"], f"gated layers (default {PRIOR['layers']})",
                               bound="positive", metavar="L", group=PRIOR_GROUP)
    vq_codebook: str = option("", cli=False)   # sha256 of the VQ run's codebook, recorded
    objective: str = option(
        "elbo", "training objective: elbo (the negative ELBO, averaged over the samples), "
                "iwae (the importance-weighted bound L_k), dreg (L_k with the doubly "
                "reparameterised encoder gradient), stl (sticking the landing, k = 1); "
                "default elbo", choices=list(OBJECTIVES))
    n_samples: int = option(1, "z samples per image: k of the bound L_k, or the L samples the "
                               "ELBO averages (default 1)", bound="positive", flag="--k",
                            metavar="K", aliases=("--n-samples", "--samples"))
    binarize: bool = option(
        False, "dynamic binarisation: each pixel drawn as Bernoulli(intensity) per batch")
    augment_shift: int = option(
        0, "data augmentation: translate each training image by up to PX pixels (0: off; for "
           "the classifier)", bound="nonneg", metavar="PX")
    device: str = option("cpu", choices=["cpu", "gpu"])
    cuda_graph: bool = option(
        False, "capture the training step once into a CUDA graph and replay it (needs "
               f"--device gpu; models {', '.join(GRAPH_MODELS)}; the last partial batch of "
               "an epoch is dropped)")
    eval_batch_size: int = option(1000, bound="positive", cli=False)
    train_limit: int = option(0, "use only the first N training images (0: all)",
                              bound="nonneg", metavar="N")
    test_limit: int = option(0, "use only the first N test images (0: all)", bound="nonneg",
                             metavar="N")
    data_dir: str = option("", "directory holding <dataset>/*.gz (else $SCRATCHVAE_DATA, the "
                               "cache, /usr/share/datasets)", metavar="DIR")
    download: str = option("auto", choices=["auto", "yes", "no"], cli=False)  # --download, --offline
    use_sample: bool = option(False, cli=False)   # the bundled sample: --sample

    def __post_init__(self):
        problems = [p for p in map(self._field_problem, dataclasses.fields(self)) if p]
        if not problems:
            try:  # the KL schedule's own consistency rules (warm-up xor capacity, ...)
                KLSchedule(self.beta, self.kl_warmup_steps, self.capacity_max,
                           self.capacity_steps, self.capacity_gamma)
            except ValueError as e:
                problems.append(str(e))
        problems += self._prior_problems() + self._objective_problems(problems)
        if self.use_sample and self.dataset not in SAMPLES:
            problems.append(f"use_sample: the package bundles a sample of "
                            f"{', '.join(SAMPLES)} only, not of {self.dataset}")
        problems += self._optimizer_problems() + self._graph_problems()
        if self.model == "iwae-2l":   # a Bernoulli likelihood, no KL weight or schedule
            problems += hvae_problems(self.objective,
                                      **{f: getattr(self, f) for f in self.VAE_FIELDS})
        if problems:
            raise ValueError("invalid training configuration: " + "; ".join(problems))

    def _field_problem(self, f):
        """What is wrong with the value of field ``f`` (type, choices, bound), or None."""
        value = getattr(self, f.name)
        kind, bound, choices = f.type, f.metadata["bound"], f.metadata["choices"]
        if kind is bool:
            fits = isinstance(value, bool)
        elif kind is int:
            fits = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        elif kind is float:
            fits = (isinstance(value, numbers.Real) and not isinstance(value, bool)
                    and math.isfinite(value))
        else:
            fits = isinstance(value, str)
        if not fits:
            return f"{f.name} must be {TYPE_NAMES[kind]}, got {value!r}"
        if choices is not None and value not in choices:
            return f"{f.name} must be one of {', '.join(choices)}, got {value!r}"
        if bound == "positive" and not value > 0:
            return f"{f.name} must be {'>= 1' if kind is int else '> 0'}, got {value}"
        if bound == "nonneg" and not value >= 0:
            return f"{f.name} must be >= 0, got {value}"
        if bound == "fraction" and not 0 < value < 1:
            return f"{f.name} must be in (0, 1), got {value}"
        return None

    def _optimizer_problems(self):
        """What does not fit the learning-rate schedule or the optimiser."""
        problems = []
        if self.lr_schedule == "iwae" and self.epochs > IWAE_EPOCHS:
            problems.append(f"epochs: the iwae schedule has {IWAE_EPOCHS} epochs (3^i for i = "
                            f"0..7), got {self.epochs}; give --epochs {IWAE_EPOCHS} or fewer")
        if self.optimizer != "adam" and self.adam_eps != self._default("adam_eps"):
            problems.append(f"adam_eps: an option of the adam optimizer, but the optimizer "
                            f"is {self.optimizer}")
        return problems

    def _graph_problems(self):
        """What a captured training step (``cuda_graph``) cannot do: a value the step
        would have to read on the host (a clipping norm, a scheduled KL weight, the
        capacity term's sign) or draw there (shifts)."""
        if not self.cuda_graph:
            return []
        problems = []
        if self.device != "gpu":
            problems.append(f"cuda_graph: a CUDA graph runs on the GPU; give --device gpu "
                            f"(got device {self.device})")
        if self.model not in GRAPH_MODELS:
            problems.append(f"cuda_graph: supported for the models {', '.join(GRAPH_MODELS)}, "
                            f"not {self.model}")
        given = [name for name in ("clip_grad_norm", "kl_warmup_steps", "capacity_gamma",
                                   "augment_shift") if getattr(self, name)]
        if self.optimizer != "adam":
            given.append(f"optimizer {self.optimizer}")
        if given:
            problems.append(f"cuda_graph: the captured step takes Adam with a constant KL "
                            f"weight, without {', '.join(given)}")
        if self.model == "vq-vae" and self.vq_ema:
            problems.append("cuda_graph: the EMA codebook keeps its step count on the host; "
                            "a captured VQ-VAE learns its codebook by its loss (--no-vq-ema)")
        return problems

    #: the options of the VAE family, which a prior over code maps does not take
    VAE_FIELDS = ("latent_dim", "likelihood", "gaussian_variance", "beta", "kl_warmup_steps",
                  "capacity_max", "capacity_steps", "capacity_gamma", "n_samples", "binarize",
                  "augment_shift")

    def _prior_problems(self):
        """What does not fit a PixelCNN prior's run (or a prior's option in another run)."""
        if self.model != "pixelcnn":
            given = [f for f in ("vq_run", "conditional", "vq_codebook")
                     if getattr(self, f)]
            given += [f for f in ("prior_channels", "prior_layers")
                      if getattr(self, f) != self._default(f)]
            return [f"{', '.join(given)}: options of the pixelcnn model, but the model is "
                    f"{self.model}"] if given else []
        problems = [] if self.vq_run else [
            "vq_run: a pixelcnn prior learns the codes of a trained VQ-VAE: give its run "
            "directory (--vq-run DIR)"]
        changed = [f for f in self.VAE_FIELDS if getattr(self, f) != self._default(f)]
        if changed:
            problems.append(f"{', '.join(changed)}: options of the VAE models, which a "
                            f"pixelcnn prior does not take")
        return problems

    def _objective_problems(self, problems):
        """What does not fit the objective (``problems``: those found so far)."""
        if self.objective == "elbo" or problems:
            return []
        if self.model in NOT_GAUSSIAN_LATENT:
            vaes = [m for m in sorted(MODELS) if m not in NOT_GAUSSIAN_LATENT]
            return [f"objective {self.objective} needs a Gaussian-latent VAE "
                    f"({', '.join(vaes)}), not model {self.model}"]
        try:
            check_objective(self.objective, self.n_samples, self.beta, self.kl_warmup_steps,
                            self.capacity_gamma)
        except ValueError as e:
            return [str(e)]
        return []

    @classmethod
    def _default(cls, name):
        return cls.__dataclass_fields__[name].default

    @classmethod
    def from_dict(cls, d):
        """The config a JSON object ``d`` (a run's config.json) describes: every key a
        field, every value of the field's type, choices and bound; a missing key takes
        the field's default."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object of configuration fields, got a "
                             f"{type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}")
        return cls(**d)


#: how a field's type is named in a message
TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a finite number",
              str: "a string"}


def make_model(config, rng, dtype=np.float32):
    """The model ``config`` describes, initialised from the generator ``rng``
    (a prior: over ``vq_codes`` codes, the recorded size of its VQ-VAE's codebook)."""
    if config.model == "pixelcnn":
        return build_model("pixelcnn", num_codes=config.vq_codes,
                           channels=config.prior_channels, layers=config.prior_layers,
                           n_classes=PRIOR_CLASSES if config.conditional else 0, rng=rng,
                           dtype=dtype)
    latent = config.latent_dim or DEFAULT_LATENT_DIM[config.model]
    vq = {} if config.model != "vq-vae" else dict(
        num_codes=config.vq_codes, commitment=config.vq_commitment, codebook_init=config.vq_init,
        ema=config.vq_ema, decay=config.vq_decay, restart_after=config.vq_restart)
    return build_model(config.model, latent_dim=latent, rng=rng, dtype=dtype,
                       likelihood=config.likelihood, gaussian_variance=config.gaussian_variance,
                       beta=config.beta, n_samples=config.n_samples, objective=config.objective,
                       kl_warmup_steps=config.kl_warmup_steps, capacity_max=config.capacity_max,
                       capacity_steps=config.capacity_steps, capacity_gamma=config.capacity_gamma,
                       **vq)


def make_optimizer(config, params):
    """The optimiser ``config`` describes, over ``params``."""
    if config.optimizer == "adam":
        return OPTIMIZERS["adam"](params, lr=config.lr, eps=config.adam_eps,
                                  weight_decay=config.weight_decay)
    return OPTIMIZERS["sgd"](params, lr=config.lr, momentum=config.momentum,
                             weight_decay=config.weight_decay)

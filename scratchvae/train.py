"""Training and evaluation loops.

``train(config, out_dir)`` runs epochs of minibatch training with a tqdm
progress bar; after each epoch it evaluates the test set, checks that every
parameter and test metric is finite, appends one JSON line to
``out_dir/metrics.jsonl``, then writes ``config.json`` and ``checkpoint.npz``
atomically (the metrics line first: a resume drops the lines newer than the
checkpoint, so a crash in between loses nothing). ``train(..., resume=True)``
continues a run exactly where its last checkpoint left it: parameters,
optimiser moments and the states of every random generator are restored, so
N epochs in one go and k + (N - k) epochs across a resume give the same bits
on the CPU. A new run refuses a directory that already holds a run unless
``overwrite=True``; even then the old files stay until the new run's first
epoch is written. ``config.json`` records the data actually used (the
bundled sample after a fall-back, ``data_dir`` as an absolute path), so that
``evaluate`` and a resume load the same data.

Randomness: one seed; independent NumPy generators for initialisation,
shuffling and the sampler noise (spawned from one ``SeedSequence``). Noise is
drawn on the host and moved to the device, so a GPU run sees the same eps.
"""
import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from . import checkpoints as ckpt
from . import data as data_mod
from .backend import get_array_module, retain_freed_memory, to_device
from .models import DEFAULT_LATENT_DIM, build_model
from .models.vq_vae import CODEBOOK_INITS, DEFAULTS as VQ
from .metrics import iw_nll
from .optimizers import OPTIMIZERS, clip_grad_norm
from .schedules import LR_SCHEDULES, KLSchedule, learning_rate


class TrainingDiverged(RuntimeError):
    """The loss, a parameter or a test metric became NaN or infinite."""


class NothingToTrain(ValueError):
    """``resume`` of a run that has already trained ``config.epochs`` epochs."""


class DeviceUnavailable(RuntimeError):
    """The device asked for cannot be used (``--device gpu`` without CuPy or a GPU)."""


def array_module(device):
    """``backend.get_array_module(device)``, with its error (no CuPy, no GPU) raised as
    :class:`DeviceUnavailable`, which the command line reports as a failed run."""
    try:
        return get_array_module(device)
    except RuntimeError as e:
        raise DeviceUnavailable(str(e)) from None


@dataclass
class TrainConfig:
    model: str = "mlp-vae"
    dataset: str = "mnist"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"  # "constant" | "cosine" (decays to 0 over the run's steps)
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip_grad_norm: float = 0.0
    seed: int = 0
    latent_dim: int = 0            # 0 = the model's default
    likelihood: str = "bernoulli"
    gaussian_variance: float = 1.0
    beta: float = 1.0
    kl_warmup_steps: int = 0       # linear warm-up of beta over this many steps (0: off)
    capacity_max: float = 0.0      # capacity annealing gamma |KL - C|, C: 0 -> capacity_max nats
    capacity_steps: int = 0        #   over capacity_steps steps
    capacity_gamma: float = 0.0    #   gamma (0: off)
    n_samples: int = 1
    # VQ-VAE (model vq-vae only; see scratchvae/models/vq_vae.py)
    vq_codes: int = VQ["num_codes"]             # codebook size K
    vq_commitment: float = VQ["commitment"]     # weight beta of the commitment term
    vq_init: str = VQ["codebook_init"]          # "uniform" (+-1/K) | "normal" (N(0, 1))
    vq_ema: bool = VQ["ema"]                    # EMA codebook instead of the codebook loss
    vq_decay: float = VQ["decay"]               # EMA decay
    vq_restart: int = VQ["restart_after"]       # restart codes unused this many steps (0: off)
    binarize: bool = False
    augment_shift: int = 0         # random translations of up to this many pixels (classifier)
    device: str = "cpu"
    eval_batch_size: int = 1000
    train_limit: int = 0           # 0 = the whole training set
    test_limit: int = 0
    data_dir: str = ""
    download: str = "auto"        # "auto" | "yes" | "no"
    use_sample: bool = False

    def __post_init__(self):
        problems = []
        for name in ("epochs", "batch_size", "eval_batch_size", "n_samples"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("train_limit", "test_limit", "latent_dim", "augment_shift", "clip_grad_norm",
                     "weight_decay", "kl_warmup_steps", "capacity_max", "capacity_steps",
                     "capacity_gamma"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.vq_codes < 1 or self.vq_commitment < 0 or self.vq_restart < 0:
            problems.append(f"vq_codes must be >= 1, vq_commitment and vq_restart >= 0, got "
                            f"{self.vq_codes}, {self.vq_commitment}, {self.vq_restart}")
        if self.vq_init not in CODEBOOK_INITS or not 0 < self.vq_decay < 1:
            problems.append(f"vq_init must be one of {CODEBOOK_INITS} and 0 < vq_decay < 1, "
                            f"got {self.vq_init!r}, {self.vq_decay}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if not problems:
            try:  # the KL schedule's own consistency rules (warm-up xor capacity, ...)
                KLSchedule(self.beta, self.kl_warmup_steps, self.capacity_max,
                           self.capacity_steps, self.capacity_gamma)
            except ValueError as e:
                problems.append(str(e))
        if self.use_sample and self.dataset not in data_mod.SAMPLES:
            problems.append(f"use_sample: the package bundles a sample of "
                            f"{', '.join(data_mod.SAMPLES)} only, not of {self.dataset}")
        if self.download not in ("auto", "yes", "no"):
            problems.append(f"download must be auto, yes or no, got {self.download!r}")
        if problems:
            raise ValueError("invalid training configuration: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}")
        return cls(**d)


def read_config(run_dir):
    """The :class:`TrainConfig` saved in ``run_dir/config.json``; a missing, unreadable
    or invalid file raises :class:`~scratchvae.checkpoints.CheckpointError` naming it."""
    path = os.path.join(run_dir, ckpt.CONFIG)
    saved = ckpt.read_json(path)
    try:
        config = TrainConfig.from_dict(saved)
    except (ValueError, TypeError) as e:  # TypeError: not a JSON object
        raise ckpt.CheckpointError(f"{path} is not a usable training configuration: {e}") from None
    if config.model not in DEFAULT_LATENT_DIM:
        raise ckpt.CheckpointError(f"{path}: unknown model {config.model!r}; expected one of "
                                   f"{', '.join(sorted(DEFAULT_LATENT_DIM))}")
    return config


def restore_state(target, state, path, run_dir):
    """``target.load_state_dict(state)`` (a model or an optimizer), its refusal of a
    state that does not fit raised as a CheckpointError naming the checkpoint."""
    try:
        target.load_state_dict(state)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ckpt.CheckpointError(
            f"checkpoint {path} does not fit the {type(target).__name__} that "
            f"{os.path.join(run_dir, ckpt.CONFIG)} describes: {e}") from None


# --------------------------------------------------------------------------
# pieces shared by train, evaluate and the CLI
# --------------------------------------------------------------------------

def make_model(config, rng, dtype=np.float32):
    latent = config.latent_dim or DEFAULT_LATENT_DIM[config.model]
    vq = {} if config.model != "vq-vae" else dict(
        num_codes=config.vq_codes, commitment=config.vq_commitment, codebook_init=config.vq_init,
        ema=config.vq_ema, decay=config.vq_decay, restart_after=config.vq_restart)
    return build_model(config.model, latent_dim=latent, rng=rng, dtype=dtype,
                       likelihood=config.likelihood, gaussian_variance=config.gaussian_variance,
                       beta=config.beta, n_samples=config.n_samples,
                       kl_warmup_steps=config.kl_warmup_steps, capacity_max=config.capacity_max,
                       capacity_steps=config.capacity_steps, capacity_gamma=config.capacity_gamma,
                       **vq)


def make_optimizer(config, params):
    if config.optimizer == "adam":
        return OPTIMIZERS["adam"](params, lr=config.lr, weight_decay=config.weight_decay)
    return OPTIMIZERS["sgd"](params, lr=config.lr, momentum=config.momentum,
                             weight_decay=config.weight_decay)


def load_data(config, log=print, progress=True, allow_sample=False):
    """The data set of ``config`` as float arrays in [0, 1], shape (N, 1, 28, 28).

    ``allow_sample``: whether the bundled sample may stand in for a full set that
    cannot be found. Only a new run allows it (and records ``use_sample=True``,
    see :func:`recorded_config`); a saved run's config says which data it used.
    """
    download = {"auto": "auto", "yes": True, "no": False}[config.download]
    if config.use_sample:
        ds = data_mod.load_sample(config.dataset)
    else:
        try:
            ds = data_mod.load_dataset(config.dataset, data_dir=config.data_dir or None,
                                       download=download, allow_sample=allow_sample,
                                       progress=progress, log=log)
        except data_mod.DataNotFoundError as e:
            if allow_sample or config.dataset not in data_mod.SAMPLES:
                raise
            raise data_mod.DataNotFoundError(
                f"{e}\nThis run was trained on the full {config.dataset} set (use_sample is "
                f"false in its config.json), so the bundled sample cannot stand in for it."
            ) from None
    xtr, ytr = ds.train_images, ds.train_labels
    xte, yte = ds.test_images, ds.test_labels
    if config.train_limit:
        xtr, ytr = xtr[:config.train_limit], ytr[:config.train_limit]
    if config.test_limit:
        xte, yte = xte[:config.test_limit], yte[:config.test_limit]
    xtr = data_mod.images_to_float(xtr)
    xte = data_mod.images_to_float(xte)
    if config.binarize:  # a fixed stochastic binarisation of the test set
        xte = (np.random.default_rng(config.seed + 7).random(xte.shape) < xte).astype(xte.dtype)
    return ds, (xtr, ytr), (xte, yte)


def recorded_config(config, ds):
    """``config`` as a run saves it: ``use_sample`` says whether the data set ``ds``
    actually loaded is the bundled sample (true after a fall-back) and ``data_dir``
    is the absolute directory the full set was loaded from, however it was found
    (--data-dir, $SCRATCHVAE_DATA, the cache, ...), so that evaluate and --resume
    load the same data from anywhere, in any environment."""
    return dataclasses.replace(
        config, use_sample=ds.is_sample,
        data_dir="" if ds.is_sample else os.path.abspath(ds.source))


def seed_sequences(seed):
    """The independent seeds of a run: (initial weights, batch order, training
    noise, evaluation noise), all spawned from ``seed``."""
    init, shuffle, noise, evaluation = np.random.SeedSequence(seed).spawn(4)
    return init, shuffle, noise, evaluation


def evaluate(model, x, labels=None, batch_size=1000, seed=0):
    """The model's test metrics (``model.test_metrics``), with evaluation noise
    drawn from a generator seeded by ``seed`` so that repeated evaluations agree."""
    rng = np.random.default_rng(seed_sequences(seed)[3])
    return model.test_metrics(x, labels=labels, batch_size=batch_size, rng=rng)


def format_epoch(record):
    if "test_nelbo" not in record:  # a model without an ELBO (vq-vae): its test metrics
        shown = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in record.items()
                          if k.startswith("test_") or k in ("perplexity", "codes_used"))
        return (f"epoch {record['epoch']:3d}  train loss {record['train_loss']:.3f}  {shown}  "
                f"{record['train_seconds']:.1f}s train, {record['seconds']:.1f}s epoch")
    return (f"epoch {record['epoch']:3d}  train loss {record['train_loss']:.3f}  "
            f"test -ELBO {record['test_nelbo']:.3f} (recon {record['test_recon']:.3f}, "
            f"KL {record['test_kl']:.3f})  {record['train_seconds']:.1f}s train, "
            f"{record['seconds']:.1f}s epoch")


# --------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------

def run_files(out_dir):
    """The files of a run (checkpoint, metrics) that ``out_dir`` holds."""
    return [name for name in (ckpt.CHECKPOINT, ckpt.METRICS)
            if os.path.exists(os.path.join(out_dir, name))]


def _diverged(what, epoch, out_dir, created):
    """The :class:`TrainingDiverged` to raise: what went wrong, what is kept. Before
    the first epoch is written, a directory this call created (still empty) goes."""
    if epoch > 1:
        kept = f"The last good checkpoint (epoch {epoch - 1}) is kept in {out_dir}"
    elif created:
        with contextlib.suppress(OSError):   # rmdir removes only an empty directory
            os.rmdir(out_dir)
        kept = f"Nothing was written: {out_dir} is not created"
    else:
        kept = f"Nothing of this run was written: {out_dir} is as it was"
    return TrainingDiverged(f"training stopped: {what}. {kept}. Try a smaller --lr or "
                            f"--clip-grad-norm.")


def _non_finite(state, record):
    """Names of the arrays of ``state`` and of the numbers of ``record`` (the epoch's
    metrics) that hold a NaN or an infinity."""
    names = [name for name, array in state.items() if not np.isfinite(array).all()]
    names += [key for key, value in record.items()
              if isinstance(value, (float, np.floating)) and not math.isfinite(value)]
    return names


def train(config, out_dir, resume=False, overwrite=False, progress=True, log=print):
    """Train ``config.model``; returns the list of per-epoch metric records.

    A new run (not ``resume``) into a directory that already holds a run (a
    checkpoint or metrics) raises :class:`~scratchvae.checkpoints.CheckpointError`
    unless ``overwrite``; the old run's files are then removed only when the new
    run's first epoch is written, so a new run that stops earlier leaves them intact.
    """
    held = [] if resume else run_files(out_dir)
    if held and not overwrite:
        raise ckpt.CheckpointError(
            f"{out_dir} already holds a run ({', '.join(held)}); a new run would replace it. "
            f"Continue it with --resume {out_dir}, train into another --out, or pass "
            f"--overwrite (overwrite=True) to replace it")
    xp = array_module(config.device)
    retain_freed_memory()  # reuse the step's large temporaries (see backend)
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    metrics_path = os.path.join(out_dir, ckpt.METRICS)
    ckpt_path = os.path.join(out_dir, ckpt.CHECKPOINT)

    init_ss, shuffle_ss, noise_ss, _ = seed_sequences(config.seed)
    model = make_model(config, np.random.default_rng(init_ss)).to(xp)
    optimizer = make_optimizer(config, model.parameters())
    shuffle_rng = np.random.default_rng(shuffle_ss)
    noise_rng = np.random.default_rng(noise_ss)
    start_epoch = 0
    if resume:
        model_state, optim_state, meta = ckpt.load_checkpoint(ckpt_path)
        restore_state(model, model_state, ckpt_path, out_dir)
        restore_state(optimizer, optim_state, ckpt_path, out_dir)
        shuffle_rng.bit_generator.state = meta["shuffle_rng"]
        noise_rng.bit_generator.state = meta["noise_rng"]
        start_epoch = int(meta["epoch"])
        if start_epoch >= config.epochs:
            raise NothingToTrain(f"the run in {out_dir} has trained {start_epoch} of "
                                 f"{config.epochs} epochs: nothing to continue; pass --epochs "
                                 f"N with N > {start_epoch}")
        ckpt.truncate_jsonl(metrics_path, lambda r: r.get("epoch", 0) <= start_epoch)
        log(f"resuming {out_dir} after epoch {start_epoch}")

    ds, (xtr, ytr), (xte, yte) = load_data(config, log=log, progress=progress,
                                           allow_sample=not resume)
    config = recorded_config(config, ds)
    log(f"{config.model}: {model.num_parameters():,} parameters; data {ds.name} from "
        f"{ds.source} ({xtr.shape[0]} train / {xte.shape[0]} test images); device {config.device}")

    history = ckpt.read_jsonl(metrics_path) if resume else []
    steps_per_epoch = -(-xtr.shape[0] // config.batch_size)
    global_step = start_epoch * steps_per_epoch  # steps done so far
    for epoch in range(start_epoch + 1, config.epochs + 1):
        t0 = time.perf_counter()
        batches = data_mod.iterate_batches(xtr, ytr, config.batch_size, rng=shuffle_rng,
                                           shuffle=True, binarize=config.binarize,
                                           shift=config.augment_shift)
        bar = tqdm(batches, total=len(batches), desc=f"epoch {epoch}/{config.epochs}",
                   unit="batch", disable=not progress, leave=False, dynamic_ncols=True)
        total, count = 0.0, 0
        for step, (xb, yb) in enumerate(bar):
            xb = to_device(xb, xp)
            optimizer.lr = learning_rate(config.lr_schedule, config.lr, global_step,
                                         config.epochs * steps_per_epoch)
            optimizer.zero_grad()
            loss, _ = model.loss(xb, rng=noise_rng, labels=yb, step=global_step)
            global_step += 1
            value = float(loss)
            if not math.isfinite(value):
                bar.close()
                raise _diverged(f"the loss became {value} at epoch {epoch}, step {step + 1}",
                                epoch, out_dir, created)
            model.backward()
            if config.clip_grad_norm:
                clip_grad_norm(model.parameters(), config.clip_grad_norm)
            optimizer.step()
            total += value * xb.shape[0]
            count += xb.shape[0]
            if step % 20 == 0:
                bar.set_postfix(loss=f"{value:.2f}", refresh=False)
        bar.close()
        train_seconds = time.perf_counter() - t0
        record = {"epoch": epoch, "train_loss": total / count, "train_seconds": train_seconds}
        record.update(evaluate(model, xte, yte, config.eval_batch_size, config.seed))
        record["seconds"] = time.perf_counter() - t0
        state = model.state_dict()
        bad = _non_finite(state, record)
        if bad:  # e.g. an infinite gradient in the last step: the loss never saw it
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise _diverged(f"{shown} became NaN or infinite in epoch {epoch} (the loss "
                            f"stayed finite: a gradient overflowed?)", epoch, out_dir, created)
        if epoch == start_epoch + 1:  # the first epoch this call writes
            for name in held:  # --overwrite: only now does the old run go, checkpoint first
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(out_dir, name))
            ckpt.write_json(os.path.join(out_dir, ckpt.CONFIG), dataclasses.asdict(config))
        meta = {"epoch": epoch, "shuffle_rng": shuffle_rng.bit_generator.state,
                "noise_rng": noise_rng.bit_generator.state,
                "config": dataclasses.asdict(config)}
        # the metrics line before the checkpoint: a resume drops the lines newer than the
        # checkpoint, so a crash between the two writes loses nothing
        ckpt.append_jsonl(metrics_path, record)
        ckpt.save_checkpoint(ckpt_path, state, optimizer.state_dict(), meta)
        history.append(record)
        log(format_epoch(record))
    return history


def load_run(run_dir, device="cpu"):
    """Rebuild a trained model from ``run_dir`` (config.json + checkpoint.npz)."""
    config = read_config(run_dir)
    config.device = device
    path = os.path.join(run_dir, ckpt.CHECKPOINT)
    model_state, _, meta = ckpt.load_checkpoint(path)
    model = make_model(config, np.random.default_rng(0))
    restore_state(model, model_state, path, run_dir)
    model.to(array_module(device))
    return config, model, meta


def evaluate_run(run_dir, device="cpu", log=print, progress=False, iw_k=0, iw_images=0):
    """The test metrics of a saved run, computed exactly as during training;
    for models with a Gaussian latent also the importance-weighted NLL with
    ``iw_k`` samples per image (on the first ``iw_images`` images; 0: all)."""
    config, model, meta = load_run(run_dir, device)
    _, _, (xte, yte) = load_data(config, log=log, progress=progress)
    result = {"epoch": meta["epoch"], "model": config.model, "dataset": config.dataset}
    result.update(evaluate(model, xte, yte, config.eval_batch_size, config.seed))
    if iw_k and hasattr(model, "log_importance_weights"):
        n = iw_images or xte.shape[0]
        rng = np.random.default_rng(seed_sequences(config.seed)[3])
        result.update(iw_nll(model, xte[:n], None if yte is None else yte[:n], k=iw_k,
                             rng=rng, progress=progress))
        result["iw_images"] = int(min(n, xte.shape[0]))
    return result

"""Run directories: the files of a trained run, and what is read back from them.

A run directory holds three files, each written atomically
(:mod:`scratchvae.files`):

    config.json      the run's :class:`~scratchvae.config.TrainConfig`
    metrics.jsonl    one JSON line of metrics per epoch
    checkpoint.npz   parameters, optimiser state and random-generator states
                     after the last epoch (:mod:`scratchvae.checkpoints`)

One process at a time writes a run directory: it holds the directory's lock
(:func:`scratchvae.files.locked`, ``DIR/.lock``) while it runs. Readers take
no lock; they see whole files, and of metrics.jsonl the lines up to the
checkpoint's epoch (:func:`read_metrics`): a writer appends an epoch's line
before its checkpoint, so a later line belongs to an epoch not saved (yet).

``config.json`` records the data actually used (the bundled sample after a
fall-back, ``data_dir`` as an absolute path: :func:`recorded_config`), so that
evaluation, figures and a resume load the same data. A missing, damaged,
foreign or crafted file raises :class:`~scratchvae.checkpoints.CheckpointError`
(or :class:`~scratchvae.files.FileError`) naming it and what is wrong: config.json
is checked against :class:`~scratchvae.config.TrainConfig`'s schema, a checkpoint's
members against the model (and optimiser) they are loaded into before any array
is read (:func:`read_checkpoint`), so reading one takes at most the memory of that
state.

Evaluation: independent NumPy generators for initialisation, shuffling, the
training noise and the evaluation noise, all spawned from the run's one seed
(:func:`seed_sequences`), so that repeated evaluations of a run agree.
"""
import dataclasses
import os

import numpy as np

from . import checkpoints as ckpt
from . import data as data_mod
from . import files
from .backend import get_array_module
from .checkpoints import CHECKPOINT, CheckpointError
from .config import TrainConfig, make_model
from .metrics import iw_nll
from .models import DEFAULT_LATENT_DIM

CONFIG = "config.json"
METRICS = "metrics.jsonl"


class DeviceUnavailable(RuntimeError):
    """The device asked for cannot be used (``--device gpu`` without CuPy or a GPU)."""


def array_module(device):
    """``backend.get_array_module(device)``, with its error (no CuPy, no GPU) raised as
    :class:`DeviceUnavailable`, which the command line reports as a failed run."""
    try:
        return get_array_module(device)
    except RuntimeError as e:
        raise DeviceUnavailable(str(e)) from None


# --------------------------------------------------------------------------
# the files of a run
# --------------------------------------------------------------------------

def run_files(run_dir):
    """The files of a run (checkpoint, metrics) that ``run_dir`` holds."""
    return [name for name in (CHECKPOINT, METRICS)
            if os.path.exists(os.path.join(run_dir, name))]


def _start_again(run_dir):
    """The one way out of a directory without a checkpoint, in both messages
    that meet it (a new run into it, its --resume)."""
    return (f"no epoch of it was saved, so nothing can be resumed; start it again with "
            f"--out {run_dir} --overwrite (overwrite=True), or train into another --out")


def files_to_replace(run_dir, overwrite):
    """The run files in ``run_dir`` that a new run will replace. A directory that
    holds a run raises :class:`CheckpointError` unless ``overwrite``."""
    held = run_files(run_dir)
    if held and not overwrite:
        if CHECKPOINT not in held:   # killed before its first checkpoint
            raise CheckpointError(f"{run_dir} already holds a run ({', '.join(held)}) but "
                                  f"no checkpoint: {_start_again(run_dir)}")
        raise CheckpointError(
            f"{run_dir} already holds a run ({', '.join(held)}); a new run would replace it. "
            f"Continue it with --resume {run_dir}, train into another --out, or pass "
            f"--overwrite (overwrite=True) to replace it")
    return held


#: the largest config.json read (a run's is about 1 kB)
CONFIG_LIMIT = 1 << 20


def check_resumable(run_dir):
    """Raise :class:`CheckpointError` unless ``run_dir`` holds a checkpoint to resume."""
    held = run_files(run_dir)
    if CHECKPOINT not in held:
        raise CheckpointError(f"{run_dir} holds {' and '.join(held) + ' but ' if held else ''}"
                              f"no checkpoint: {_start_again(run_dir)}")


def remove_temp_files(run_dir):
    """Remove what writers of ``run_dir``'s files killed mid-write left behind
    (:func:`scratchvae.files.temp_files`); the caller holds the directory's lock."""
    for name in (CHECKPOINT, CONFIG, METRICS):
        files.remove_temp_files(os.path.join(run_dir, name))


def read_config(run_dir):
    """The :class:`TrainConfig` saved in ``run_dir/config.json``; a missing, unreadable
    or invalid file (a key that is no field, a value of the wrong type, out of range or
    not among the field's choices) raises :class:`~scratchvae.files.FileError` naming it."""
    path = os.path.join(run_dir, CONFIG)
    if os.path.isfile(path) and os.path.getsize(path) > CONFIG_LIMIT:
        raise CheckpointError(f"{path} holds {os.path.getsize(path):,} bytes; a run's "
                              f"config.json is a small JSON object (at most "
                              f"{CONFIG_LIMIT:,} bytes)")
    saved = files.read_json(path)
    model = saved.get("model") if isinstance(saved, dict) else None
    if isinstance(model, str) and model not in DEFAULT_LATENT_DIM:
        raise CheckpointError(f"{path}: unknown model {model!r}; expected one of "
                              f"{', '.join(sorted(DEFAULT_LATENT_DIM))}")
    return _config_from(saved, path)


def _config_from(saved, path):
    """``TrainConfig.from_dict(saved)``, its refusal raised as a CheckpointError naming
    ``path``."""
    try:
        return TrainConfig.from_dict(saved)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path} is not a usable training configuration: {e}") from None


def write_config(run_dir, config):
    """Save ``config`` as ``run_dir/config.json``."""
    files.write_json(os.path.join(run_dir, CONFIG), dataclasses.asdict(config))


def read_metrics(run_dir, epoch=None):
    """The records of ``run_dir/metrics.jsonl`` up to ``epoch`` (default: the
    checkpoint's; none without a checkpoint): those of saved epochs."""
    if epoch is None:
        path = os.path.join(run_dir, CHECKPOINT)
        epoch = int(ckpt.load_checkpoint(path)[2]["epoch"]) if os.path.exists(path) else 0
    path = os.path.join(run_dir, METRICS)
    records = files.read_jsonl(path)
    for number, record in enumerate(records, 1):
        if type(record.get("epoch")) is not int or record["epoch"] < 1:
            raise files.FileError(f"{path}, line {number}: epoch is {record.get('epoch')!r}, "
                                  f"not an integer >= 1; the file is damaged")
    return [r for r in records if r["epoch"] <= epoch]


def read_run(run_dir):
    """(config dict, list of the per-epoch records of saved epochs) of a run directory;
    the config checked as :func:`read_config` checks it."""
    return dataclasses.asdict(read_config(run_dir)), read_metrics(run_dir)


def restore_state(target, state, path, run_dir):
    """``target.load_state_dict(state)`` (a model or an optimizer), its refusal of a
    state that does not fit raised as a CheckpointError naming the checkpoint."""
    try:
        target.load_state_dict(state)
    except (ValueError, KeyError, TypeError, IndexError, OverflowError) as e:
        raise CheckpointError(
            f"checkpoint {path} does not fit the {type(target).__name__} that "
            f"{os.path.join(run_dir, CONFIG)} describes: {e}") from None


#: the random generators a checkpoint's meta holds, by key: (batch order, training noise)
GENERATORS = ("shuffle_rng", "noise_rng")


def state_members(model, optimizer=None):
    """member name -> (shape, dtype) of a checkpoint of ``model`` (and ``optimizer``):
    ``model/<name>`` per entry of the model's state, ``optim/<key>`` per optimiser
    array, ``optim/<key>/<i>`` per entry of a per-parameter list (the shape and dtype
    of parameter i where the list holds no array yet, e.g. SGD's momentum buffers)."""
    members = {f"model/{k}": (v.shape, v.dtype) for k, v in model.state_dict().items()}
    if optimizer is not None:
        for key, value in optimizer.state_dict().items():
            if isinstance(value, (list, tuple)):
                for i, (a, p) in enumerate(zip(value, optimizer.params)):
                    ref = p.data if a is None else a
                    members[f"optim/{key}/{i}"] = (tuple(ref.shape), np.dtype(ref.dtype))
            elif isinstance(value, np.ndarray):
                members[f"optim/{key}"] = (value.shape, value.dtype)
    return members


def _check_meta(meta, path):
    """The run's entries of a checkpoint's meta: ``epoch`` an integer >= 1, each of
    :data:`GENERATORS` a state of NumPy's PCG64 generator, ``config`` a valid
    configuration; else a CheckpointError naming the entry."""
    epoch = meta.get("epoch")
    if type(epoch) is not int or epoch < 1:
        raise CheckpointError(f"checkpoint {path}: its epoch is {epoch!r}, not an integer >= 1")
    for name in GENERATORS:
        try:
            np.random.PCG64().state = meta[name]
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise CheckpointError(f"checkpoint {path}: {name} is not the state of a NumPy "
                                  f"PCG64 generator ({type(e).__name__}: {e})") from None
    if "config" not in meta:
        raise CheckpointError(f"checkpoint {path}: its meta has no 'config' entry")
    _config_from(meta["config"], f"checkpoint {path}: its config")


def read_checkpoint(run_dir, model, optimizer=None):
    """``(model_state, optim_state, meta)`` of ``run_dir/checkpoint.npz``, read for
    ``model`` (and ``optimizer``; without it, no optimiser array is read): the file's
    members are checked from their headers against :func:`state_members` before any
    array is read, the meta by :func:`_check_meta`, the model's arrays for NaN and
    infinity."""
    path = os.path.join(run_dir, CHECKPOINT)
    try:
        model_state, optim_state, meta = ckpt.load_checkpoint(
            path, state_members(model, optimizer), optim=optimizer is not None)
    except ckpt.StateMismatch as e:
        raise CheckpointError(f"checkpoint {path} does not fit the {type(model).__name__} "
                              f"that {os.path.join(run_dir, CONFIG)} describes: "
                              f"{e.detail}") from None
    _check_meta(meta, path)
    bad = [name for name, a in model_state.items() if not np.isfinite(a).all()]
    if bad:
        raise CheckpointError(f"checkpoint {path}: {', '.join(bad[:3])} hold NaN or "
                              f"infinite values")
    return model_state, optim_state, meta


def restore_run(run_dir, model, optimizer, generators):
    """Load ``run_dir``'s checkpoint into ``model``, ``optimizer`` and the NumPy
    generators ``generators`` (one per entry of :data:`GENERATORS`); returns its meta."""
    path = os.path.join(run_dir, CHECKPOINT)
    model_state, optim_state, meta = read_checkpoint(run_dir, model, optimizer)
    restore_state(model, model_state, path, run_dir)
    restore_state(optimizer, optim_state, path, run_dir)
    for rng, name in zip(generators, GENERATORS):
        rng.bit_generator.state = meta[name]
    return meta


def load_run(run_dir, device="cpu"):
    """Rebuild a trained model from ``run_dir`` (config.json + checkpoint.npz):
    returns ``(config, model, meta)``."""
    config = read_config(run_dir)
    config.device = device
    path = os.path.join(run_dir, CHECKPOINT)
    model = make_model(config, np.random.default_rng(0))
    model_state, _, meta = read_checkpoint(run_dir, model)
    restore_state(model, model_state, path, run_dir)
    model.to(array_module(device))
    return config, model, meta


# --------------------------------------------------------------------------
# the data of a run
# --------------------------------------------------------------------------

def load_data(config, log=print, progress=True, allow_sample=False):
    """The data set of ``config`` as float arrays in [0, 1], shape (N, 1, 28, 28).

    ``allow_sample``: whether the bundled sample may stand in for a full set that
    cannot be found. Only a new run allows it (and records ``use_sample=True``,
    see :func:`recorded_config`); a saved run's config says which data it used.
    A new run's ``data_dir`` is the user's --data-dir, the only place looked; a
    saved run's is where its data were found, looked at first (they may have moved).
    """
    download = {"auto": "auto", "yes": True, "no": False}[config.download]
    if config.use_sample:
        ds = data_mod.load_sample(config.dataset)
    else:
        try:
            where = "data_dir" if allow_sample else "recorded_dir"   # a new run: --data-dir
            ds = data_mod.load_dataset(config.dataset, **{where: config.data_dir or None},
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


def load_test_images(config, n=None):
    """The first n test images (host float (n, 1, H, W)) and labels of a run's data."""
    _, _, (xte, yte) = load_data(config, log=lambda *a, **k: None, progress=False)
    return xte[:n], yte[:n]


def recorded_config(config, ds):
    """``config`` as a run saves it: ``use_sample`` says whether the data set ``ds``
    actually loaded is the bundled sample (true after a fall-back) and ``data_dir``
    is the absolute directory the full set was loaded from, however it was found
    (--data-dir, $SCRATCHVAE_DATA, the cache, ...), so that evaluate and --resume
    load the same data from anywhere, in any environment."""
    return dataclasses.replace(
        config, use_sample=ds.is_sample,
        data_dir="" if ds.is_sample else os.path.abspath(ds.source))


# --------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------

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

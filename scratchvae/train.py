"""The training loop.

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
epoch is written. The run directory's files and their reading back are in
:mod:`scratchvae.rundir`.

Lifecycle: ``out_dir`` is checked before any work (it must be a directory this
process can write, or create); the call holds its lock
(:func:`scratchvae.files.locked`) from start to end, so a second writer fails
at once; at its start it removes the temporary files a killed writer left;
a call that stops before its first epoch is written removes the directories
it created.

Randomness: one seed; independent NumPy generators for initialisation,
shuffling and the sampler noise (spawned from one ``SeedSequence``).

On the GPU (``device="gpu"``) an epoch runs in :mod:`scratchvae.device_loop`:
the training set is copied to the device once, batches are gathered there in
the order the shuffle generator draws (the CPU path's batches), the sampler's
noise is drawn on the device (other numbers than the CPU path's), and the loss
is read back every ``LOSS_EVERY`` steps. With ``config.cuda_graph`` the step
is captured once into a CUDA graph and replayed (:mod:`scratchvae.graph_step`).
"""
import contextlib
import dataclasses
import math
import os
import time

import numpy as np
from tqdm.auto import tqdm

from . import checkpoints as ckpt
from . import data as data_mod
from . import files
from . import prior as prior_runs
from .backend import cpu_description, retain_freed_memory
from .device_loop import DeviceRun
from .graph_step import CapturedRun
from .config import make_model, make_optimizer
from .optimizers import clip_grad_norm
from .rundir import (CHECKPOINT, METRICS, array_module, check_resumable, evaluate,
                     files_to_replace, load_data, recorded_config, remove_temp_files,
                     restore_run, seed_sequences, write_config)
from .schedules import learning_rate


class TrainingDiverged(RuntimeError):
    """The loss, a parameter or a test metric became NaN or infinite."""


class NothingToTrain(ValueError):
    """``resume`` of a run that has already trained ``config.epochs`` epochs."""


class ScheduleHorizonChanged(ValueError):
    """``resume`` of a cosine-schedule run to another number of epochs than its own:
    the schedule's horizon is the run's epochs, so the steps still to come would get
    another learning rate than the run began with."""


def format_epoch(record):
    """The log line of an epoch's metrics record."""
    if "test_nelbo" not in record:  # a model without an ELBO (vq-vae, a prior): its metrics
        shown = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in record.items()
                          if k.startswith("test_") or k in ("perplexity", "codes_used",
                                                            "train_bits_per_code"))
        return (f"epoch {record['epoch']:3d}  train loss {record['train_loss']:.3f}  {shown}  "
                f"{record['train_seconds']:.1f}s train, {record['seconds']:.1f}s epoch")
    return (f"epoch {record['epoch']:3d}  train loss {record['train_loss']:.3f}  "
            f"test -ELBO {record['test_nelbo']:.3f} (recon {record['test_recon']:.3f}, "
            f"KL {record['test_kl']:.3f})  {record['train_seconds']:.1f}s train, "
            f"{record['seconds']:.1f}s epoch")


def _diverged(what, epoch, out_dir, created):
    """The :class:`TrainingDiverged` to raise: what went wrong, what is kept. Before
    the first epoch is written, a directory this call created (still empty) goes
    (in :func:`train`)."""
    if epoch > 1:
        kept = f"The last good checkpoint (epoch {epoch - 1}) is kept in {out_dir}"
    elif created:
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


# NumPy's overflow warnings stay quiet: a non-finite loss, parameter or test metric
# stops the run with its own message (errstate changes no number)
@np.errstate(over="ignore", invalid="ignore", divide="ignore")
def train(config, out_dir, resume=False, overwrite=False, progress=True, log=print):
    """Train ``config.model``; returns the list of per-epoch metric records.

    A new run (not ``resume``) into a directory that already holds a run (a
    checkpoint or metrics) raises :class:`~scratchvae.checkpoints.CheckpointError`
    unless ``overwrite``; the old run's files are then removed only when the new
    run's first epoch is written, so a new run that stops earlier leaves them intact.
    An ``out_dir`` that cannot be written raises :class:`~scratchvae.files.UnwritablePath`
    and one that another process holds :class:`~scratchvae.files.DirectoryInUse`,
    both before any work.
    """
    files.check_output_dir(out_dir)
    created = files.make_dirs(out_dir)
    try:
        with files.locked(out_dir):
            return _train(config, out_dir, resume, overwrite, progress, log, bool(created))
    except BaseException:   # stopped before its first epoch: no empty directory stays
        files.remove_empty_dirs(created)
        raise


def _train(config, out_dir, resume, overwrite, progress, log, created):
    """:func:`train` in ``out_dir``, which exists and is held locked."""
    if resume:
        check_resumable(out_dir)
    held = [] if resume else files_to_replace(out_dir, overwrite)
    remove_temp_files(out_dir)
    xp = array_module(config.device)
    retain_freed_memory()  # reuse the step's large temporaries (see backend)
    metrics_path = os.path.join(out_dir, METRICS)
    ckpt_path = os.path.join(out_dir, CHECKPOINT)

    vq = None
    if config.model == "pixelcnn":   # a prior: bound to its VQ-VAE run (prior.py)
        config, vq = prior_runs.bind_vq_run(config, resume=resume, device=config.device)
    init_ss, shuffle_ss, noise_ss, _ = seed_sequences(config.seed)
    model = make_model(config, np.random.default_rng(init_ss)).to(xp)
    optimizer = make_optimizer(config, model.parameters())
    shuffle_rng = np.random.default_rng(shuffle_ss)
    noise_rng = np.random.default_rng(noise_ss)
    start_epoch = 0
    if resume:
        meta = restore_run(out_dir, model, optimizer, (shuffle_rng, noise_rng))
        start_epoch, horizon = meta["epoch"], meta["config"]["epochs"]
        if config.lr_schedule == "cosine" and config.epochs != horizon:
            raise ScheduleHorizonChanged(
                f"the run in {out_dir} decays its learning rate to 0 along a cosine over its "
                f"{horizon} epochs (--lr-schedule cosine); --epochs {config.epochs} would "
                f"change that horizon and with it the learning rate of every step still to "
                f"come, so the run would match neither {horizon} nor {config.epochs} epochs "
                f"trained straight. Resume it without --epochs to finish its {horizon} "
                f"epochs, or start a new run with --epochs {config.epochs}")
        if start_epoch >= config.epochs:
            more = ("a cosine schedule ends with the run: start a new run with more --epochs"
                    if config.lr_schedule == "cosine" else
                    f"pass --epochs N with N > {start_epoch}")
            raise NothingToTrain(f"the run in {out_dir} has trained {start_epoch} of "
                                 f"{config.epochs} epochs: nothing to continue; {more}")
        files.truncate_jsonl(metrics_path, lambda r: r.get("epoch", 0) <= start_epoch)
        log(f"resuming {out_dir} after epoch {start_epoch}")

    if vq is not None:   # the VQ-VAE's code maps of its own data
        ds, (xtr, ytr), (xte, yte) = prior_runs.code_data(config, vq, log=log,
                                                          progress=progress)
    else:
        ds, (xtr, ytr), (xte, yte) = load_data(config, log=log, progress=progress,
                                               allow_sample=not resume)
        config = recorded_config(config, ds)
    log(f"{config.model}: {model.num_parameters():,} parameters; data {ds.name} from "
        f"{ds.source} ({xtr.shape[0]} train / {xte.shape[0]} test images); device {config.device}"
        + (f" ({cpu_description()})" if xp is np else ""))

    history = files.read_jsonl(metrics_path) if resume else []
    device_run = None
    if xp is not np:   # the training set on the device; batches, noise and loss there
        run_class = CapturedRun if config.cuda_graph else DeviceRun
        device_run = run_class(xp, config, xtr, ytr, shuffle_rng, noise_rng, noise_ss)
        if config.cuda_graph:
            device_run.prepare(model, optimizer, log=log)
    steps_per_epoch = (device_run.steps_per_epoch if device_run is not None
                       else -(-xtr.shape[0] // config.batch_size))
    global_step = start_epoch * steps_per_epoch  # steps done so far
    for epoch in range(start_epoch + 1, config.epochs + 1):
        t0 = time.perf_counter()
        desc = f"epoch {epoch}/{config.epochs}"
        if device_run is None:
            train_loss, global_step = _cpu_epoch(model, optimizer, config, xtr, ytr,
                                                 shuffle_rng, noise_rng, epoch, global_step,
                                                 steps_per_epoch, desc, progress, out_dir,
                                                 created)
        else:
            bar = tqdm(total=steps_per_epoch, desc=desc, unit="batch", disable=not progress,
                       leave=False, dynamic_ncols=True)
            try:
                train_loss, global_step = device_run.epoch(
                    model, optimizer, epoch, global_step, bar,
                    lambda what: _diverged(what, epoch, out_dir, created))
            finally:
                bar.close()
        train_seconds = time.perf_counter() - t0
        record = {"epoch": epoch, "train_loss": train_loss, "train_seconds": train_seconds}
        if hasattr(model, "train_record"):   # the loss in other units (a prior's bits per code)
            record.update(model.train_record(record["train_loss"]))
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
            write_config(out_dir, config)
        meta = {"epoch": epoch, "shuffle_rng": shuffle_rng.bit_generator.state,
                "noise_rng": noise_rng.bit_generator.state,
                "config": dataclasses.asdict(config)}
        # the metrics line before the checkpoint: a resume drops the lines newer than the
        # checkpoint, so a crash between the two writes loses nothing
        files.append_jsonl(metrics_path, record)
        ckpt.save_checkpoint(ckpt_path, state, optimizer.state_dict(), meta)
        history.append(record)
        log(format_epoch(record))
    return history


def _cpu_epoch(model, optimizer, config, xtr, ytr, shuffle_rng, noise_rng, epoch, global_step,
               steps_per_epoch, desc, progress, out_dir, created):
    """One epoch of minibatch training on the host; returns ``(mean loss over its
    images, global_step)``. The loss is read after every step (a NumPy scalar)."""
    batches = data_mod.iterate_batches(xtr, ytr, config.batch_size, rng=shuffle_rng,
                                       shuffle=True, binarize=config.binarize,
                                       shift=config.augment_shift)
    bar = tqdm(batches, total=len(batches), desc=desc, unit="batch", disable=not progress,
               leave=False, dynamic_ncols=True)
    total, count = 0.0, 0
    for step, (xb, yb) in enumerate(bar):
        optimizer.lr = learning_rate(config.lr_schedule, config.lr, global_step,
                                     config.epochs * steps_per_epoch, steps_per_epoch)
        optimizer.zero_grad()
        loss, _ = model.loss(xb, rng=noise_rng, labels=yb, step=global_step,
                             check_inputs=False)   # batches of uint8 images: clean
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
    return total / count, global_step

"""The PyTorch twin of a scratchvae run: the same model from the same weights, on
the same batches, with the same noise, evaluated with the same evaluation noise.

The run's seed spawns its generators (:func:`scratchvae.rundir.seed_sequences`):
the initial weights are drawn again by scratchvae's own ``make_model`` and copied
into the twin; the batches come from scratchvae's batch iterator driven by a
shuffle generator seeded alike; each step's eps (a VAE) or dead-code restart rows
(a VQ-VAE) come from a noise generator seeded alike, drawn in scratchvae's order
and dtype; the test metrics use the evaluation generator as
:func:`scratchvae.rundir.evaluate` does. A PixelCNN prior's twin learns the code
maps of the prior's own VQ-VAE run, encoded by scratchvae (the prior, not the
VQ-VAE, is what the twin compares), and draws no noise. The learning-rate
schedule, the KL schedule (beta, warm-up, capacity), Adam's epsilon and L2 weight
decay and the gradient clipping follow the run's config. So the two runs of a seed agree for
the first hundreds of steps and then drift apart as float32 round-off grows.

Files: RUN/twin/metrics.jsonl (one record per epoch, the whole file rewritten
atomically each epoch) and RUN/twin/result.json (the final record, written last,
atomically). A twin whose result.json holds the configuration asked for (its
epochs included) is skipped; any other is trained again from the start (a killed
twin leaves no result).
"""
import dataclasses
import json
import math
import os
import time

import numpy as np

from .. import data as data_mod
from .. import files
from ..config import make_model
from ..models import DEFAULT_LATENT_DIM
from ..prior import check_pair, code_data, load_vq_run
from ..rundir import load_data, read_config, seed_sequences
from ..schedules import KLSchedule, learning_rate
from . import TWIN_DIR, check_twin, fastest_adam

METRICS = "metrics.jsonl"
RESULT = "result.json"


def twin_dir(run_dir):
    """The directory of ``run_dir``'s twin."""
    return os.path.join(run_dir, TWIN_DIR)


def read_result(run_dir):
    """The twin's result.json of ``run_dir`` (a dict), or None without one."""
    path = os.path.join(twin_dir(run_dir), RESULT)
    return files.read_json(path) if os.path.exists(path) else None


def twin_options(config):
    """The constructor options of ``config``'s twin (its sizes and codebook options;
    a prior's twin takes its sizes from our model: none)."""
    if config.model == "pixelcnn":
        return {}
    latent = config.latent_dim or DEFAULT_LATENT_DIM[config.model]
    if config.model == "vq-vae":
        return {"code_dim": latent, "num_codes": config.vq_codes,
                "commitment": config.vq_commitment, "codebook_init": config.vq_init,
                "restart_after": config.vq_restart}
    return {"latent_dim": latent}


def _eps(rng, n, z_dim):
    """scratchvae's draw of one sample's eps for n images (ops.sampler.draw_eps), (n, Z)."""
    return rng.standard_normal(size=(1, n, z_dim), dtype=np.float32)[0]


def _labels(torch, y):
    return torch.from_numpy(np.asarray(y, dtype=np.int64))


def _step_loss(torch, twin, config, schedule, xb, yb, noise_rng, step):
    """The training loss of one batch, as scratchvae's model computes it at ``step``."""
    x = torch.from_numpy(xb)
    if config.model == "pixelcnn":   # xb: code maps; the labels only of a conditional prior
        return twin.loss(x, _labels(torch, yb) if config.conditional else None)[0]
    if config.model == "vq-vae":
        return twin.loss(x, rng=noise_rng)[0]
    eps = torch.from_numpy(_eps(noise_rng, len(xb), twin.latent_dim))
    _, recon, kl = twin.loss(x, _labels(torch, yb), eps=eps)
    if schedule.uses_capacity:   # gamma |KL - C_t|
        return recon + schedule.capacity_gamma * (kl - schedule.capacity_at(step)).abs()
    return recon + schedule.beta_at(step) * kl


def _test_metrics(torch, twin, config, x, y):
    """The twin's test metrics with scratchvae's evaluation noise (rundir.evaluate)."""
    twin.eval()
    batch = config.eval_batch_size
    with torch.no_grad():
        if config.model == "vq-vae":
            return twin.test_metrics(x, batch_size=batch)
        if config.model == "pixelcnn":   # as PixelCNN.test_metrics: nats per map, bits per code
            total = 0.0
            for start in range(0, len(x), batch):
                zb = x[start:start + batch]
                yb = None if y is None else _labels(torch, y[start:start + batch])
                total += float(twin.loss(torch.from_numpy(zb), yb)[1]) * len(zb)
            nll = total / len(x)
            return {"test_nll": nll,
                    "test_bits_per_code": nll / (x.shape[1] * x.shape[2]) / math.log(2)}
        rng = np.random.default_rng(seed_sequences(config.seed)[3])
        recon = kl = 0.0
        for start in range(0, len(x), batch):
            xb, yb = x[start:start + batch], y[start:start + batch]
            eps = torch.from_numpy(_eps(rng, len(xb), twin.latent_dim))
            _, r, k = twin.loss(torch.from_numpy(xb), _labels(torch, yb), eps=eps)
            recon += float(r) * len(xb)
            kl += float(k) * len(xb)
    recon, kl = recon / len(x), kl / len(x)
    return {"test_nelbo": recon + kl, "test_recon": recon, "test_kl": kl}


def train_twin(run_dir, epochs=None, threads=1, config=None, log=print):
    """Train the PyTorch twin of the scratchvae run in ``run_dir`` for ``epochs``
    (default: the run's) with ``threads`` PyTorch threads, into RUN/twin. The run's
    configuration is its config.json, or ``config`` given (a run that has not
    written it yet: the twin needs only the configuration). Returns the run's
    directory, what was done (``skipped``, ``trained``) and the twin's record of its
    last epoch. A configuration the twins do not implement raises ValueError
    (:func:`scratchvae.twins.check_twin`)."""
    import torch

    from .models import twin_with_weights_of

    config = read_config(run_dir) if config is None else config
    if epochs is not None:
        config = dataclasses.replace(config, epochs=epochs)
    check_twin(config)
    done = read_result(run_dir)
    if done is not None and done.get("config") == dataclasses.asdict(config):
        return {"run_dir": run_dir, "status": "skipped", "record": done["record"]}
    directory = twin_dir(run_dir)
    files.make_dirs(directory)
    with files.locked(directory):
        for name in (METRICS, RESULT):
            files.remove_temp_files(os.path.join(directory, name))
        if os.path.exists(os.path.join(directory, RESULT)):   # of another configuration
            os.unlink(os.path.join(directory, RESULT))
        torch.set_num_threads(threads)
        history, adam = _train(torch, twin_with_weights_of, config, directory, log)
        result = {"model": config.model, "seed": config.seed, "epochs": config.epochs,
                  "config": dataclasses.asdict(config), "torch": torch.__version__,
                  "adam": adam, "record": history[-1]}
        files.write_json(os.path.join(directory, RESULT), result)
    return {"run_dir": run_dir, "status": "trained", "record": history[-1]}


def _train(torch, twin_with_weights_of, config, directory, log):
    """The twin's epochs (train_twin's loop); returns (its records, the Adam's name)."""
    init_ss, shuffle_ss, noise_ss, _ = seed_sequences(config.seed)
    ours = make_model(config, np.random.default_rng(init_ss))   # the run's initial weights
    twin = twin_with_weights_of(ours, config.model, **twin_options(config))
    del ours
    optimizer, adam = fastest_adam(twin.parameters(), lr=config.lr, eps=config.adam_eps,
                                   weight_decay=config.weight_decay)
    schedule = KLSchedule(config.beta, config.kl_warmup_steps, config.capacity_max,
                          config.capacity_steps, config.capacity_gamma)
    shuffle_rng = np.random.default_rng(shuffle_ss)
    noise_rng = np.random.default_rng(noise_ss)
    quiet = lambda *args, **kwargs: None   # noqa: E731
    if config.model == "pixelcnn":   # the code maps of the prior's own VQ-VAE
        _, vq = load_vq_run(config.vq_run)
        check_pair(config, config.vq_run, vq)
        _, (xtr, ytr), (xte, yte) = code_data(config, vq, log=quiet)
    else:
        _, (xtr, ytr), (xte, yte) = load_data(config, log=quiet, progress=False)
    steps_per_epoch = -(-xtr.shape[0] // config.batch_size)
    step, history = 0, []
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        twin.train()
        total, count = 0.0, 0
        for xb, yb in data_mod.iterate_batches(xtr, ytr, config.batch_size, rng=shuffle_rng,
                                               shuffle=True, binarize=config.binarize,
                                               shift=config.augment_shift):
            lr = learning_rate(config.lr_schedule, config.lr, step,
                               config.epochs * steps_per_epoch, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad()
            loss = _step_loss(torch, twin, config, schedule, xb, yb, noise_rng, step)
            step += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"the twin's loss became {value} at epoch {epoch}, "
                                         f"step {step}")
            loss.backward()
            if config.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(twin.parameters(), config.clip_grad_norm)
            optimizer.step()
            total += value * len(xb)
            count += len(xb)
        record = {"epoch": epoch, "train_loss": total / count,
                  "train_seconds": time.perf_counter() - t0}
        record.update(_test_metrics(torch, twin, config, xte, yte))
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        files.atomic_write_text(os.path.join(directory, METRICS),
                                "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))
        log(f"twin epoch {epoch}: train loss {record['train_loss']:.4f}")
    return history, adam

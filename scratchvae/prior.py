"""A PixelCNN prior over a VQ-VAE's codes: the runs that pair them.

A prior's run (``train --model pixelcnn --vq-run VQDIR``) records which
VQ-VAE it belongs to: ``vq_run`` (VQDIR, absolute), ``vq_codes`` (its
codebook size K) and ``vq_codebook`` (the SHA-256 of its codebook,
:func:`codebook_checksum`). The prior learns the code maps z_q(x) (7 x 7
indices in [0, K)) of the VQ-VAE's own data set, encoded once per call
(:func:`code_data`). Used with a VQ-VAE whose codebook has another checksum
(another run, or the same run trained further), the prior's p(z) would
describe codes that mean other vectors: that is refused
(:class:`PriorMismatch`).

Generation (:func:`sample_images`): z ~ p(z | y) by ancestral sampling
(:meth:`PixelCNN.sample`), then the VQ-VAE's decoder, x = sigmoid(dec(e_z)).

Likelihood (:func:`evaluate_prior`). The VQ-VAE's posterior is a point
mass, q(z | x) = 1[z = z_q(x)], so its entropy is 0 and

    KL(q(z|x) || p(z)) = sum_z q(z|x) log (q(z|x) / p(z)) = -log p(z_q(x)),
    -ELBO(x) = -E_q log p(x | z) + KL = -log p(x | z_q(x)) - log p(z_q(x)):

the VQ-VAE's reconstruction term plus the prior's NLL of the image's code
map, both in nats, directly comparable with a VAE's test -ELBO (with a
class-conditional prior it bounds -log p(x | y), as the CVAE's -ELBO does).
"""
import dataclasses
import hashlib
import os
from typing import NamedTuple

import numpy as np

from .backend import to_numpy
from .checkpoints import CheckpointError
from .config import TrainConfig
from .rundir import load_data, load_run, read_config

#: the run directory holding a prior names its VQ-VAE in ``vq_run``
VQ_MODEL = "vq-vae"


class PriorMismatch(CheckpointError):
    """A prior used with another VQ-VAE than the one whose codes it learned, or a
    VQ-VAE run directory that holds something else."""


def codebook_checksum(vq):
    """SHA-256 (hex) of the VQ-VAE's codebook: its shape, dtype and bytes."""
    E = np.ascontiguousarray(to_numpy(vq.quantizer.codebook.data))
    digest = hashlib.sha256(f"{E.shape} {E.dtype}".encode())
    digest.update(E.tobytes())
    return digest.hexdigest()


def load_vq_run(vq_dir, device="cpu", what="--vq-run"):
    """(config, model) of a trained VQ-VAE run; :class:`PriorMismatch` if ``vq_dir``
    holds another model (``what``: the option that named it, for the message)."""
    config = read_config(vq_dir)
    if config.model != VQ_MODEL:
        raise PriorMismatch(f"{what} {vq_dir} holds a {config.model} run; expected a trained "
                            f"{VQ_MODEL} run (a prior learns a VQ-VAE's code maps)")
    config, model, _ = load_run(vq_dir, device=device)
    return config, model


def check_pair(prior_config, vq_dir, vq, prior_dir="the prior"):
    """:class:`PriorMismatch` unless ``vq`` (loaded from ``vq_dir``) is the VQ-VAE
    whose codes the prior of ``prior_config`` learned: the same codebook size and
    codebook checksum."""
    K, checksum = vq.quantizer.num_codes, codebook_checksum(vq)
    if K != prior_config.vq_codes or checksum != prior_config.vq_codebook:
        raise PriorMismatch(
            f"{prior_dir} is a prior over the codes of the VQ-VAE run {prior_config.vq_run} "
            f"(K = {prior_config.vq_codes} codes, codebook sha256 "
            f"{prior_config.vq_codebook[:16]}...); {vq_dir} has K = {K}, codebook sha256 "
            f"{checksum[:16]}...: another VQ-VAE, or that run trained further. Use the prior "
            f"with its own VQ-VAE, or train a prior for this one (train --model pixelcnn "
            f"--vq-run {vq_dir})")


def bind_vq_run(config, resume=False, device="cpu"):
    """``(config, vq)``: a prior's config bound to its VQ-VAE run and that model.

    A new run records the VQ run (absolute path), its codebook size and
    checksum and takes its data set (the codes are of that data); a resumed
    run checks that the VQ run is still the one it recorded.
    """
    vq_config, vq = load_vq_run(config.vq_run, device)
    if resume:
        check_pair(config, config.vq_run, vq, "this prior")
        return config, vq
    return dataclasses.replace(
        config, vq_run=os.path.abspath(config.vq_run), vq_codes=vq.quantizer.num_codes,
        vq_codebook=codebook_checksum(vq), dataset=vq_config.dataset,
        data_dir=vq_config.data_dir, use_sample=vq_config.use_sample,
        download=vq_config.download, train_limit=config.train_limit or vq_config.train_limit,
        test_limit=config.test_limit or vq_config.test_limit), vq


def encode(vq, x, batch_size=1000):
    """The code maps z_q(x) (N, h, w) int64 on the host of host images x."""
    return np.concatenate([to_numpy(vq.codes(vq.xp.asarray(x[i:i + batch_size])))
                           for i in range(0, x.shape[0], batch_size)]).astype(np.int64)


def code_data(config, vq, log=print, progress=False):
    """``(dataset, (train codes, labels), (test codes, labels))`` of a prior's run:
    the VQ-VAE's data encoded once; labels are None for an unconditional prior."""
    ds, (xtr, ytr), (xte, yte) = load_data(config, log=log, progress=progress)
    log(f"encoding {xtr.shape[0]} train and {xte.shape[0]} test images with the VQ-VAE "
        f"{config.vq_run}")
    ztr, zte = encode(vq, xtr), encode(vq, xte)
    if not config.conditional:
        ytr = yte = None
    return ds, (ztr, ytr), (zte, yte)


class PriorPair(NamedTuple):
    """A prior's run and its VQ-VAE, loaded and checked to belong together."""
    config: TrainConfig      # the prior's
    prior: object            # PixelCNN
    vq_config: TrainConfig
    vq: object               # VQVAE
    epoch: int               # the prior's epochs trained


def load_prior_pair(prior_dir, vq_dir=None, device="cpu"):
    """The :class:`PriorPair` of a prior's run and its VQ-VAE (the run it recorded,
    or ``vq_dir``, which must be that VQ-VAE: :func:`check_pair`)."""
    prior_config = read_config(prior_dir)
    if prior_config.model != "pixelcnn":
        raise PriorMismatch(f"--prior {prior_dir} holds a {prior_config.model} run; expected "
                            f"a pixelcnn prior (train --model pixelcnn --vq-run DIR)")
    vq_config, vq = load_vq_run(vq_dir or prior_config.vq_run, device,
                                "--checkpoint" if vq_dir else f"{prior_dir}'s vq_run")
    check_pair(prior_config, vq_dir or prior_config.vq_run, vq, prior_dir)
    prior_config, prior, meta = load_run(prior_dir, device=device)
    return PriorPair(prior_config, prior, vq_config, vq, int(meta["epoch"]))


def sample_images(vq, prior, n, rng, labels=None, temperature=1.0, batch_size=500):
    """n images (n, 1, H, W) on the host: code maps from the prior (given
    ``labels``, one per image or one for all), decoded by the VQ-VAE."""
    if labels is not None:
        labels = np.broadcast_to(np.asarray(labels), (n,))
    images = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        yb = None if labels is None else labels[start:start + m]
        codes = prior.sample(m, rng, labels=yb, temperature=temperature)
        images.append(to_numpy(vq.decode_codes(codes)))
    return np.concatenate(images)


def prior_sampler(config, prior, temperature=1.0):
    """``sampler(n, rng, labels)`` -> host images of a trained prior (its run's
    ``config``) and the VQ-VAE it records, checked to be its own; ``n_classes``:
    the prior's classes (0: unconditional). The sampler of FD and IS
    (:mod:`scratchvae.quality`)."""
    _, vq = load_vq_run(config.vq_run, config.device, "vq_run")
    check_pair(config, config.vq_run, vq)

    def sampler(n, rng, labels=None):
        return sample_images(vq, prior, n, rng, labels=labels, temperature=temperature)

    sampler.n_classes = prior.n_classes
    return sampler


def evaluate_prior(prior_dir, device="cpu", log=print, progress=False, batch_size=1000):
    """Test metrics of a prior's run with its VQ-VAE (module docstring):

    test_nll            -log p(z_q(x) | y) in nats per code map, mean over the test set
    test_bits_per_code  test_nll / (h w ln 2)
    test_recon          -log p(x | z_q(x)) in nats per image (the VQ-VAE's BCE)
    test_nelbo          test_recon + test_nll: the VQ-VAE + prior -ELBO per image
    """
    pair = load_prior_pair(prior_dir, device=device)
    config, prior, vq = pair.config, pair.prior, pair.vq
    _, _, (xte, yte) = load_data(config, log=log, progress=progress)
    nll = recon = 0.0
    for start in range(0, xte.shape[0], batch_size):
        xb = vq.xp.asarray(xte[start:start + batch_size])
        _, parts = vq.loss(xb, training=False)            # recon and z_q(x) of the batch
        recon += float(parts["recon_per_image"].sum())
        yb = yte[start:start + batch_size] if config.conditional else None
        nll += float(prior.loss(parts["indices"], yb)[1]["nll_per_map"].sum())
    n, positions = xte.shape[0], int(np.prod(parts["indices"].shape[1:]))
    return {"epoch": pair.epoch, "model": "pixelcnn", "dataset": config.dataset,
            "vq_run": config.vq_run, "conditional": config.conditional,
            "test_nll": nll / n, "test_bits_per_code": nll / n / positions / np.log(2),
            "test_recon": recon / n, "test_nelbo": (recon + nll) / n}


__all__ = ["PriorMismatch", "PriorPair", "codebook_checksum", "load_vq_run", "check_pair",
           "bind_vq_run", "encode", "code_data", "load_prior_pair", "sample_images",
           "prior_sampler", "evaluate_prior"]

"""The VQ-VAE (van den Oord et al., 2017) for 28x28 images: 79,057 parameters.

    encoder:   Conv(1,32,4,2,1) ReLU Conv(32,64,4,2,1) ReLU Conv(64,16,1,1,0)   -> z_e (16, 7, 7)
    quantiser: each of the 7x7 vectors z_e[:, h, w] -> its nearest of K = 128 codes
               e_k in R^16 (squared L2)                                          -> z_q (16, 7, 7)
    decoder:   Conv(16,64,3,1,1) ReLU ConvT(64,32,4,2,1) ReLU ConvT(32,1,4,2,1)  -> logits 1x28x28

Loss of a batch (mean over its N images; sums over pixels and over the
16x7x7 latent):

    loss = 1/N sum_n [ BCE(logits_n, x_n) + ||sg(z_e) - z_q||^2 + beta ||z_e - sg(z_q)||^2 ]

with beta = 0.25 (the commitment cost) and sg() the stop-gradient
(scratchvae/ops/vq.py derives every gradient). The backward
(:meth:`VQVAE.backward`) is the forward read backwards: likelihood ->
decoder -> straight-through copy across the quantiser (+ commitment term)
-> encoder; the codebook term sends its gradient to the codebook only.

Options of the quantiser (:class:`VectorQuantizer`):

- ``codebook_init``: 'uniform' (U(-1/K, 1/K), as in most VQ-VAE code) or
  'normal' (N(0, 1), PyTorch's default for ``nn.Embedding``);
- ``ema=True``: the codebook is not trained by the codebook loss but set
  to exponential moving averages of the vectors assigned to each code
  (decay 0.99, Laplace-smoothed, zero-debiased; ops.vq.ema_update); the
  loss then has no codebook term;
- ``restart_after=R > 0``: a code that no vector chose during R consecutive
  training steps is re-initialised to a random encoder output of the
  current batch (drawn with the training rng).

The defaults of the ``vq-vae`` model built by :func:`vq_vae` (N(0, 1) init,
codebook loss, restarts after 1 unused step) and the measurements behind
them: :data:`DEFAULTS` and the README. (The VectorQuantizer class on its
own defaults to the uniform init and no restarts.)

One file holds the quantiser module, the model and its builder (about 400
lines): the model's backward reads the quantiser's cache, so the chain is
followed in one place.
"""
from dataclasses import dataclass

import numpy as np

from kernels.codes import restart_dead_codes
from kernels.counter_rng import CounterDraws
from kernels.sigmoid import sigmoid

from .. import losses
from ..backend import check_float, check_int, check_rng, check_shape, get_xp, to_device, to_numpy
from ..layers import Conv2d, ConvTranspose2d, Module, Parameter, ReLU, Sequential
from ..ops.vq import (as_rows, code_counts, codebook_loss_backward, commitment_loss_backward,
                      commitment_loss_forward, ema_update, latent_losses_forward, vq_assign,
                      vq_quantize_backward, vq_quantize_forward)

CODEBOOK_INITS = ("uniform", "normal")

#: Default options of the quantiser. Measured on MNIST (10 epochs, batch 128,
#: Adam 1e-3; test BCE in nats / codes used on the test set / perplexity):
#:
#:   init     codebook  restarts   seed 0              seed 1
#:   normal   loss      off        61.07 /  15 /  6.9
#:   uniform  loss      off        55.46 /  94 / 36.4
#:   uniform  EMA       off        55.14 /  80 / 15.9
#:   uniform  EMA       1 step     53.73 / 128 / 76.4  53.68 / 128 / 77.5
#:   uniform  loss      1 step     53.42 / 128 / 65.8  53.50 / 128 / 70.0
#:   normal   loss      1 step     53.23 / 128 / 71.6  53.28 / 128 / 63.8   <- default
DEFAULTS = {"num_codes": 128, "commitment": 0.25, "codebook_init": "normal", "ema": False,
            "decay": 0.99, "epsilon": 1e-5, "restart_after": 1}


def codebook_init(rng, num_codes, code_dim, kind, dtype):
    """The initial codebook (K, D) from a NumPy generator.

    'normal':  N(0, 1) entries, PyTorch's default for ``nn.Embedding``;
    'uniform': U(-1/K, 1/K) entries, the common VQ-VAE choice: all codes
               start close together near the origin.
    """
    if kind == "normal":
        return rng.standard_normal((num_codes, code_dim)).astype(dtype)
    if kind == "uniform":
        return rng.uniform(-1 / num_codes, 1 / num_codes, size=(num_codes, code_dim)).astype(dtype)
    raise ValueError(f"VectorQuantizer: expected codebook_init in {CODEBOOK_INITS}, got {kind!r}")


class VectorQuantizer(Module):
    """A codebook of K codes of size D and its upkeep during training.

    The codebook is a Parameter (trained by the codebook loss, or, with
    ``ema=True``, overwritten by :func:`~scratchvae.ops.vq.ema_update`; its
    grad then stays None and the optimiser skips it). The EMA statistics
    and the per-code count of steps without use are buffers: saved with
    the model's state (see :meth:`buffers`), never trained.
    """

    BUFFERS = ("ema_count", "ema_sum", "ema_steps", "unused_steps")

    def __init__(self, num_codes, code_dim, codebook_init_kind="uniform", ema=False,
                 decay=0.99, epsilon=1e-5, restart_after=0, rng=None, dtype=np.float32):
        num_codes = check_int("VectorQuantizer", "num_codes", num_codes, 1)
        code_dim = check_int("VectorQuantizer", "code_dim", code_dim, 1)
        if not 0 < decay < 1:
            raise ValueError(f"VectorQuantizer: expected 0 < decay < 1, got {decay}")
        if not epsilon > 0:
            raise ValueError(f"VectorQuantizer: expected epsilon > 0, got {epsilon}")
        if restart_after < 0:
            raise ValueError(f"VectorQuantizer: expected restart_after >= 0, got {restart_after}")
        self.num_codes, self.code_dim = num_codes, code_dim
        self.init_kind = codebook_init_kind
        self.ema, self.decay, self.epsilon = bool(ema), float(decay), float(epsilon)
        self.restart_after = int(restart_after)
        check_rng("VectorQuantizer", rng)
        self.codebook = Parameter(codebook_init(rng, num_codes, code_dim, codebook_init_kind,
                                                dtype))
        self.ema_count = np.zeros(num_codes)                   # c_j (float64)
        self.ema_sum = np.zeros((num_codes, code_dim))         # S_j (float64)
        self.ema_steps = np.zeros((), dtype=np.int64)          # t
        self.unused_steps = np.zeros(num_codes, dtype=np.int64)

    def assign(self, z_e):
        """Nearest codes of z_e (N, D, H, W) -> int64 (N, H, W)."""
        return vq_assign(z_e, self.codebook.data)

    # -- training-time upkeep -------------------------------------------------
    def update(self, z_e, indices, rng):
        """After a training forward: the EMA step (if ``ema``), then restarts.

        z_e (N, D, H, W) are this batch's encoder outputs and ``indices``
        (N, H, W) their codes. The codebook is changed in place.
        """
        rows = as_rows(z_e)
        idx = indices.reshape(-1)
        E = self.codebook.data
        if self.ema:
            self.ema_count, self.ema_sum, steps, new = ema_update(
                self.ema_count, self.ema_sum, int(self.ema_steps), rows, idx,
                self.decay, self.epsilon)
            self.ema_steps = np.asarray(steps, dtype=np.int64)
            E[...] = new
        if self.restart_after:
            self._restart_dead_codes(rows, idx, rng)

    def _restart_dead_codes(self, rows, idx, rng):
        """Codes unused for ``restart_after`` steps get random rows of this batch.

        The rows are drawn without replacement with the NumPy generator
        ``rng`` (on the host, so a GPU run draws the same ones), or, when
        ``rng`` is a :class:`kernels.counter_rng.CounterDraws` (a captured
        step), by kernels/codes.py's shuffle keyed by it, with no host read.
        Under EMA the code's statistics restart as if it had been chosen by
        exactly that one vector: N_j = 1, m_j = the vector.
        """
        if isinstance(rng, CounterDraws):   # the rows picked on the device (kernels/codes.py)
            if self.ema:
                raise ValueError("VectorQuantizer: restarts from counter-based draws keep no "
                                 "EMA statistics; train the codebook by its loss (ema=False)")
            restart_dead_codes(self.codebook.data, self.unused_steps, rows,
                               code_counts(idx, self.num_codes), self.restart_after, *rng)
            return
        xp = get_xp(rows)
        used = code_counts(idx, self.num_codes) > 0
        self.unused_steps = xp.where(used, 0, self.unused_steps + 1)
        dead = to_numpy(xp.nonzero(self.unused_steps >= self.restart_after)[0])
        if dead.size == 0:
            return
        dead = dead[:rows.shape[0]]                  # more dead codes than rows: tiny batches
        picks = rng.choice(rows.shape[0], size=dead.size, replace=False)
        dead_x, picks_x = xp.asarray(dead), xp.asarray(picks)
        fresh = rows[picks_x]
        self.codebook.data[dead_x] = fresh
        self.unused_steps[dead_x] = 0
        if self.ema:
            debias = 1 - self.decay ** int(self.ema_steps)
            self.ema_count[dead_x] = debias * 1.0
            self.ema_sum[dead_x] = debias * fresh.astype(xp.float64)

    # -- buffers ------------------------------------------------------------------
    def buffers(self):
        """name -> array of the non-trained state (EMA statistics, usage counters)."""
        return {name: getattr(self, name) for name in self.BUFFERS}

    def load_buffers(self, state):
        xp = self.xp
        for name in self.BUFFERS:
            old = getattr(self, name)
            arr = np.asarray(state[name])
            if arr.shape != tuple(old.shape):
                raise ValueError(f"load_state_dict: expected quantizer.{name} of shape "
                                 f"{tuple(old.shape)}, got {arr.shape}")
            value = arr.astype(old.dtype)
            setattr(self, name, value if name == "ema_steps" else to_device(value, xp))

    def move_buffers(self, xp):
        for name in self.BUFFERS:
            if name != "ema_steps":                  # a host scalar
                setattr(self, name, to_device(getattr(self, name), xp))

    def __repr__(self):
        return (f"VectorQuantizer({self.num_codes}, {self.code_dim}, init={self.init_kind!r}, "
                f"ema={self.ema}, restart_after={self.restart_after})")


@dataclass
class _Cache:
    """What VQVAE.backward needs from the last call of VQVAE.loss."""
    n: int
    recon: tuple
    quantize: tuple
    commitment: tuple
    codebook: tuple      # None with the EMA codebook (no codebook loss)


class VQVAE(Module):
    """Encoder -> vector quantiser -> decoder, Bernoulli likelihood.

    encoder: images (N, *image_shape) -> z_e (N, D, h, w);
    decoder: z_q (N, D, h, w) -> logits (N, *image_shape).
    """

    def __init__(self, encoder, quantizer, decoder, image_shape=(1, 28, 28), commitment=0.25):
        if not commitment >= 0:
            raise ValueError(f"VQVAE: expected commitment >= 0, got {commitment}")
        self.encoder = encoder.no_input_grad()       # images need no gradient
        self.quantizer = quantizer
        self.decoder = decoder
        self.param_dtype = encoder.dtype
        self.image_shape = tuple(image_shape)
        self.commitment = float(commitment)
        self._cache = None

    # -- the pieces ------------------------------------------------------------
    def encode(self, x):
        """x (N, *image_shape) -> z_e (N, D, h, w)."""
        check_shape("VQVAE", "images", x, (None,) + self.image_shape)
        check_float("VQVAE", "images", x, self.param_dtype)
        return self.encoder.forward(x)

    def _forward(self, x, indices=None):
        """x -> (z_e, indices, z_q, q_cache, logits); ``indices`` fixes the codes."""
        z_e = self.encode(x)
        if indices is None:
            indices = self.quantizer.assign(z_e)
        z_q, q_cache = vq_quantize_forward(z_e, self.quantizer.codebook.data, indices)
        return z_e, indices, z_q, q_cache, self.decoder.forward(z_q)

    def codes(self, x):
        """The code indices (N, h, w) of images x."""
        return self.quantizer.assign(self.encode(x))

    def reconstruct(self, x):
        """sigmoid(decoder(z_q(x))): the reconstructed images."""
        logits = self._forward(x)[4]
        return sigmoid(logits)

    def decode_codes(self, indices):
        """Code maps (N, h, w) -> images sigmoid(decoder(z_q)), z_q[n, :, i, j] the
        code vector e_k of k = indices[n, i, j] (how a prior's samples are drawn)."""
        E = self.quantizer.codebook.data
        indices = get_xp(E).asarray(indices)
        if indices.ndim != 3 or indices.dtype.kind not in "iu":
            raise ValueError(f"VQVAE.decode_codes: expected integer code maps (N, h, w), got "
                             f"{indices.dtype} {tuple(indices.shape)}")
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= E.shape[0]):
            raise ValueError(f"VQVAE.decode_codes: expected codes in [0, {E.shape[0]}), got "
                             f"range [{int(indices.min())}, {int(indices.max())}]")
        z_q = get_xp(E).ascontiguousarray(get_xp(E).moveaxis(E[indices], 3, 1))
        return sigmoid(self.decoder.forward(z_q))

    def sample(self, n, rng):
        raise NotImplementedError("VQVAE.sample: a VQ-VAE has no prior of its own; train a "
                                  "PixelCNN prior over its codes (train --model pixelcnn "
                                  "--vq-run DIR) and sample with it (sample --prior DIR)")

    # -- loss and its backward -----------------------------------------------------
    def loss(self, x, rng=None, eps=None, labels=None, step=None, training=True, indices=None,
             check_inputs=True):
        """Mean VQ-VAE loss of the batch x; returns ``(loss, parts)``.

        ``rng`` is used only for dead-code restarts (training with
        ``restart_after > 0``); ``eps``, ``labels`` and ``step`` are part of
        every model's signature and unused. With ``training=True`` the
        quantiser's upkeep (EMA step, restarts) runs *after* the forward,
        changing the codebook for the next step. ``indices`` (N, h, w)
        imposes the code assignments (gradient checks). ``check_inputs``: refuse
        images outside [0, 1] or not finite (the training loop skips it).

        parts: batch means 'recon' (BCE), 'vq' (the latent terms of the
        loss), 'quantization_error' (||z_e - z_q||^2), and the per-image
        arrays 'recon_per_image', 'vq_per_image',
        'quantization_error_per_image'; 'indices' (N, h, w).
        """
        if check_inputs:
            losses.check_values("VQVAE.loss", "images (bernoulli likelihood)", x,
                                *losses.TARGET_RANGE["bernoulli"])
        q = self.quantizer
        if training and q.restart_after and rng is None:
            raise ValueError("VQVAE.loss: dead-code restarts need rng (a seeded generator)")
        z_e, indices, z_q, q_cache, logits = self._forward(x, indices)
        E = q.codebook.data
        recon, recon_cache = losses.bernoulli_nll_forward(logits, x, fused_grad=training)
        if q.ema:                     # the codebook moves by averages, not by a loss
            sq, commit_cache = commitment_loss_forward(z_e, E, indices)
            cb_cache = None
        else:                         # same value as the commitment term, gradient to E
            sq, commit_cache, cb_cache = latent_losses_forward(z_e, E, indices)
        vq = ((0.0 if q.ema else 1.0) + self.commitment) * sq
        self._cache = _Cache(x.shape[0], recon_cache, q_cache, commit_cache, cb_cache)
        loss = recon.mean() + vq.mean()
        parts = {"recon": recon.mean(), "vq": vq.mean(), "quantization_error": sq.mean(),
                 "recon_per_image": recon, "vq_per_image": vq,
                 "quantization_error_per_image": sq, "indices": indices}
        if training:
            q.update(z_e, indices, rng)
        return loss, parts

    def backward(self):
        """Accumulate the gradient of the last ``loss`` into every parameter.

        loss = 1/N sum_n [ recon_n + cb_n + beta commit_n ], read backwards.
        """
        c = self._cache
        if c is None:
            raise RuntimeError("VQVAE.backward: call loss() first")
        self._cache = None
        xp, dtype, n = get_xp(c.commitment[0]), self.param_dtype, c.n
        # 1. likelihood: d loss / d logits
        dlogits = losses.bernoulli_nll_backward(xp.full(n, 1.0 / n, dtype=dtype), c.recon)
        # 2. decoder: d loss / d z_q
        dz_q = self.decoder.backward(dlogits)
        # 3. quantiser, straight through: d loss / d z_e = d loss / d z_q ...
        dz_e = vq_quantize_backward(dz_q, c.quantize)
        # 4. ... plus the commitment term's 2 beta / N (z_e - z_q)
        dz_e = dz_e + commitment_loss_backward(
            xp.full(n, self.commitment / n, dtype=dtype), c.commitment)
        # 5. codebook term: 2 / N (e_k - z_e), scattered onto the codes
        if c.codebook is not None:
            self.quantizer.codebook.accumulate(
                codebook_loss_backward(xp.full(n, 1.0 / n, dtype=dtype), c.codebook))
        # 6. encoder: gradients of its parameters
        self.encoder.backward(dz_e)

    # -- evaluation ------------------------------------------------------------------
    def test_metrics(self, x, labels=None, batch_size=1000, rng=None):
        """Reconstruction and codebook usage over the images of ``x`` (host array).

        test_recon        BCE per image (nats, summed over pixels), mean over images
        test_mse          squared error of sigmoid(logits) vs x, mean over all pixels
        test_vq_loss      the latent terms of the loss per image, mean over images
        test_quantization_error  ||z_e - z_q||^2 per image (summed over the latent)
        test_loss         test_recon + test_vq_loss
        perplexity        exp(-sum_k p_k log p_k), p_k the share of test vectors on code k
        codes_used        number of codes chosen at least once on the test set
        """
        xp = self.xp
        q = self.quantizer
        n_img = x.shape[0]
        counts = xp.zeros(q.num_codes, dtype=xp.int64)
        recon = mse = sq = 0.0
        for start in range(0, n_img, batch_size):
            xb = xp.asarray(x[start:start + batch_size])
            z_e, indices, _, _, logits = self._forward(xb)
            recon += float(losses.bernoulli_nll_forward(logits, xb)[0].sum())
            mse += float(((sigmoid(logits) - xb) ** 2).sum())
            sq += float(commitment_loss_forward(z_e, q.codebook.data, indices)[0].sum())
            counts += code_counts(indices, q.num_codes)
        self._cache = None
        counts = to_numpy(counts).astype(np.float64)
        p = counts / counts.sum()
        nz = p[p > 0]
        vq_weight = (0.0 if q.ema else 1.0) + self.commitment
        return {"test_recon": recon / n_img,
                "test_mse": mse / x[:1].size / n_img,
                "test_vq_loss": vq_weight * sq / n_img,
                "test_quantization_error": sq / n_img,
                "test_loss": (recon + vq_weight * sq) / n_img,
                "perplexity": float(np.exp(-(nz * np.log(nz)).sum())),
                "codes_used": int((p > 0).sum())}

    # -- state: parameters plus the quantiser's buffers -----------------------------------
    def state_dict(self):
        state = super().state_dict()
        for name, arr in self.quantizer.buffers().items():
            state["quantizer." + name] = to_numpy(arr).copy()
        return state

    def load_state_dict(self, state):
        state = dict(state)
        missing = [n for n in VectorQuantizer.BUFFERS if "quantizer." + n not in state]
        if missing:
            raise ValueError(f"load_state_dict: missing quantizer buffers {missing}")
        buffers = {n: state.pop("quantizer." + n) for n in VectorQuantizer.BUFFERS}
        super().load_state_dict(state)
        self.quantizer.load_buffers(buffers)

    def to(self, xp):
        super().to(xp)
        self.quantizer.move_buffers(xp)
        return self


#: neutral values of the VAE options the trainer passes to every model
NEUTRAL_VAE_OPTIONS = {"likelihood": "bernoulli", "beta": 1.0, "n_samples": 1,
                       "objective": "elbo"}


def _check_vae_options(options):
    """ValueError unless every VAE option is neutral: the loss is Bernoulli,
    has no KL term and draws no samples. ``gaussian_variance`` is ignored
    (it only affects a Gaussian likelihood); any other option must be
    falsy (0, 0.0, None, False: a schedule or feature switched off)."""
    for name, value in options.items():
        if name == "gaussian_variance":
            continue
        neutral = NEUTRAL_VAE_OPTIONS.get(name)
        if (value != neutral) if name in NEUTRAL_VAE_OPTIONS else bool(value):
            raise ValueError(f"vq_vae: option {name}={value!r} does not apply to a VQ-VAE "
                             f"(Bernoulli likelihood, no KL term; the commitment weight "
                             f"is --vq-commitment)")


def vq_vae(image_shape=(1, 28, 28), latent_dim=16, num_codes=DEFAULTS["num_codes"],
           channels=(32, 64), commitment=DEFAULTS["commitment"],
           codebook_init=DEFAULTS["codebook_init"], ema=DEFAULTS["ema"],
           decay=DEFAULTS["decay"], epsilon=DEFAULTS["epsilon"],
           restart_after=DEFAULTS["restart_after"], rng=None, dtype=np.float32,
           **vae_options):
    """Build the VQ-VAE; ``latent_dim`` is the code size D (16).

    ``channels`` (c1, c2) are the widths of the conv stages (32, 64); gradient
    checks use a narrower instance. ``vae_options`` are the Gaussian-VAE
    options every model receives from the trainer (likelihood, beta,
    n_samples, KL schedules, ...): they do not apply to this model, so only
    their neutral values are accepted (:func:`_check_vae_options`).
    """
    _check_vae_options(vae_options)
    rng = np.random.default_rng(0) if rng is None else rng
    C, H, W = image_shape
    if H % 4 or W % 4:
        raise ValueError(f"vq_vae: expected image sides divisible by 4, got {image_shape}")
    c1, c2 = channels
    kw = dict(rng=rng, dtype=dtype)
    encoder = Sequential(
        Conv2d(C, c1, 4, 2, 1, **kw), ReLU(inplace=True),
        Conv2d(c1, c2, 4, 2, 1, **kw), ReLU(inplace=True),
        Conv2d(c2, latent_dim, 1, 1, 0, **kw),
    )
    quantizer = VectorQuantizer(num_codes, latent_dim, codebook_init, ema=ema, decay=decay,
                                epsilon=epsilon, restart_after=restart_after, **kw)
    decoder = Sequential(
        Conv2d(latent_dim, c2, 3, 1, 1, **kw), ReLU(inplace=True),
        ConvTranspose2d(c2, c1, 4, 2, 1, **kw), ReLU(inplace=True),
        ConvTranspose2d(c1, C, 4, 2, 1, **kw),
    )
    return VQVAE(encoder, quantizer, decoder, image_shape=image_shape, commitment=commitment)

"""One training epoch on the GPU with the data on the device and no host work per step.

:class:`DeviceRun` holds what the `train` command's loop needs on the device:

- the training images, copied to the device once per run (labels stay on the
  host: the conditional models one-hot them from host integers);
- each epoch's order, drawn on the host from the run's shuffle generator
  exactly as the CPU path draws it (``rng.permutation(N)``) and copied once per
  epoch: the same batches as a CPU run, and the generator's state in the
  checkpoint means what it means on the CPU;
- batches gathered on the device (``xp.take(..., out=)``) into a reused buffer;
- the sampler's noise (and the uniforms of dynamic binarisation) drawn on the
  device by :class:`DeviceNoise` into reused buffers; its generator is seeded
  per epoch from the run's noise seed, so a resumed run draws what a run
  trained straight through draws;
- the loss summed on the device and read back every :data:`LOSS_EVERY` steps
  and at the end of the epoch: the only device-to-host transfers of a step
  (none at all in most steps). A non-finite sum at a read-back stops the run,
  naming the steps it covers.

The noise source is an injection point: ``DeviceRun.Noise`` is the class the
run draws from. The tests replace it by one that draws the CPU path's numbers
(from the run's host generators, in the CPU path's order), so that a device
run and a CPU run see the same batches and the same eps and must end with the
same parameters.
"""
import math

import numpy as np

from .config import NOT_GAUSSIAN_LATENT
from .data import random_shift
from .optimizers import clip_grad_norm_device
from .schedules import learning_rate

#: the summed loss is read back every this many steps (and at an epoch's end)
LOSS_EVERY = 50

#: the spawn key of the device noise's seed sequence (after the run's four streams)
DEVICE_NOISE_KEY = 1000


class DeviceNoise:
    """Random numbers drawn on the device: ``standard_normal`` (the sampler's eps)
    and ``random`` (binarisation), each call of a step writing into its own
    reused buffer. ``start_epoch`` reseeds the device generator from (the run's
    noise seed, the epoch); ``new_step`` rewinds the buffers for the next step.
    """

    def __init__(self, xp, noise_seed_sequence, shuffle_rng=None, noise_rng=None):
        self.xp, self.ss = xp, noise_seed_sequence
        self.buffers, self.used, self.generator, self.takes_out = [], 0, None, True

    def start_epoch(self, epoch):
        ss = np.random.SeedSequence(self.ss.entropy,
                                    spawn_key=tuple(self.ss.spawn_key) + (DEVICE_NOISE_KEY, epoch))
        self.generator = self.xp.random.default_rng(int(ss.generate_state(1, np.uint64)[0]))

    def new_step(self):
        self.used = 0

    def _buffer(self, size, dtype):
        """The step's next buffer, of this shape and dtype (made once)."""
        shape = (size,) if isinstance(size, (int, np.integer)) else tuple(size)
        k, self.used = self.used, self.used + 1
        if k == len(self.buffers):
            self.buffers.append(None)
        buf = self.buffers[k]
        if buf is None or buf.shape != shape or buf.dtype != np.dtype(dtype):
            buf = self.buffers[k] = self.xp.empty(shape, dtype=dtype)
        return buf

    def standard_normal(self, size=None, dtype=np.float64):
        return self._draw("standard_normal", self._buffer(size, dtype))

    def random(self, size=None, dtype=np.float64):
        return self._draw("random", self._buffer(size, dtype))

    def _draw(self, method, buf):
        """The generator's ``method`` into ``buf``: with ``out=`` where the generator
        takes it, else drawn and copied (a CuPy without ``out=``: one temporary)."""
        draw = getattr(self.generator, method)
        if self.takes_out:
            try:
                draw(size=buf.shape, dtype=buf.dtype, out=buf)
                return buf
            except TypeError:           # no out= argument
                self.takes_out = False
        buf[...] = draw(size=buf.shape, dtype=buf.dtype)
        return buf


class HostNoise:
    """The CPU path's numbers for a device run: eps from the run's noise generator,
    the binarisation's uniforms from its shuffle generator, in the order the CPU
    path draws them, each copied to the device (a transfer per draw). For tests
    that compare a device run with a CPU run (``DeviceRun.Noise = HostNoise``)."""

    def __init__(self, xp, noise_seed_sequence, shuffle_rng=None, noise_rng=None):
        self.xp, self.shuffle_rng, self.noise_rng = xp, shuffle_rng, noise_rng

    def start_epoch(self, epoch):
        pass

    def new_step(self):
        pass

    def standard_normal(self, size=None, dtype=np.float64):
        return self.xp.asarray(self.noise_rng.standard_normal(size=size, dtype=dtype))

    def random(self, size=None, dtype=np.float64):
        # the CPU path draws float64 uniforms (BatchIterator: rng.random(xb.shape))
        return self.xp.asarray(self.shuffle_rng.random(size))


class DeviceRun:
    """The training set on the device and the epochs of :func:`scratchvae.train.train`
    for a model whose parameters live there (see the module docstring)."""

    #: the class of the run's noise source (tests replace it: module docstring)
    Noise = DeviceNoise

    def __init__(self, xp, config, x, y, shuffle_rng, noise_rng, noise_ss):
        self.xp, self.config = xp, config
        self.x = xp.asarray(x)                      # the one copy of the images
        self.y = y                                  # host labels, or None
        self.shuffle_rng, self.noise_ss = shuffle_rng, noise_ss
        self.noise = self.Noise(xp, noise_ss, shuffle_rng=shuffle_rng, noise_rng=noise_rng)
        # a VQ-VAE's restarts, a prior, a classifier: no Gaussian sampler; what they draw
        # comes from the host generator, as on the CPU
        self.model_rng = noise_rng if config.model in NOT_GAUSSIAN_LATENT else self.noise
        self.batches = {}                           # batch size -> its reused buffer
        self.window = xp.zeros((), dtype=np.float64)   # summed loss since the last read-back

    @property
    def steps_per_epoch(self):
        return -(-self.x.shape[0] // self.config.batch_size)

    def _batch(self, order, k):
        """Batch k of the epoch's device order, gathered into its reused buffer."""
        xp, b = self.xp, self.config.batch_size
        idx = order[k * b:(k + 1) * b]
        n = idx.shape[0]
        buf = self.batches.get(n)
        if buf is None:
            buf = self.batches[n] = xp.empty((n,) + self.x.shape[1:], dtype=self.x.dtype)
        xp.take(self.x, idx, axis=0, out=buf)
        return buf

    def epoch(self, model, optimizer, epoch, global_step, bar, diverged):
        """Train one epoch; returns ``(mean loss over its images, global_step)``.

        ``bar``: the epoch's tqdm bar (updated once per step, its postfix at each
        read-back); ``diverged(what)``: the exception to raise when a read-back
        finds a non-finite loss.
        """
        xp, config = self.xp, self.config
        total_steps = config.epochs * self.steps_per_epoch
        host_order = self.shuffle_rng.permutation(self.x.shape[0])
        order = xp.asarray(host_order)              # one host-to-device copy per epoch
        self.noise.start_epoch(epoch)
        self.window.fill(0)
        total, count, first, self.window_images = 0.0, 0, 1, 0
        for k in range(self.steps_per_epoch):
            xb = self._batch(order, k)
            b = config.batch_size
            yb = None if self.y is None else self.y[host_order[k * b:(k + 1) * b]]
            if config.augment_shift:       # host offsets, as the CPU path draws them
                xb = random_shift(xb, config.augment_shift, self.shuffle_rng)
            self.noise.new_step()
            if config.binarize:            # pixel p -> 1 with probability p
                u = self.noise.random(xb.shape, dtype=xb.dtype)
                xp.less(u, xb, out=xb)
            optimizer.lr = learning_rate(config.lr_schedule, config.lr, global_step,
                                         total_steps, self.steps_per_epoch)
            optimizer.zero_grad()
            loss, _ = model.loss(xb, rng=self.model_rng, labels=yb, step=global_step,
                                 check_inputs=False)
            global_step += 1
            xp.add(self.window, xp.asarray(loss, dtype=np.float64) * xb.shape[0],
                   out=self.window)
            model.backward()
            if config.clip_grad_norm:
                clip_grad_norm_device(model.parameters(), config.clip_grad_norm)
            optimizer.step()
            count += xb.shape[0]
            self.window_images += xb.shape[0]
            bar.update(1)
            if (k + 1) % LOSS_EVERY == 0 or k + 1 == self.steps_per_epoch:
                total += self._read_back(epoch, first, k + 1, bar, diverged)
                first = k + 2
        return total / count, global_step

    def _read_back(self, epoch, first, last, bar, diverged):
        """The loss summed over steps first..last (one transfer); raise if not finite."""
        value, images = float(self.window), self.window_images
        self.window.fill(0)
        self.window_images = 0
        if not math.isfinite(value):
            raise diverged(f"the loss became {value} at epoch {epoch}, in steps {first} to "
                           f"{last} (read back every {LOSS_EVERY} steps)")
        bar.set_postfix(loss=f"{value / images:.2f}", refresh=False)
        return value

"""The training step captured once into a CUDA graph and replayed (``train --cuda-graph``).

:class:`CapturedRun` is a :class:`~scratchvae.device_loop.DeviceRun` whose step
needs no host value: one function, :meth:`CapturedRun.step`, that

1. advances Adam's step count ``t`` on the device and computes the step's
   ``lr / (1 - beta1^t)`` and ``sqrt(1 - beta2^t)`` there, the learning rate
   read from a device table of every step's rate (kernels.adam.adam_advance);
2. gathers batch ``k`` (a device counter) of the epoch's order, held in a
   fixed device buffer, into a fixed batch buffer (``xp.take(..., out=)``);
3. draws the binarisation's uniforms and the sampler's eps with the
   counter-based generator of kernels/counter_rng.py, keyed by the run's seed
   and the device ``t`` (cuRAND's host API, behind ``cupy.random``, fixes its
   offset when captured: every replay would draw the same numbers); a
   VQ-VAE draws no eps: its dead-code restarts pick their rows by the same
   generator (kernels/codes.py), where the eager path uses NumPy's;
4. runs the forward, the backward and Adam (kernels.adam.adam_step_device,
   its scalars read from device memory, one launch over Adam's flat buffer),
   adds the batch's loss to a device sum and advances ``k``.

The first :data:`WARMUP_STEPS` steps run this function eagerly (Numba compiles
its kernels, CuPy its elementwise kernels and cuBLAS picks its algorithms on
the capturing stream); the next is captured once on a non-blocking stream
(``Stream.begin_capture()`` in relaxed mode, ``end_capture()``) and every step
from then on is one ``graph.launch()``. The memory the captured step uses comes
from a memory pool of its own (``cupy.cuda.using_allocator``), filled by the
warm-up and used by nothing else: the addresses baked into the graph stay
valid, and the temporaries the step frees are reused by the step alone.

The matrix products run on a cuBLAS handle of the run's own
(:class:`kernels.cublas.CublasHandle`), bound to the capturing stream, its
workspace allocated before the warm-up (``cublasSetWorkspace``): CuPy refuses
any cuBLAS call while a stream captures (CuPy 14.2: "calling cuBLAS API during
stream capture is currently unsupported"), cuBLAS itself captures its products
once it has a workspace. The warm-up steps use the same handle, so the eager
and the captured steps make the same calls.

Shapes are static: every step is a full batch, so the last partial batch of an
epoch is dropped (``steps_per_epoch = N // batch_size``; each epoch's order is a
new permutation, so the dropped images change from epoch to epoch).

:func:`reference_epochs` is the same arithmetic on the CPU, step by step (the
reference a captured run is checked against).

A capture or a launch that fails (an operation the CuPy/CUDA in use cannot
capture), or a cuBLAS library that cannot be loaded for the run's own handle,
does not stop the run: one warning names the reason and the run continues with
the same step function called eagerly.
"""
import contextlib
import warnings

import numpy as np

from kernels.adam import adam_advance, adam_step_device
from kernels.counter_rng import (CounterDraws, fill_normal, fill_uniform, normal_reference,
                                 uniform_reference)
from kernels.cublas import CublasHandle, capturable_products

from .data import DataError
from .device_loop import LOSS_EVERY, DeviceRun
from .schedules import learning_rate

#: eager steps before the capture
WARMUP_STEPS = 3
#: cuBLAS workspace fixed before the capture (NVIDIA's advice for Hopper: 32 MiB)
CUBLAS_WORKSPACE_BYTES = 32 << 20
#: the counter-based generator's streams
EPS_STREAM, BINARIZE_STREAM, RESTART_STREAM = 0, 1, 2


def counter_seed(noise_ss):
    """The counter-based generator's key of a run whose noise SeedSequence is
    ``noise_ss`` (63 bits, a non-negative int64)."""
    return int(noise_ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _gaussian(model):
    """Whether the model samples z = mu + sigma eps (a VQ-VAE does not)."""
    return hasattr(model, "latent_dim")


class GraphCaptureFailed(RuntimeWarning):
    """The training step could not be captured or replayed; the run goes on eagerly."""


class TooFewImages(DataError):
    """A captured step needs at least one full batch of training images."""


class CapturedRun(DeviceRun):
    """:class:`DeviceRun` with one captured step (see the module docstring)."""

    @property
    def steps_per_epoch(self):
        return self.x.shape[0] // self.config.batch_size

    def prepare(self, model, optimizer, log=print):
        """Allocate every buffer the step uses, before any step runs."""
        xp, config = self.xp, self.config
        n, b = self.x.shape[0], config.batch_size
        if n < b:
            raise TooFewImages(f"--cuda-graph trains full batches only (the last partial batch "
                               f"of an epoch is dropped), but the training set has {n} images, "
                               f"fewer than one batch of {b}; give --batch-size {n} or less")
        self.model, self.optimizer, self.log = model, optimizer, log
        params = model.parameters()
        dtype = params[0].data.dtype
        self.stream = xp.cuda.Stream(non_blocking=True)
        self.pool = xp.cuda.MemoryPool()
        self.graph, self.eager_steps, self.fallback = None, 0, None
        total = config.epochs * self.steps_per_epoch
        with self.stream, xp.cuda.using_allocator(self.pool.malloc):
            # every parameter of these models takes part in every step: one count t
            self.t = xp.asarray(np.array([optimizer.steps[0]], dtype=np.int64))
            self.lr_table = xp.asarray(np.array(
                [learning_rate(config.lr_schedule, config.lr, g, total, self.steps_per_epoch)
                 for g in range(total)], dtype=np.float64))
            self.adam_scalars = xp.zeros(2, dtype=dtype)
            self.order = xp.zeros(self.steps_per_epoch * b, dtype=np.int64)
            self.order_rows = self.order.reshape(self.steps_per_epoch, b)
            self.k = xp.zeros(1, dtype=np.int64)
            self.index = xp.zeros((1, b), dtype=np.int64)
            self.xb = xp.empty((b,) + self.x.shape[1:], dtype=self.x.dtype)
            self.u = xp.empty(self.xb.shape, dtype=self.x.dtype)
            self.eps = (xp.empty((model.n_samples, b, model.latent_dim), dtype=dtype)
                        if _gaussian(model) else None)
            self.workspace = xp.empty(CUBLAS_WORKSPACE_BYTES, dtype=np.uint8)
        xp.cuda.Device().synchronize()    # the copies above, before the stream reads them
        self.seed = counter_seed(self.noise_ss)
        self.restarts = CounterDraws(self.seed, RESTART_STREAM, self.t)
        log(f"--cuda-graph: {self.steps_per_epoch} full batches of {b} per epoch "
            f"({n - self.steps_per_epoch * b} images left out of each), {WARMUP_STEPS} eager "
            f"steps, then one captured step replayed; products on a cuBLAS handle of the "
            f"run's own, {CUBLAS_WORKSPACE_BYTES >> 20} MiB workspace")
        try:
            self.cublas = CublasHandle(xp, self.stream, self.workspace)
        except Exception as e:   # no cuBLAS to load: CuPy's products, nothing captured
            self.cublas = None
            self._give_up(f"no cuBLAS handle of the run's own ({type(e).__name__}: {e})")

    def products(self):
        """The block in which the step's products run on the run's cuBLAS handle."""
        if self.cublas is None:
            return contextlib.nullcontext()
        return capturable_products(self.cublas)

    # -- the step ---------------------------------------------------------------
    def step(self):
        """One training step, all of it on the device, reading no host value."""
        xp, config, model = self.xp, self.config, self.model
        b1, b2 = self.optimizer.betas
        adam_advance(self.t, self.lr_table, b1, b2, self.adam_scalars)
        xp.take(self.order_rows, self.k, axis=0, out=self.index)
        xp.take(self.x, self.index[0], axis=0, out=self.xb)
        if config.binarize:
            fill_uniform(self.u, self.seed, BINARIZE_STREAM, self.t)
            xp.less(self.u, self.xb, out=self.xb)
        model.zero_grad()
        if self.eps is not None:
            fill_normal(self.eps, self.seed, EPS_STREAM, self.t)
            loss, _ = model.loss(self.xb, eps=self.eps, check_inputs=False)
        else:
            loss, _ = model.loss(self.xb, rng=self.restarts, check_inputs=False)
        model.backward()
        opt = self.optimizer
        flat = opt.flat_arrays()          # one launch over the flat buffer where it applies
        groups = [flat] if flat is not None else [
            (p.data, p.grad, m, v) for p, m, v in zip(opt.params, opt.exp_avg, opt.exp_avg_sq)]
        for arrays in groups:
            adam_step_device(*arrays, self.adam_scalars, b1, b2, opt.eps, opt.weight_decay)
        xp.add(self.k, 1, out=self.k)
        xp.add(self.window, loss.astype(np.float64) * self.xb.shape[0], out=self.window)

    def _run_step(self):
        """The step: eagerly during the warm-up (or after a failure), else a graph launch."""
        if self.graph is None and self.fallback is None and self.eager_steps >= WARMUP_STEPS:
            self._capture()
        if self.graph is not None:
            try:
                self.graph.launch(stream=self.stream)
                return
            except Exception as e:
                self._give_up(f"launching the graph failed ({type(e).__name__}: {e})")
        with self.xp.cuda.using_allocator(self.pool.malloc), self.products():
            self.step()
        self.eager_steps += 1

    def _capture(self):
        """Capture :meth:`step` once (nothing runs during a capture)."""
        self.stream.synchronize()
        try:
            with self.xp.cuda.using_allocator(self.pool.malloc), self.products():
                # relaxed: a call CUDA deems unsafe (a first-use allocation, a driver
                # query of Numba's) does not void the capture; what it must not do fails
                self.stream.begin_capture(mode=self.xp.cuda.runtime.streamCaptureModeRelaxed)
                try:
                    self.step()
                except Exception:      # the stream stops capturing; the step's error is told
                    with contextlib.suppress(Exception):
                        self.stream.end_capture()
                    raise
                self.graph = self.stream.end_capture()
        except Exception as e:
            self._give_up(f"capturing the step failed ({type(e).__name__}: {e})")

    def _give_up(self, reason):
        self.graph, self.fallback = None, reason
        warnings.warn(f"--cuda-graph: {reason}; the run continues with the same step "
                      f"launched eagerly", GraphCaptureFailed, stacklevel=3)

    # -- an epoch -------------------------------------------------------------------
    def epoch(self, model, optimizer, epoch, global_step, bar, diverged):
        """As :meth:`DeviceRun.epoch`, each step :meth:`step` (captured after the warm-up)."""
        xp, b = self.xp, self.config.batch_size
        steps = self.steps_per_epoch
        host_order = self.shuffle_rng.permutation(self.x.shape[0])
        total, first = 0.0, 1
        xp.cuda.Device().synchronize()     # the evaluation before, on another stream, is done
        with self.stream:
            self.order.set(np.ascontiguousarray(host_order[:steps * b]))
            self.k.fill(0)
            self.window.fill(0)
            self.window_images = 0
            for k in range(steps):
                self._run_step()
                self.window_images += b
                bar.update(1)
                if (k + 1) % LOSS_EVERY == 0 or k + 1 == steps:
                    total += self._read_back(epoch, first, k + 1, bar, diverged)
                    first = k + 2
            self.stream.synchronize()      # the evaluation after reads the parameters
        global_step += steps
        optimizer.steps = [optimizer.steps[0] + steps] * len(optimizer.steps)
        optimizer.lr = learning_rate(self.config.lr_schedule, self.config.lr, global_step - 1,
                                     self.config.epochs * steps, steps)
        return total / (steps * b), global_step


def reference_epochs(model, optimizer, config, x, shuffle_rng, seed, log=None):
    """What a captured run of ``config.epochs`` epochs computes, on the host arrays
    of ``model``: each epoch's permutation from ``shuffle_rng`` cut into full
    batches of x, the counter-based generator's uniforms (binarisation) and eps
    (a VQ-VAE: restart picks) at Adam's step t keyed by ``seed`` (the NumPy
    references of kernels/counter_rng.py and kernels/codes.py),
    the learning-rate table's rate of step t. Returns each epoch's mean loss;
    ``log(k, loss)`` is called every 100 steps when given."""
    b = config.batch_size
    steps = x.shape[0] // b
    total, t, losses = config.epochs * steps, optimizer.steps[0], []
    for _ in range(config.epochs):
        order, loss_sum = shuffle_rng.permutation(x.shape[0]), 0.0
        for k in range(steps):
            t += 1
            xb = x[order[k * b:(k + 1) * b]]
            if config.binarize:
                u = uniform_reference(xb.shape, xb.dtype, seed, BINARIZE_STREAM, t)
                xb = (u < xb).astype(xb.dtype)
            optimizer.zero_grad()
            if _gaussian(model):
                eps = normal_reference((model.n_samples, b, model.latent_dim), xb.dtype, seed,
                                       EPS_STREAM, t)
                loss, _ = model.loss(xb, eps=eps, check_inputs=False)
            else:
                restarts = CounterDraws(seed, RESTART_STREAM, np.array([t], dtype=np.int64))
                loss, _ = model.loss(xb, rng=restarts, check_inputs=False)
            model.backward()
            optimizer.lr = learning_rate(config.lr_schedule, config.lr, t - 1, total, steps)
            optimizer.step()
            loss_sum += float(loss) * b
            if log is not None and k % 100 == 0:
                log(k, float(loss))
        losses.append(loss_sum / (steps * b))
    return losses

"""Fused optimizer updates: Adam and SGD (PyTorch semantics), in place.

Adam (``torch.optim.Adam``; ``weight_decay`` is an L2 term added to the
gradient, *not* AdamW's decoupled decay). For every element, at step
``t = 1, 2, ...`` (the count *after* incrementing):

    g    = grad + weight_decay * p                  (only if weight_decay != 0)
    m    = beta1 * m + (1 - beta1) * g              (first moment, exp_avg)
    v    = beta2 * v + (1 - beta2) * g * g          (second moment, exp_avg_sq)
    bc1  = 1 - beta1**t,   bc2 = 1 - beta2**t      (bias corrections)
    p    = p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)

Note where ``eps`` sits: it is added to ``sqrt(v) / sqrt(bc2)``, i.e. to the
bias-corrected RMS, exactly as PyTorch does (the Adam paper's
``sqrt(v_hat) + eps``). ``lr / bc1`` and ``sqrt(bc2)`` are computed once per
step in float64 and handed to the kernel in the array dtype, again as PyTorch
does. The kernels write the first moment in PyTorch's ``lerp`` form
``m + (1 - beta1) * (g - m)``, algebraically the same as above. The result
equals PyTorch's up to float rounding, not bit for bit: PyTorch groups the
last line as p + (-(lr / bc1) * m) / denom, we as p - (lr / bc1) * (m / denom)
(a few float32 ulps apart on some elements).

SGD (``torch.optim.SGD``), with momentum buffer ``b``:

    g = grad + weight_decay * p                     (only if weight_decay != 0)
    if momentum != 0:
        b = g                                       on the first step
        b = momentum * b + (1 - dampening) * g      afterwards
        g = g + momentum * b   if nesterov  else  b
    p = p - lr * g

Subnormal moments are stored as 0. The first moment of a parameter whose
gradient stays 0 (a dead ReLU unit's weights) shrinks by beta1 every step
and, in float32, drops below the smallest normal number (1.2e-38) after about
750 steps of beta1 = 0.9; from then on every operation on it takes a
microcode assist on x86 CPUs, about a hundred cycles. In the conv VAE nearly
half the first moments get there within four epochs, which would make Adam's
step five times slower (benchmarks/RESULTS.md). So m, v and the momentum
buffer b are set to 0 when their magnitude is below ``finfo(dtype).tiny``.
The parameters are the same: the update such a moment makes, at most
lr * tiny / eps (1e-33 for lr = 1e-3, eps = 1e-8), is far below a float32
parameter's rounding step. (PyTorch keeps the subnormals.)

Each public function updates its arrays in place and returns ``None``. It
dispatches (:mod:`kernels._dispatch`) to a Numba CPU kernel (one pass over
the flattened arrays, no temporaries), a Numba CUDA kernel for CuPy arrays, or
the ``*_reference`` function written in plain ``xp``. The update of one
element is written once, :func:`_adam_element` and :func:`_sgd_element`,
and both the CPU and the CUDA kernel call it.
"""
import functools
import math

import numpy as np
from numba import get_num_threads, njit, prange, set_num_threads
from numba.extending import register_jitable

from ._arrays import check_float, check_same, get_xp
from ._dispatch import CUDA_THREADS, choose, cuda_grid, cuda_stream, scalar


# --------------------------------------------------------------------------
# Adam
# --------------------------------------------------------------------------

def _adam_scalars(step, lr, beta1, beta2, eps, weight_decay, dtype):
    """The per-step scalars of the update, in ``dtype``, in kernel order."""
    step_size = lr / (1.0 - beta1 ** step)
    bc2_sqrt = math.sqrt(1.0 - beta2 ** step)
    values = (1.0 - beta1, beta2, 1.0 - beta2, step_size, bc2_sqrt, eps, weight_decay,
              np.finfo(dtype).tiny, 0.0)
    return tuple(scalar(s, dtype) for s in values)


@register_jitable
def _adam_element(p, g, m, v, w1, beta2, w2, step_size, bc2_sqrt, eps, weight_decay, tiny,
                  zero):
    """One element's Adam update: the new (p, m, v). Scalars in the array dtype
    (``zero`` too: a literal 0 would turn the arithmetic into float64)."""
    if weight_decay != 0:
        g = g + weight_decay * p
    m = m + w1 * (g - m)
    v = v * beta2 + w2 * g * g
    if abs(m) < tiny:                        # subnormal: stored as 0 (module docstring)
        m = zero
    if v < tiny:
        v = zero
    denom = math.sqrt(v) / bc2_sqrt + eps
    return p - step_size * (m / denom), m, v


#: parameters of at most this many elements are updated by one thread: a
#: parallel launch costs more than it saves (and, on a busy machine, waits
#: for a time slice of every thread of the pool)
SMALL_UPDATE = 1 << 14


def _adam_cpu(p, g, *scalars):
    """The Numba CPU kernel on 1-D views, on the pool's threads, or on the
    calling thread alone for at most ``SMALL_UPDATE`` elements (the same
    compiled loop, the same bits: the elements are independent)."""
    threads = get_num_threads()
    if threads == 1 or p.size > SMALL_UPDATE:
        _adam_loop(p, g, *scalars)
        return
    set_num_threads(1)
    try:
        _adam_loop(p, g, *scalars)
    finally:
        set_num_threads(threads)


@njit(parallel=True, fastmath=False, cache=True)
def _adam_loop(p, g, m, v, w1, beta2, w2, step_size, bc2_sqrt, eps, weight_decay, tiny,
               zero):
    """:func:`_adam_element` for every element."""
    for i in prange(p.size):
        p[i], m[i], v[i] = _adam_element(p[i], g[i], m[i], v[i], w1, beta2, w2, step_size,
                                         bc2_sqrt, eps, weight_decay, tiny, zero)


def _flush_subnormal(a):
    """Set the subnormal entries of ``a`` to 0, in place (``where``: a boolean-mask
    assignment would read the host on CuPy)."""
    xp = get_xp(a)
    a[...] = xp.where(xp.abs(a) < np.finfo(a.dtype).tiny, 0, a)


def _moments_reference(param, grad, exp_avg, exp_avg_sq, beta1, beta2, weight_decay):
    """Both Adam references' moment update in plain ``xp``, in place, subnormal
    moments set to 0."""
    if weight_decay != 0:
        grad = grad + weight_decay * param
    exp_avg *= beta1
    exp_avg += (1.0 - beta1) * grad
    exp_avg_sq *= beta2
    exp_avg_sq += (1.0 - beta2) * grad * grad
    _flush_subnormal(exp_avg)
    _flush_subnormal(exp_avg_sq)


def adam_step_reference(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2,
                        eps, weight_decay=0.0):
    """Adam update written in plain ``xp`` (allocates temporaries)."""
    xp = get_xp(param)
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    _moments_reference(param, grad, exp_avg, exp_avg_sq, beta1, beta2, weight_decay)
    denom = xp.sqrt(exp_avg_sq) / math.sqrt(bc2) + eps
    param -= (lr / bc1) * (exp_avg / denom)


def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
              weight_decay=0.0):
    """One Adam step, updating ``param``, ``exp_avg``, ``exp_avg_sq`` in place.

    All four arrays have one shape and one float dtype. ``step`` is the
    1-based step count (already incremented), used for bias correction.
    """
    check_float("adam_step", "param", param)
    check_same("adam_step", "param", param, "grad", grad)
    check_same("adam_step", "param", param, "exp_avg", exp_avg)
    check_same("adam_step", "param", param, "exp_avg_sq", exp_avg_sq)
    if int(step) != step or step < 1:
        raise ValueError(f"adam_step: expected step to be an integer >= 1, got {step!r}")
    impl = choose(param, grad, exp_avg, exp_avg_sq)
    if impl == "reference":
        adam_step_reference(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2,
                            eps, weight_decay)
        return
    scalars = _adam_scalars(step, lr, beta1, beta2, eps, weight_decay, param.dtype)
    flat = [a.reshape(-1) for a in (param, grad, exp_avg, exp_avg_sq)]  # views
    if impl == "cpu":
        _adam_cpu(*flat, *scalars)
    else:
        _adam_cuda(*flat, *scalars)


# --------------------------------------------------------------------------
# Adam with its per-step scalars on the device (a captured training step)
# --------------------------------------------------------------------------

def adam_advance(t, lr_table, beta1, beta2, scalars):
    """t += 1 and scalars = (lr_table[t - 1] / (1 - beta1^t), sqrt(1 - beta2^t)), on
    the device: the step count and the learning rate of a captured step come from
    device memory, so the graph holds no per-step host value. ``t``: int64 (1,);
    ``lr_table``: float64, the learning rate of every global step (the last one is
    used beyond its end); ``scalars``: (2,) of the parameters' dtype, computed in
    float64 as :func:`adam_step` computes them on the host."""
    if t.shape != (1,) or np.dtype(t.dtype) != np.int64:
        raise ValueError(f"adam_advance: expected t, a one-element int64 array, got "
                         f"{t.dtype} {tuple(t.shape)}")
    check_float("adam_advance", "scalars", scalars)
    if scalars.shape != (2,) or lr_table.ndim != 1 or lr_table.size < 1:
        raise ValueError(f"adam_advance: expected scalars (2,) and a non-empty lr_table, got "
                         f"{tuple(scalars.shape)} and {tuple(lr_table.shape)}")
    if choose(scalars) == "cuda":
        _cuda_device_scalar_kernels()[0][1, 1, cuda_stream(scalars)](t, lr_table, beta1, beta2, scalars)
        return
    xp = get_xp(t)
    step = int(t[0]) + 1 if xp is np else int(t.get()[0]) + 1
    lr = float(lr_table[min(step, lr_table.size) - 1])
    t[...] = step
    scalars[...] = xp.asarray(np.array([lr / (1.0 - beta1 ** step),
                                        math.sqrt(1.0 - beta2 ** step)], dtype=scalars.dtype))


def adam_step_device_reference(param, grad, exp_avg, exp_avg_sq, scalars, beta1, beta2, eps,
                               weight_decay=0.0):
    """:func:`adam_step_device` in plain ``xp`` (allocates; no host read)."""
    xp = get_xp(param)
    _moments_reference(param, grad, exp_avg, exp_avg_sq, beta1, beta2, weight_decay)
    denom = xp.sqrt(exp_avg_sq) / scalars[1] + eps
    param -= scalars[0] * (exp_avg / denom)


def adam_step_device(param, grad, exp_avg, exp_avg_sq, scalars, beta1, beta2, eps,
                     weight_decay=0.0):
    """:func:`adam_step` with ``lr / bc1`` and ``sqrt(bc2)`` read from the device
    array ``scalars`` (:func:`adam_advance`) instead of passed from the host."""
    check_float("adam_step_device", "param", param)
    check_same("adam_step_device", "param", param, "grad", grad)
    check_same("adam_step_device", "param", param, "exp_avg", exp_avg)
    check_same("adam_step_device", "param", param, "exp_avg_sq", exp_avg_sq)
    impl = choose(param, grad, exp_avg, exp_avg_sq, scalars)
    if impl == "reference":
        adam_step_device_reference(param, grad, exp_avg, exp_avg_sq, scalars, beta1, beta2,
                                   eps, weight_decay)
        return
    if impl == "cpu":   # the host's arrays: the scalars read, then adam_step's loop
        values = _adam_scalars(1, 1.0, beta1, beta2, eps, weight_decay, param.dtype)
        values = values[:3] + tuple(scalar(s, param.dtype) for s in scalars) + values[5:]
        _adam_cpu(*[a.reshape(-1) for a in (param, grad, exp_avg, exp_avg_sq)], *values)
        return
    values = _adam_scalars(1, 1.0, beta1, beta2, eps, weight_decay, param.dtype)
    w1, b2, w2, _, _, eps_, wd, tiny, zero = values
    flat = [a.reshape(-1) for a in (param, grad, exp_avg, exp_avg_sq)]
    if param.size:
        kernel = _cuda_device_scalar_kernels()[1]
        kernel[cuda_grid(param.size), CUDA_THREADS, cuda_stream(param)](
            *flat, scalars, w1, b2, w2, eps_, wd, tiny, zero)


# --------------------------------------------------------------------------
# SGD
# --------------------------------------------------------------------------

@register_jitable
def _sgd_element(p, g, b, lr, momentum, w_damp, weight_decay, nesterov, first_step,
                 use_momentum, tiny, zero):
    """One element's SGD update: the new (p, b), b the momentum buffer's value
    (its old value is ignored on the first step, and b is unused without
    momentum). Scalars in the array dtype."""
    d = g
    if weight_decay != 0:
        d = d + weight_decay * p
    if use_momentum:
        if first_step:
            b = d
        else:
            b = b * momentum + w_damp * d
        if abs(b) < tiny:                    # subnormal: stored as 0 (module docstring)
            b = zero
        if nesterov:
            d = d + momentum * b
        else:
            d = b
    return p - lr * d, b


@njit(parallel=True, fastmath=False, cache=True)
def _sgd_cpu(p, g, buf, lr, momentum, w_damp, weight_decay, nesterov, first_step,
             use_momentum, tiny, zero):
    """Numba CPU kernel on 1-D views: :func:`_sgd_element` for every element;
    ``buf`` is empty and untouched when not use_momentum."""
    for i in prange(p.size):
        b = buf[i] if use_momentum else zero
        p[i], b = _sgd_element(p[i], g[i], b, lr, momentum, w_damp, weight_decay, nesterov,
                               first_step, use_momentum, tiny, zero)
        if use_momentum:
            buf[i] = b


def sgd_step_reference(param, grad, buf, lr, momentum=0.0, dampening=0.0,
                       weight_decay=0.0, nesterov=False, first_step=False):
    """SGD update written in plain ``xp`` (allocates temporaries)."""
    d = grad
    if weight_decay != 0:
        d = d + weight_decay * param
    if momentum != 0:
        if first_step:
            buf[...] = d
        else:
            buf *= momentum
            buf += (1.0 - dampening) * d
        _flush_subnormal(buf)
        d = d + momentum * buf if nesterov else buf
    param -= lr * d


def sgd_step(param, grad, buf, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
             nesterov=False, first_step=False):
    """One SGD step, updating ``param`` (and ``buf`` if momentum) in place.

    ``buf`` is the momentum buffer, same shape/dtype as ``param``; it may be
    ``None`` when ``momentum == 0``. On ``first_step`` its old contents are
    ignored and it is set to the (weight-decayed) gradient, as in PyTorch.
    """
    check_float("sgd_step", "param", param)
    check_same("sgd_step", "param", param, "grad", grad)
    if momentum != 0:
        if buf is None:
            raise ValueError("sgd_step: expected a momentum buffer when momentum != 0, got None")
        check_same("sgd_step", "param", param, "buf", buf)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("sgd_step: Nesterov momentum requires momentum > 0 and dampening == 0")
    use_momentum = momentum != 0
    impl = choose(param, grad, buf if use_momentum else None)
    if impl == "reference":
        sgd_step_reference(param, grad, buf, lr, momentum, dampening, weight_decay,
                           nesterov, first_step)
        return
    xp = get_xp(param)
    dt = param.dtype
    flat_p, flat_g = param.reshape(-1), grad.reshape(-1)
    flat_b = buf.reshape(-1) if use_momentum else xp.empty(0, dtype=dt)
    args = (flat_p, flat_g, flat_b, scalar(lr, dt), scalar(momentum, dt),
            scalar(1.0 - dampening, dt), scalar(weight_decay, dt),
            bool(nesterov), bool(first_step), use_momentum, scalar(np.finfo(dt).tiny, dt),
            scalar(0, dt))
    if impl == "cpu":
        _sgd_cpu(*args)
    else:
        _sgd_cuda(*args)


# --------------------------------------------------------------------------
# CUDA versions (built on first use, so numba.cuda is imported only then)
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _cuda_kernels():
    # numba.cuda is bound as a module *global*, not a local: the CUDA simulator
    # (NUMBA_ENABLE_CUDASIM=1, used by the tests) replaces the global `cuda`
    # seen by a kernel with its fake module.
    global cuda
    from numba import cuda

    @cuda.jit
    def adam_kernel(p, g, m, v, w1, beta2, w2, step_size, bc2_sqrt, eps, weight_decay, tiny,
                    zero):
        # grid-stride loop: thread i handles i, i + gridsize, ...
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            p[i], m[i], v[i] = _adam_element(p[i], g[i], m[i], v[i], w1, beta2, w2,
                                             step_size, bc2_sqrt, eps, weight_decay, tiny,
                                             zero)

    @cuda.jit
    def sgd_kernel(p, g, buf, lr, momentum, w_damp, weight_decay, nesterov, first_step,
                   use_momentum, tiny, zero):
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            b = buf[i] if use_momentum else zero
            p[i], b = _sgd_element(p[i], g[i], b, lr, momentum, w_damp, weight_decay,
                                   nesterov, first_step, use_momentum, tiny, zero)
            if use_momentum:
                buf[i] = b

    return adam_kernel, sgd_kernel


@functools.lru_cache(maxsize=None)
def _cuda_device_scalar_kernels():
    """The kernels of :func:`adam_advance` and :func:`adam_step_device`."""
    global cuda
    from numba import cuda

    @cuda.jit
    def adam_advance_kernel(t, lr_table, beta1, beta2, scalars):
        if cuda.grid(1) == 0:
            step = t[0] + 1
            t[0] = step
            last = lr_table.size
            lr = lr_table[step - 1] if step <= last else lr_table[last - 1]
            scalars[0] = lr / (1.0 - beta1 ** step)
            scalars[1] = math.sqrt(1.0 - beta2 ** step)

    @cuda.jit
    def adam_device_kernel(p, g, m, v, scalars, w1, beta2, w2, eps, weight_decay, tiny, zero):
        step_size, bc2_sqrt = scalars[0], scalars[1]
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            p[i], m[i], v[i] = _adam_element(p[i], g[i], m[i], v[i], w1, beta2, w2,
                                             step_size, bc2_sqrt, eps, weight_decay, tiny,
                                             zero)

    return adam_advance_kernel, adam_device_kernel


def _adam_cuda(p, g, m, v, *scalars):
    """Launch the CUDA Adam kernel on 1-D device arrays (CuPy, or NumPy under cudasim)."""
    if p.size:
        kernel = _cuda_kernels()[0]
        kernel[cuda_grid(p.size), CUDA_THREADS, cuda_stream(p)](p, g, m, v, *scalars)


def _sgd_cuda(p, g, buf, *scalars):
    """Launch the CUDA SGD kernel on 1-D device arrays."""
    if p.size:
        kernel = _cuda_kernels()[1]
        kernel[cuda_grid(p.size), CUDA_THREADS, cuda_stream(p)](p, g, buf, *scalars)

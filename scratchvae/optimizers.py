"""Optimisers with PyTorch's semantics, and gradient clipping by global norm.

An optimiser holds a list of :class:`~scratchvae.layers.Parameter` and
updates ``p.data`` in place from ``p.grad``. A parameter whose grad is
``None`` (it took no part in the last backward) is skipped, as in PyTorch.

Adam keeps its parameters in one flat buffer (:class:`FlatParameters`): the
parameters' arrays, their gradients and the moments are views of one array
each, so that a step is one kernel launch over all of them instead of one
per parameter (at batch 20 a step is a few milliseconds, the launches a
tenth of it).
"""
import math

import numpy as np

import kernels

from .backend import get_xp, to_device, to_numpy


class FlatParameters:
    """Parameters whose ``data`` and ``grad_view`` are views of one flat array each.

    ``data`` (the flat parameters) and ``grad`` (the flat gradients) hold the
    parameters in list order; each ``p.data`` is re-pointed to its slice (its
    values copied there) and each ``p.grad_view`` set to its slice of ``grad``,
    into which the first gradient after ``zero_grad`` is written
    (``Parameter.grad_buffer``). :meth:`build` returns None for a list it cannot
    flatten: mixed dtypes or array modules, a parameter listed twice, an array
    that is not C-contiguous (a view of the buffer is).
    """

    def __init__(self, params):
        xp, dtype = get_xp(params[0].data), params[0].data.dtype
        sizes = [int(p.data.size) for p in params]
        ends = np.cumsum([0] + sizes)
        self.xp, self.dtype = xp, dtype
        self.data = xp.empty(int(ends[-1]), dtype=dtype)
        self.grad = xp.zeros(int(ends[-1]), dtype=dtype)
        self.data_views, self.grad_views = [], []
        for p, lo, hi in zip(params, ends[:-1], ends[1:]):
            view = self.data[lo:hi].reshape(p.data.shape)
            view[...] = p.data
            p.data = view
            p.grad_view = self.grad[lo:hi].reshape(view.shape)
            p._view_free = p.grad is None
            self.data_views.append(view)
            self.grad_views.append(p.grad_view)

    @classmethod
    def build(cls, params):
        """A :class:`FlatParameters` of ``params``, or None where they cannot share one."""
        first = params[0].data
        xp, dtype = get_xp(first), first.dtype
        if len({id(p) for p in params}) != len(params):
            return None
        for p in params:
            a = p.data
            if get_xp(a) is not xp or a.dtype != dtype or not a.flags.c_contiguous:
                return None
        return cls(params)

    def like(self):
        """Zeros of the flat buffer's size, and their per-parameter views."""
        flat = self.xp.zeros_like(self.data)
        views, start = [], 0
        for v in self.data_views:
            views.append(flat[start:start + v.size].reshape(v.shape))
            start += v.size
        return flat, views

    def holds(self, params):
        """True while every parameter's ``data`` is still its view of the buffer
        (``Module.astype``/``to`` give a parameter a new array)."""
        return all(p.data is v for p, v in zip(params, self.data_views))

    def gather_grads(self, params):
        """Copy into the flat gradient buffer every gradient that lives elsewhere
        (stored as is: the parameter's view was taken, or a caller set ``grad``)."""
        for p, view in zip(params, self.grad_views):
            if p.grad is not view:
                view[...] = p.grad


class Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: expected at least one parameter, got none")
        if not lr >= 0:
            raise ValueError(f"{type(self).__name__}: expected lr >= 0, got {lr}")
        self.lr = float(lr)

    def zero_grad(self):
        for p in self.params:
            p.zero_grad()

    def step(self):
        raise NotImplementedError

    # state: host arrays keyed by parameter index, plus scalars
    def state_dict(self):
        raise NotImplementedError

    def load_state_dict(self, state):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    g = grad + weight_decay * p
    b = g on the first step, else momentum * b + (1 - dampening) * g
    g = g + momentum * b (Nesterov) or g = b
    p = p - lr * g
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        super().__init__(params, lr)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires momentum > 0 and dampening = 0")
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.weight_decay, self.nesterov = float(weight_decay), bool(nesterov)
        self.buffers = [None] * len(self.params)

    def step(self):
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.momentum:
                b = self.buffers[i]
                if b is None:
                    b = self.buffers[i] = g.copy()
                else:
                    b *= self.momentum
                    b += (1 - self.dampening) * g
                g = g + self.momentum * b if self.nesterov else b
            p.data -= self.lr * g

    def state_dict(self):
        return {"lr": self.lr, "buffers": [None if b is None else to_numpy(b) for b in self.buffers]}

    def load_state_dict(self, state):
        self.lr = float(state["lr"])
        self.buffers = [None if b is None else to_device(b, get_xp(p.data)).astype(p.data.dtype)
                        for b, p in zip(state["buffers"], self.params)]


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015): the update of ``torch.optim.Adam``.

    At step t, with g = grad + weight_decay * p (L2, not AdamW):
        m = beta1 m + (1 - beta1) g
        v = beta2 v + (1 - beta2) g^2
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Equal to PyTorch's up to float rounding (it groups the last line
    differently; see kernels/adam.py).

    t counts the steps that *this parameter* took part in, as PyTorch keeps a
    step count per parameter: a parameter skipped at some step (grad None)
    gets its bias correction from its own count. The update is one fused
    kernel (kernels.adam_step: one pass, no temporaries) over the flat buffer
    of all parameters (:class:`FlatParameters`) when every parameter has a
    gradient and one count t, as the update of each element depends only on
    that element and t; otherwise one such kernel per parameter.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"Adam: expected betas in [0, 1), got {betas}")
        if not eps >= 0:
            raise ValueError(f"Adam: expected eps >= 0, got {eps}")
        self.betas = (float(b1), float(b2))
        self.eps, self.weight_decay = float(eps), float(weight_decay)
        self.steps = [0] * len(self.params)        # t of each parameter
        self.flat = FlatParameters.build(self.params)
        if self.flat is None:
            self.flat_exp_avg = self.flat_exp_avg_sq = None
            self.exp_avg = [get_xp(p.data).zeros_like(p.data) for p in self.params]
            self.exp_avg_sq = [get_xp(p.data).zeros_like(p.data) for p in self.params]
        else:                                      # views of one flat array each
            self.flat_exp_avg, self.exp_avg = self.flat.like()
            self.flat_exp_avg_sq, self.exp_avg_sq = self.flat.like()

    def flat_arrays(self):
        """(parameters, gradients, exp_avg, exp_avg_sq) as the flat buffers, every
        gradient gathered into its buffer, when every parameter has a gradient and
        still lives in the buffer; else None (the update goes parameter by parameter)."""
        flat, params = self.flat, self.params
        if flat is None or any(p.grad is None for p in params) or not flat.holds(params):
            return None
        flat.gather_grads(params)
        return flat.data, flat.grad, self.flat_exp_avg, self.flat_exp_avg_sq

    def step(self):
        b1, b2 = self.betas
        params, steps = self.params, self.steps
        arrays = self.flat_arrays() if steps.count(steps[0]) == len(steps) else None
        if arrays is not None:                     # one t: one launch over all parameters
            self.steps = steps = [steps[0] + 1] * len(steps)
            kernels.adam_step(*arrays, steps[0], self.lr, b1, b2, self.eps, self.weight_decay)
            return
        for i, (p, m, v) in enumerate(zip(params, self.exp_avg, self.exp_avg_sq)):
            if p.grad is None:
                continue
            steps[i] += 1
            kernels.adam_step(p.data, p.grad, m, v, steps[i], self.lr, b1, b2,
                              self.eps, self.weight_decay)

    def state_dict(self):
        return {"lr": self.lr, "steps": np.array(self.steps, dtype=np.int64),
                "exp_avg": [to_numpy(m) for m in self.exp_avg],
                "exp_avg_sq": [to_numpy(v) for v in self.exp_avg_sq]}

    def load_state_dict(self, state):
        """Read :meth:`state_dict`'s arrays into the moments, in place (the flat
        buffers keep them); a state with one shared ``t`` (no ``steps``) gives
        every parameter that count."""
        if len(state["exp_avg"]) != len(self.params):
            raise ValueError(f"Adam.load_state_dict: expected state for {len(self.params)} "
                             f"parameters, got {len(state['exp_avg'])}")
        if "steps" in state:
            steps = [int(t) for t in np.asarray(state["steps"]).reshape(-1)]
        else:                      # checkpoints before per-parameter counts: one shared t
            steps = [int(state["t"])] * len(self.params)
        if len(steps) != len(self.params):
            raise ValueError(f"Adam.load_state_dict: expected step counts for "
                             f"{len(self.params)} parameters, got {len(steps)}")
        moments = []
        for i, p in enumerate(self.params):
            for name in ("exp_avg", "exp_avg_sq"):
                arr = np.asarray(state[name][i])
                if arr.shape != p.data.shape:
                    raise ValueError(f"Adam.load_state_dict: expected {name}[{i}] of shape "
                                     f"{tuple(p.data.shape)}, got {arr.shape}")
                moments.append(arr)
        self.lr = float(state["lr"])
        self.steps = steps
        for i, p in enumerate(self.params):
            xp = get_xp(p.data)
            for target, arr in zip((self.exp_avg[i], self.exp_avg_sq[i]), moments[2 * i:]):
                target[...] = to_device(arr, xp).astype(target.dtype)


def clip_grad_norm(params, max_norm):
    """Scale all gradients so that their global L2 norm is at most ``max_norm``.

    total = sqrt(sum_p ||grad_p||^2); every grad is multiplied by
    min(1, max_norm / (total + 1e-6)), as torch.nn.utils.clip_grad_norm_ (so a
    total within 1e-6 of max_norm is scaled, very slightly, too).
    Returns the norm before clipping.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = math.sqrt(sum(float(g.reshape(-1) @ g.reshape(-1)) for g in grads))
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g *= coef
    return total


def clip_grad_norm_device(params, max_norm):
    """:func:`clip_grad_norm` without a host synchronisation: the norm and the factor
    stay device scalars and every gradient is multiplied by min(1, max_norm /
    (total + 1e-6)) (by 1 when within the norm). Returns the norm, a 0-d array."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    xp = get_xp(grads[0])
    total = xp.sqrt(sum((g.reshape(-1).astype(np.float64) ** 2).sum() for g in grads))
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for g in grads:
        g *= coef.astype(g.dtype)
    return total


OPTIMIZERS = {"adam": Adam, "sgd": SGD}

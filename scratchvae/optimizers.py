"""Optimisers with PyTorch's semantics, and gradient clipping by global norm.

An optimiser holds a list of :class:`~scratchvae.layers.Parameter` and
updates ``p.data`` in place from ``p.grad``. A parameter whose grad is
``None`` (it took no part in the last backward) is skipped, as in PyTorch.
"""
import math

import numpy as np

import kernels

from .backend import get_xp, to_device, to_numpy


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
    kernel per parameter (kernels.adam_step): one pass, no temporaries.
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
        self.exp_avg = [get_xp(p.data).zeros_like(p.data) for p in self.params]
        self.exp_avg_sq = [get_xp(p.data).zeros_like(p.data) for p in self.params]

    def step(self):
        b1, b2 = self.betas
        for i, (p, m, v) in enumerate(zip(self.params, self.exp_avg, self.exp_avg_sq)):
            if p.grad is None:
                continue
            self.steps[i] += 1
            kernels.adam_step(p.data, p.grad, m, v, self.steps[i], self.lr, b1, b2,
                              self.eps, self.weight_decay)

    def state_dict(self):
        return {"lr": self.lr, "steps": np.array(self.steps, dtype=np.int64),
                "exp_avg": [to_numpy(m) for m in self.exp_avg],
                "exp_avg_sq": [to_numpy(v) for v in self.exp_avg_sq]}

    def load_state_dict(self, state):
        if len(state["exp_avg"]) != len(self.params):
            raise ValueError(f"Adam.load_state_dict: expected state for {len(self.params)} "
                             f"parameters, got {len(state['exp_avg'])}")
        self.lr = float(state["lr"])
        if "steps" in state:
            steps = [int(t) for t in np.asarray(state["steps"]).reshape(-1)]
        else:                      # checkpoints before per-parameter counts: one shared t
            steps = [int(state["t"])] * len(self.params)
        if len(steps) != len(self.params):
            raise ValueError(f"Adam.load_state_dict: expected step counts for "
                             f"{len(self.params)} parameters, got {len(steps)}")
        self.steps = steps
        for i, p in enumerate(self.params):
            xp = get_xp(p.data)
            for name, target in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                arr = np.asarray(state[name][i])
                if arr.shape != p.data.shape:
                    raise ValueError(f"Adam.load_state_dict: expected {name}[{i}] of shape "
                                     f"{tuple(p.data.shape)}, got {arr.shape}")
                target[i] = to_device(arr, xp).astype(p.data.dtype)


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

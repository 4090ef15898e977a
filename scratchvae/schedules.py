"""Schedules for the KL term of a VAE (beta, linear warm-up, capacity
annealing) and for the learning rate (constant, cosine, or Burda et al.'s
stages of 3^i epochs).

A VAE's loss is a reconstruction term plus a KL term. With KL the batch mean
(1/N) sum_n KL(q(z|x_n) || p(z)), the schedule turns KL into the term that is
added to the loss at training step t, and gives that term's derivative
d term / d KL, which the model's backward multiplies into the KL gradient:

beta-VAE (Higgins et al. 2017), optionally with a linear warm-up over W steps
(Bowman et al. 2016; Sonderby et al. 2016):

    term = beta_t KL,         beta_t = beta min(1, t / W)     (W = 0: beta_t = beta)
    d term / d KL = beta_t

Capacity annealing (Burgess et al. 2018, "Understanding disentangling in
beta-VAE"): the KL is pulled towards a target capacity C_t (in nats) that
rises linearly from 0 to C_max over S steps:

    term = gamma |KL - C_t|,  C_t = C_max min(1, t / S)       (S = 0: C_t = C_max)
    d term / d KL = gamma sign(KL - C_t)

since d|u|/du = sign(u) for u != 0 (at u = 0, where |u| has a kink, sign(0) = 0
is used, a valid subgradient). Below the target (KL < C_t) the term rewards a
larger KL; above it, it penalises it like a beta-VAE with beta = gamma.

``step=None`` (evaluation, or a model used outside the trainer) means the
schedule has finished: beta_t = beta and C_t = C_max.
"""
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KLSchedule:
    """The KL term of the loss as a function of the training step.

    beta            weight of the KL term (beta-VAE), reached after the warm-up
    warmup_steps    W: beta_t = beta min(1, t / W); 0 = no warm-up
    capacity_gamma  gamma > 0 switches to capacity annealing, gamma |KL - C_t|
                    (beta and warmup_steps are then not used)
    capacity_max    C_max in nats
    capacity_steps  S: C_t = C_max min(1, t / S); 0 = C_max from the start
    """

    beta: float = 1.0
    warmup_steps: int = 0
    capacity_max: float = 0.0
    capacity_steps: int = 0
    capacity_gamma: float = 0.0

    def __post_init__(self):
        problems = []
        for name in ("beta", "warmup_steps", "capacity_max", "capacity_steps", "capacity_gamma"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                problems.append(f"{name} must be finite and >= 0, got {value}")
        if self.capacity_gamma == 0 and (self.capacity_max > 0 or self.capacity_steps > 0):
            problems.append("capacity annealing (capacity_max, capacity_steps) needs "
                            "capacity_gamma > 0")
        if self.capacity_gamma > 0 and self.warmup_steps > 0:
            problems.append("choose either a KL warm-up (warmup_steps) or capacity annealing "
                            "(capacity_gamma > 0), not both")
        if problems:
            raise ValueError("KLSchedule: " + "; ".join(problems))

    @property
    def uses_capacity(self):
        return self.capacity_gamma > 0

    @staticmethod
    def _ramp(step, steps):
        """min(1, t / steps); 1 when there is no ramp or no step."""
        if step is None or steps == 0:
            return 1.0
        if step < 0:
            raise ValueError(f"KLSchedule: expected a training step >= 0, got {step}")
        return min(1.0, step / steps)

    def beta_at(self, step):
        """beta_t = beta min(1, t / W)."""
        return self.beta * self._ramp(step, self.warmup_steps)

    def capacity_at(self, step):
        """C_t = C_max min(1, t / S), in nats."""
        return self.capacity_max * self._ramp(step, self.capacity_steps)

    def term(self, kl, step):
        """The KL term and its derivative: ``(term, d term / d kl)`` for the
        batch-mean KL ``kl`` (a float or a 0-d array) at training step ``step`` (or
        None). A device KL stays on the device without capacity annealing (no host
        synchronisation: beta_t kl is a device scalar); the sign of KL - C_t is read
        on the host."""
        if not self.uses_capacity and not isinstance(kl, (float, np.ndarray, np.generic)):
            return self.beta_at(step) * kl, self.beta_at(step)
        kl = float(kl)
        if self.uses_capacity:
            gap = kl - self.capacity_at(step)
            sign = (gap > 0) - (gap < 0)
            return self.capacity_gamma * abs(gap), float(self.capacity_gamma * sign)
        beta_t = self.beta_at(step)
        return beta_t * kl, beta_t

    def describe(self):
        if self.uses_capacity:
            return (f"capacity annealing: {self.capacity_gamma:g} |KL - C|, C from 0 to "
                    f"{self.capacity_max:g} nats over {self.capacity_steps} steps")
        if self.warmup_steps:
            return f"beta {self.beta:g} after a linear warm-up over {self.warmup_steps} steps"
        return f"beta {self.beta:g}"


LR_SCHEDULES = ("constant", "cosine", "iwae")

#: the stages of Burda et al.'s schedule, i = 0..7
IWAE_STAGES = 8


def iwae_epochs(stages=IWAE_STAGES):
    """The epochs of the first ``stages`` stages of the iwae schedule:
    sum_{i < stages} 3^i = (3^stages - 1) / 2 (1, 4, 13, 40, 121, 364, 1093, 3280)."""
    if not 1 <= stages <= IWAE_STAGES:
        raise ValueError(f"iwae_epochs: expected 1 to {IWAE_STAGES} stages, got {stages}")
    return (3 ** stages - 1) // 2


#: the epochs of the whole iwae schedule (3,280 passes over the training set)
IWAE_EPOCHS = iwae_epochs(IWAE_STAGES)


def iwae_stage(epoch):
    """The stage i of the 0-based epoch e in the iwae schedule: the i with
    (3^i - 1) / 2 <= e < (3^(i+1) - 1) / 2."""
    if not 0 <= epoch < IWAE_EPOCHS:
        raise ValueError(f"iwae_stage: the iwae schedule has {IWAE_EPOCHS} epochs "
                         f"(0 to {IWAE_EPOCHS - 1}), got epoch {epoch}")
    i = 0
    while epoch >= iwae_epochs(i + 1):
        i += 1
    return i


def learning_rate(schedule, base_lr, step, total_steps, steps_per_epoch=None):
    """The learning rate at training step t (0-based) of T = total_steps.

    constant:  lr_t = lr
    cosine:    lr_t = lr (1 + cos(pi t / T)) / 2   (Loshchilov & Hutter 2017,
               without restarts): lr at t = 0, decaying smoothly to 0 at t = T.
    iwae:      lr_t = lr 10^(-i/7) in the epochs of stage i (Burda et al. 2015,
               "Importance Weighted Autoencoders", section 5): 3^i epochs each,
               i = 0..7, 3,280 in all; the epoch is t // steps_per_epoch, so the
               rate depends on the step alone and a run cut after any stage (or
               any epoch) continues on the same schedule.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"learning_rate: expected a schedule in {LR_SCHEDULES}, got {schedule!r}")
    if schedule == "constant":
        return base_lr
    if schedule == "iwae":
        if not (isinstance(steps_per_epoch, int) and steps_per_epoch >= 1 and step >= 0):
            raise ValueError(f"learning_rate: the iwae schedule needs steps_per_epoch >= 1 and "
                             f"step >= 0, got {steps_per_epoch!r} and {step}")
        return base_lr * 10.0 ** (-iwae_stage(step // steps_per_epoch) / 7)
    if total_steps < 1 or not 0 <= step <= total_steps:
        raise ValueError(f"learning_rate: expected 0 <= step <= total_steps >= 1, got step "
                         f"{step} of {total_steps}")
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))

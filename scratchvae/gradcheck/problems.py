"""Problem builders: the float64 inputs the gradient checks differentiate.

A problem is drawn so that no central difference of step h crosses a kink
of the function being checked:

- ReLU and LeakyReLU at 0: inputs at least 0.1 from 0 (:func:`away_from_zero`);
- the ReLUs inside a model: a parameter step of h moves a ReLU input by
  about h |input|, so the model and its batch are redrawn until every ReLU
  input is at least 10 h from 0 (:func:`relu_inputs_distance`);
- capacity annealing's gamma |KL - C_t|: redrawn until the batch KL is at
  least 0.01 from C_t (:func:`capacity_gap`);
- the vector quantiser's argmin: redrawn until every vector's nearest and
  second-nearest codes differ by more than :data:`MIN_GAP` in squared
  distance (:func:`assignment_gap`), so the assignments held fixed are the
  nearest codes throughout the finite-difference steps.

Layouts (:data:`LAYOUTS`) give the same values in another memory layout:
channels-last (a 4-D array as a view of (N, H, W, C) memory, what the conv
ops return) and non-contiguous (every other element of a buffer whose gaps
hold NaN, so an op that reads the gaps shows it).
"""
from dataclasses import dataclass

import numpy as np

from ..backend import get_xp
from ..layers import ReLU, Sequential
from ..models import vq_vae
from ..ops.vq import as_rows

F64 = np.float64
#: finite-difference step of the whole-model checks (see models.py)
MODEL_STEP = 1e-4
#: smallest accepted gap between nearest and second-nearest squared distances
MIN_GAP = 1e-2


@dataclass(frozen=True)
class Problem:
    """One problem of an op: forward's keyword arguments (arrays and options)
    and ``wrt``, the names of the inputs that backward's outputs belong to,
    in backward's order (``None`` for an output that is not checked)."""

    inputs: dict
    wrt: tuple

    @property
    def held_fixed(self):
        """Names of the array inputs that are not differentiated (targets,
        noise, labels, the stop-gradient parts of the VQ surrogate)."""
        return tuple(k for k, v in self.inputs.items()
                     if hasattr(v, "shape") and k not in self.wrt)


# --------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------

def away_from_zero(rng, shape, margin=0.1):
    """Normal samples pushed at least ``margin`` away from 0 (for ReLU kinks)."""
    x = rng.standard_normal(shape)
    return x + np.sign(x) * margin


def tiny_images(rng, n=3, shape=(1, 3, 4)):
    """``n`` images of ``shape`` with pixels uniform in [0, 1)."""
    return rng.random((n,) + shape)


# --------------------------------------------------------------------------
# memory layouts
# --------------------------------------------------------------------------

def c_order(x):
    """x as a C-contiguous array (itself when it already is)."""
    return get_xp(x).ascontiguousarray(x)


def channels_last(x):
    """A 4-D x as an (N, C, H, W)-shaped view of a C-contiguous (N, H, W, C)
    copy: the memory layout the conv ops hand to the layers after them.
    Arrays of other ranks are returned as they are."""
    if x.ndim != 4:
        return x
    return get_xp(x).ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def non_contiguous(x):
    """x's values as a strided view: every other element along the last axis
    of a buffer twice as long, whose other elements are NaN."""
    if x.ndim == 0:
        return x.copy()
    buffer = get_xp(x).full(x.shape[:-1] + (2 * x.shape[-1],), np.nan, dtype=x.dtype)
    view = buffer[..., ::2]
    view[...] = x
    return view


#: name -> function giving an array's values in that memory layout
LAYOUTS = {"C-order": c_order, "channels-last": channels_last,
           "non-contiguous": non_contiguous}


def is_float_array(value):
    """True for a NumPy or CuPy array of a floating dtype."""
    return hasattr(value, "dtype") and np.dtype(value.dtype).kind == "f"


# --------------------------------------------------------------------------
# redrawing away from kinks
# --------------------------------------------------------------------------

def redraw(draw, far_enough, what, tries=50):
    """The first of up to ``tries`` calls of ``draw()`` whose result is
    ``far_enough``; RuntimeError naming ``what`` if none is."""
    for _ in range(tries):
        drawn = draw()
        if far_enough(drawn):
            return drawn
    raise RuntimeError(f"could not draw {what}")


def relu_inputs_distance(model, run):
    """Smallest |input| that any ReLU of ``model`` sees while ``run()`` executes
    (with Sequential's ReLU fusion off, so that every ReLU sees its input; the
    values are the same)."""
    relus = [m for m in model.modules() if isinstance(m, ReLU)]
    stacks = [(m, m.fuse_relu) for m in model.modules() if isinstance(m, Sequential)]
    seen = [np.inf]
    for m in relus:
        def recording(x, m=m):
            seen.append(float(np.min(np.abs(x))))
            return ReLU.forward(m, x)
        m.forward = recording
    for m, _ in stacks:
        m.fuse_relu = False
    try:
        run()
    finally:
        for m in relus:
            del m.forward
        for m, fuse in stacks:
            m.fuse_relu = fuse
    return min(seen)


def capacity_gap(model, x, loss_kwargs):
    """|KL - C_t| of the batch under capacity annealing (inf without it)."""
    schedule = model.kl_schedule
    if not schedule.uses_capacity:
        return np.inf
    kl = float(model.loss(x, **loss_kwargs)[1]["kl"])
    return abs(kl - schedule.capacity_at(loss_kwargs.get("step")))


def draw_vae(rng, build, shape=(1, 3, 4), L=1, n_classes=0, step=None, **options):
    """A small float64 VAE (``build``: a model builder), 3 images, fixed noise
    eps (L, 3, 3) and, for ``n_classes`` > 0, labels; redrawn until every
    ReLU input is at least 10 h from 0 and the batch KL at least 0.01 from
    the capacity C_t. Returns ``(model, x, loss_kwargs)``."""
    if n_classes:
        options = dict(options, n_classes=n_classes)

    def draw():
        model = build(image_shape=shape, hidden_dim=7, latent_dim=3, rng=rng, dtype=F64,
                      n_samples=L, **options)
        x = tiny_images(rng, 3, shape)
        eps = rng.standard_normal((L, 3, 3))
        labels = rng.integers(0, n_classes, size=3) if n_classes else None
        return model, x, {"eps": eps, "step": step, "labels": labels}

    def far_enough(drawn):
        model, x, kwargs = drawn
        margin = relu_inputs_distance(model, lambda: model.loss(x, **kwargs))
        return margin > 10 * MODEL_STEP and capacity_gap(model, x, kwargs) > 1e-2

    return redraw(draw, far_enough, "a VAE problem away from ReLU kinks and the capacity kink")


def draw_classifier(rng, build, shape=(1, 4, 4), n=4, num_classes=3):
    """A narrow float64 classifier, ``n`` images and labels, away from ReLU
    kinks. Returns ``(model, x, labels)``."""
    def draw():
        model = build(image_shape=shape, num_classes=num_classes, hidden_dim=5,
                      channels=(3, 4), rng=rng, dtype=F64)
        return model, tiny_images(rng, n, shape), rng.integers(0, num_classes, size=n)

    def far_enough(drawn):
        model, x, labels = drawn
        return relu_inputs_distance(model, lambda: model.loss(x, labels=labels)) > 10 * MODEL_STEP

    return redraw(draw, far_enough, "a classifier problem away from ReLU kinks")


# --------------------------------------------------------------------------
# the vector quantiser: no near ties
# --------------------------------------------------------------------------

def assignment_gap(z_e, codebook):
    """min over vectors of (second-nearest - nearest squared distance); inf for K = 1."""
    rows = as_rows(z_e)
    d = ((rows[:, None, :] - codebook[None, :, :]) ** 2).sum(axis=2)
    if d.shape[1] < 2:
        return np.inf
    d.sort(axis=1)
    return float((d[:, 1] - d[:, 0]).min())


def latent_problem(rng, shape=(2, 3, 2, 2), num_codes=5):
    """z_e (N, D, H, W) and a codebook (K, D), redrawn until no near tie."""
    return redraw(lambda: (rng.standard_normal(shape), rng.standard_normal((num_codes, shape[1]))),
                  lambda drawn: assignment_gap(*drawn) > MIN_GAP,
                  "a VQ problem without near ties", tries=100)


def draw_vq_model(rng, ema=False, shape=(1, 8, 8), channels=(3, 4), num_codes=4, code_dim=3,
                  n=3):
    """A small float64 VQ-VAE and images, away from ReLU kinks and from near ties."""
    def draw():
        model = vq_vae(image_shape=shape, latent_dim=code_dim, num_codes=num_codes,
                       channels=channels, codebook_init="normal", ema=ema, restart_after=0,
                       rng=rng, dtype=F64)
        return model, rng.random((n,) + shape)

    def far_enough(drawn):
        model, x = drawn
        margin = relu_inputs_distance(model, lambda: model.loss(x, training=False))
        gap = assignment_gap(model.encode(x), model.quantizer.codebook.data)
        return margin > 10 * MODEL_STEP and gap > MIN_GAP

    return redraw(draw, far_enough, "a VQ-VAE problem away from kinks and near ties", tries=100)

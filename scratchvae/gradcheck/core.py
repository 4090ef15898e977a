"""Finite-difference gradient checks in float64.

The analytic gradient ``a = dL/dx`` from a hand-written backward is compared
with the central difference

    n_i = (L(x + h e_i) - L(x - h e_i)) / (2 h)

whose error is O(h^2) (truncation) plus O(eps_machine |L| / h) (round-off).
With float64 and h = 1e-6 both are far below 1e-7 for smooth functions of
moderate size, so a correct backward passes at 1e-7 and a wrong one (a sign
flip, a missing term, a wrong scale) fails by orders of magnitude.

The error of one tensor is the scale-aware relative error

    err = max_i |a_i - n_i| / max(max_i (|a_i| + |n_i|), tiny)

Small tensors are checked element by element. For a large tensor a random
subset of elements is checked, plus one directional derivative along a random
unit direction d: <a, d> against n_d = (L(x + h d) - L(x - h d)) / (2 h),
which involves every element at once; its error is |<a, d> - n_d| /
(||a|| + |n_d|). That is normalised by ||a||, not by |<a, d>| (about
||a|| / sqrt(n) for a random d), so it is about sqrt(n) times more lenient
than the elementwise measure: it catches gross errors in the elements the
subset did not draw (a wrong sign, a missing term), not small ones.

Arrays are perturbed *in place* and restored, so ``loss_fn`` simply reads the
current values (of inputs and of parameters alike). Noise must be fixed: pass
the same ``eps`` to every evaluation, never draw inside ``loss_fn``. Keep
inputs of kinked functions (ReLU at 0) away from the kink.
"""
from dataclasses import dataclass, field

import numpy as np

from ..backend import get_xp, to_numpy

TINY = 1e-30


@dataclass
class GradcheckResult:
    """Outcome of one check: per-tensor errors and the verdict."""

    name: str
    errors: dict = field(default_factory=dict)   # tensor name -> relative error
    checked: dict = field(default_factory=dict)  # tensor name -> what was checked
    tol: float = 1e-7

    @property
    def max_error(self):
        return max(self.errors.values()) if self.errors else 0.0

    @property
    def passed(self):
        return bool(self.errors) and self.max_error <= self.tol

    def worst(self):
        """Name of the tensor with the largest error."""
        return max(self.errors, key=self.errors.get) if self.errors else None

    def as_dict(self):
        return {"name": self.name, "max_rel_error": self.max_error, "tol": self.tol,
                "passed": self.passed, "errors": dict(self.errors),
                "checked": dict(self.checked)}

    def __str__(self):
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict} {self.name}: max rel error {self.max_error:.2e} (tol {self.tol:.0e})"


def relative_error(analytic, numeric):
    """max|a - n| / max(max(|a| + |n|), tiny), over all entries."""
    a = np.asarray(to_numpy(analytic), dtype=np.float64)
    n = np.asarray(to_numpy(numeric), dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"relative_error: shapes differ, {a.shape} vs {n.shape}")
    if a.size == 0:
        return 0.0
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(n))):
        return float("inf")
    return float(np.max(np.abs(a - n)) / max(float(np.max(np.abs(a) + np.abs(n))), TINY))


def _central_difference(loss_fn, x, flat_index, h):
    """(L(x + h e_i) - L(x - h e_i)) / 2h for one element of ``x``, perturbed in
    place. ``flat_index`` counts in the logical (C) order of x's shape, the
    order of ``grad.reshape(-1)``, whatever x's memory layout (a channels-last
    view is perturbed where it lies)."""
    index = np.unravel_index(flat_index, x.shape)
    old = x[index].item()
    x[index] = old + h
    plus = float(loss_fn())
    x[index] = old - h
    minus = float(loss_fn())
    x[index] = old
    return (plus - minus) / (2 * h)


def _directional_difference(loss_fn, x, direction, h):
    """(L(x + h d) - L(x - h d)) / 2h, restoring ``x`` exactly afterwards."""
    saved = x.copy()
    x += h * direction
    plus = float(loss_fn())
    x[...] = saved
    x -= h * direction
    minus = float(loss_fn())
    x[...] = saved
    return (plus - minus) / (2 * h)


def gradcheck(loss_fn, arrays, grads, *, name="", h=1e-6, tol=1e-7,
              max_elements=64, rng=None):
    """Compare analytic gradients with central differences.

    Parameters
    ----------
    loss_fn : callable () -> float
        Scalar loss computed from the *current* contents of ``arrays``.
    arrays : dict name -> float64 array
        Tensors to differentiate with respect to; perturbed in place.
    grads : dict name -> array
        The analytic gradient of each tensor (same shape).
    h : float
        Finite-difference step.
    tol : float
        Largest relative error that passes.
    max_elements : int
        Tensors up to this size are checked fully; larger ones on
        ``max_elements`` random entries plus one random direction.
    rng : numpy.random.Generator
        Picks the entries and the direction (seed it for reproducibility).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    result = GradcheckResult(name=name, tol=tol)
    for key, x in arrays.items():
        if x.dtype != np.float64:
            raise ValueError(f"gradcheck: expected {key} of dtype float64, got {x.dtype}")
        g = grads.get(key)
        if g is None:
            raise ValueError(f"gradcheck: no analytic gradient given for {key}")
        if tuple(g.shape) != tuple(x.shape):
            raise ValueError(f"gradcheck: expected gradient of {key} with shape "
                             f"{tuple(x.shape)}, got {tuple(g.shape)}")
        g = to_numpy(g).astype(np.float64).reshape(-1)
        if x.size <= max_elements:
            idx = np.arange(x.size)
            result.checked[key] = f"all {x.size}"
        else:
            idx = np.sort(rng.choice(x.size, size=max_elements, replace=False))
            result.checked[key] = f"{max_elements} of {x.size} + 1 direction"
        numeric = np.array([_central_difference(loss_fn, x, int(i), h) for i in idx])
        err = relative_error(g[idx], numeric)
        if x.size > max_elements:
            xp = get_xp(x)
            d = rng.standard_normal(x.size)
            d /= np.linalg.norm(d)
            num_dir = _directional_difference(loss_fn, x, xp.asarray(d.reshape(x.shape)), h)
            # scale: |<a, d>| <= ||a|| for a unit d, so the error is measured
            # against ||a|| (a direction nearly orthogonal to a must not turn
            # round-off into a large relative error)
            dir_err = abs(g @ d - num_dir) / max(np.linalg.norm(g) + abs(num_dir), TINY)
            err = max(err, float(dir_err))
        result.errors[key] = err
    return result


def check_op(name, forward, backward, inputs, grad_names, *, rng, layout=None, **kwargs):
    """Gradient check of a functional pair ``forward(**inputs) -> (out, cache)``,
    ``backward(dout, cache) -> tuple of grads``.

    The scalar is L = sum(out * G) for a fixed random G, so dL/dout = G.
    ``grad_names`` names the entries of ``inputs`` that backward's outputs
    belong to, in order (``None`` for an output that is not checked).
    ``layout`` (a function of an array, returning the same values in another
    memory layout) lays G out before backward sees it; default C order.
    """
    out, _ = forward(**inputs)
    G = rng.standard_normal(out.shape)
    if layout is not None:
        G = layout(G)

    def loss_fn():
        return float(np.sum(to_numpy(forward(**inputs)[0]) * G))

    _, cache = forward(**inputs)
    analytic = backward(get_xp(out).asarray(G), cache)
    if not isinstance(analytic, tuple):
        analytic = (analytic,)
    if len(analytic) != len(grad_names):   # a dropped gradient must not go unchecked
        raise ValueError(f"check_op {name}: backward returned {len(analytic)} gradients, "
                         f"expected {len(grad_names)} ({', '.join(map(str, grad_names))})")
    arrays, grads = {}, {}
    for key, g in zip(grad_names, analytic):
        if key is not None:
            arrays[key], grads[key] = inputs[key], g
    return gradcheck(loss_fn, arrays, grads, name=name, rng=rng, **kwargs)


def check_module(name, module, x, *, rng, **kwargs):
    """Gradient check of a Module w.r.t. its input and every parameter.

    L = sum(module(x) * G) for a fixed random G (laid out in memory as the
    output is); ``module.backward(G)`` must
    return dL/dx and accumulate dL/dparam into each ``Parameter.grad``.
    """
    out = module.forward(x)
    # dL/dout in out's memory layout (channels-last after a convolution), as the
    # next layer hands it back in training: backward's fast paths are what is checked
    G = np.empty_like(to_numpy(out))
    G[...] = rng.standard_normal(out.shape)

    def loss_fn():
        return float(np.sum(to_numpy(module.forward(x)) * G))

    module.zero_grad()
    module.forward(x)
    dx = module.backward(get_xp(out).asarray(G))
    arrays = {"input": x}
    grads = {"input": dx}
    for pname, p in module.named_parameters():
        arrays[pname], grads[pname] = p.data, p.grad
    return gradcheck(loss_fn, arrays, grads, name=name, rng=rng, **kwargs)


def check_model(name, model, x, *, rng, loss_kwargs=None, **kwargs):
    """Gradient check of a whole model's scalar loss w.r.t. every parameter.

    ``model.loss(x, **loss_kwargs)`` returns ``(loss, parts)`` and caches what
    ``model.backward()`` needs; ``backward`` accumulates every
    ``Parameter.grad``. Fixed noise goes in through ``loss_kwargs`` (eps=...).
    """
    loss_kwargs = loss_kwargs or {}

    def loss_fn():
        return float(model.loss(x, **loss_kwargs)[0])

    arrays, grads = model_gradients("check_model", model, x, **loss_kwargs)
    return gradcheck(loss_fn, arrays, grads, name=name, rng=rng, **kwargs)


def model_gradients(name, model, x, skip=(), **loss_kwargs):
    """One ``model.loss(x, **loss_kwargs)`` and ``model.backward()`` from zeroed
    gradients: ``(arrays, grads)``, each parameter's data and gradient by name.

    A parameter without a gradient is a ValueError naming it, except those in
    ``skip``, which are left out (an EMA codebook, updated without one).
    """
    model.zero_grad()
    model.loss(x, **loss_kwargs)
    model.backward()
    arrays, grads = {}, {}
    for pname, p in model.named_parameters():
        if any(p is q for q in skip):
            continue
        if p.grad is None:
            raise ValueError(f"{name}: parameter {pname} received no gradient")
        arrays[pname], grads[pname] = p.data, p.grad
    return arrays, grads

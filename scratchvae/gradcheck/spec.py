"""One entry of the registry: what is known about one differentiable op,
loss or model, in one place.

An :class:`OpSpec` names the forward and backward, the problems to check
them on (:class:`Case`: builders of float64 :class:`~.problems.Problem`s,
kept away from kinks, with the stop-gradient parts held fixed), the
tolerances, the kernel implementations the op reaches, and where its
derivation, code, kernel, reference and tests live. From it:

- the catalogue of ``python -m scratchvae gradcheck``: the spec's named
  cases (each checked by :func:`~.core.check_op`) followed by its further
  ``checks`` (the Module around the op, a whole model), see :meth:`OpSpec.catalogue`;
- tests/test_op_specs.py: every case over the implementations, two dtypes
  and three memory layouts;
- docs/derivations.md (scratchvae/gradcheck/derivations.py).
"""
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

from .core import check_module, check_op
from .problems import away_from_zero


class Case(NamedTuple):
    """A problem builder ``make(rng) -> Problem``. A named case is also a
    check of the catalogue under that name; an unnamed one serves the
    generated tests only."""

    name: Optional[str]
    make: Callable


class Check(NamedTuple):
    """One check of the catalogue: ``run(rng) -> GradcheckResult``."""

    name: str
    run: Callable


@dataclass(eq=False)
class OpSpec:
    """One differentiable op, loss or model.

    name            registry key ("relu", "conv2d", "mlp-vae")
    forward         the op's ``*_forward`` (a model: its ``loss``)
    backward        the op's ``*_backward`` (a model: its ``backward``)
    cases           problems of the op (:class:`Case`); empty for a model
    checks          further checks of the catalogue (:class:`Check`): the
                    Module around the op, a whole model's loss
    check_forward,  forward and backward as the cases call them, where that
    check_backward  differs from the op's own signature (a list of inputs;
                    the VQ straight-through surrogate); None: the op's own
    kinks           what the cases' problems are kept away from
    implementations which of "reference", "cpu", "cuda" the op runs: an op
                    without a kernel of its own is its own plain reference
    kernels         the kernel entry points the op calls (kernels/)
    references      their plain ``xp`` references
    tol, h          float64 check: largest relative error, difference step
    float32_tol     largest relative error of float32 against float64
    derivation      a module or function whose docstring derives the op
                    beyond the forward's and backward's own docstrings
    wrapper         the Module class around the op, or the model's builder
    tests           test files that test it beyond tests/test_op_specs.py
    """

    name: str
    forward: Callable
    backward: Callable
    cases: tuple = ()
    checks: tuple = ()
    check_forward: Optional[Callable] = None
    check_backward: Optional[Callable] = None
    kinks: str = ""
    implementations: tuple = ("reference",)
    kernels: tuple = ()
    references: tuple = ()
    tol: float = 1e-7
    h: float = 1e-6
    float32_tol: float = 1e-5
    derivation: object = None
    wrapper: object = None
    tests: tuple = ()

    def pair(self):
        """``(forward, backward)`` as the cases call them."""
        return (self.check_forward or self.forward, self.check_backward or self.backward)

    def check(self, name, problem, rng, layout=None):
        """Float64 gradient check of ``problem`` (a Problem) under ``name``."""
        forward, backward = self.pair()
        return check_op(name, forward, backward, problem.inputs, problem.wrt, rng=rng,
                        layout=layout, tol=self.tol, h=self.h)

    def catalogue(self):
        """The spec's checks of the catalogue: its named cases, then ``checks``."""
        def run_case(case):
            return lambda rng: self.check(case.name, case.make(rng), rng)
        return tuple(Check(case.name, run_case(case)) for case in self.cases if case.name) \
            + tuple(self.checks)


def module_check(name, make, shape, kinked=False, layout=None):
    """A check of the Module ``make(rng)`` on a float64 input of ``shape``
    (drawn first; away from 0 when ``kinked``; laid out by ``layout``),
    w.r.t. its input and every parameter."""
    def run(rng):
        x = away_from_zero(rng, shape) if kinked else rng.standard_normal(shape)
        if layout is not None:
            x = layout(x)
        return check_module(name, make(rng), x, rng=rng)
    return Check(name, run)

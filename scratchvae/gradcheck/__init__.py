"""Gradient checks: finite differences against every hand-written backward.

- core.py         central differences in float64, the relative error,
                  check_op / check_module / check_model
- problems.py     problem builders: inputs away from kinks, memory layouts,
                  models redrawn until no step crosses a kink or a near tie
- spec.py         OpSpec: one op, loss or model with its problems,
                  tolerances, kernels, references, derivation and tests
- elementwise.py, dense.py, losses.py, conv.py, vq.py, models.py,
  objectives.py   the entries, one module per family
- registry.py     REGISTRY (the families collected) and the catalogue
                  behind ``python -m scratchvae gradcheck``
- derivations.py  writes docs/derivations.md from the registry
"""
from .core import GradcheckResult, check_model, check_module, check_op, gradcheck, relative_error
from .registry import REGISTRY, check_names, checks, register, run_check, run_checks
from .spec import Case, Check, OpSpec

__all__ = ["GradcheckResult", "check_model", "check_module", "check_op", "gradcheck",
           "relative_error", "REGISTRY", "check_names", "checks", "register", "run_check",
           "run_checks", "Case", "Check", "OpSpec"]

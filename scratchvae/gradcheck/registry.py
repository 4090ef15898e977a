"""The registry: one :class:`~.spec.OpSpec` per differentiable op, loss and
model, collected from the family modules listed in :data:`FAMILIES`, and the
catalogue of gradient checks drawn from it.

To add an op: write its entry in the SPECS of the family module of its kind
(or of a new module, added to FAMILIES), record its name and its checks'
names in tests/gradcheck_catalogue.txt, and regenerate docs/derivations.md
with ``python -m scratchvae.gradcheck.derivations > docs/derivations.md``.
"""
import inspect

import numpy as np

from . import conv, dense, elementwise, losses, models, objectives, pixelcnn, vq

#: the family modules, in catalogue order; each lists its entries in SPECS
FAMILIES = (elementwise, dense, losses, conv, vq, models, objectives, pixelcnn)

#: name -> OpSpec, in catalogue order
REGISTRY = {}


def register(spec):
    """Add ``spec`` to REGISTRY; its name and check names must be new."""
    if spec.name in REGISTRY:
        raise ValueError(f"register: an op spec named {spec.name!r} exists already")
    taken = {check.name for other in REGISTRY.values() for check in other.catalogue()}
    for check in spec.catalogue():
        if check.name in taken:
            raise ValueError(f"register: a check named {check.name!r} exists already")
        taken.add(check.name)
    REGISTRY[spec.name] = spec
    return spec


for _family in FAMILIES:
    for _spec in _family.SPECS:
        register(_spec)


def family_of(spec):
    """The family module whose SPECS hold ``spec``."""
    return next(f for f in FAMILIES if any(s is spec for s in f.SPECS))


# --------------------------------------------------------------------------
# the catalogue: ``python -m scratchvae gradcheck``
# --------------------------------------------------------------------------

def checks():
    """Every check of the catalogue, as (name, run) pairs, spec by spec."""
    return [check for spec in REGISTRY.values() for check in spec.catalogue()]


def check_names():
    return [check.name for check in checks()]


def run_check(name, seed=0):
    """Run one check of the catalogue by name."""
    for check in checks():
        if check.name == name:
            return check.run(np.random.default_rng(seed))
    raise KeyError(f"no gradient check named {name!r}")


def run_checks(seed=0, only=None):
    """Run every check (or those whose name contains ``only``)."""
    return [check.run(np.random.default_rng(seed)) for check in checks()
            if only is None or only.lower() in check.name.lower()]


# --------------------------------------------------------------------------
# coverage: every backward has an entry
# --------------------------------------------------------------------------

def unregistered_backwards(modules):
    """``module.function`` names of the ``*_backward`` functions defined in
    ``modules`` that are no entry's backward."""
    registered = {spec.backward for spec in REGISTRY.values()}
    return [f"{module.__name__}.{name}" for module in modules
            for name, obj in vars(module).items()
            if name.endswith("_backward") and inspect.isfunction(obj)
            and obj.__module__ == module.__name__ and obj not in registered]

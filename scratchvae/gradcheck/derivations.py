"""Writes docs/derivations.md from the registry:

    python -m scratchvae.gradcheck.derivations > docs/derivations.md

Per entry: the forward and backward with their derivations (their
docstrings, and the docstring of the entry's ``derivation``), and links to
its code, Module or builder, kernel, reference, registry entry, problems,
catalogue checks and tests. tests/test_op_specs.py fails when the committed
file differs from :func:`render`.
"""
import inspect
import sys
from pathlib import Path

import numpy as np

from .registry import FAMILIES, family_of

ROOT = Path(__file__).resolve().parents[2]


def _path(obj):
    """Path of the file defining ``obj``, relative to the repository root."""
    return Path(inspect.getsourcefile(obj)).resolve().relative_to(ROOT).as_posix()


def _link(obj, label=None):
    name = label or getattr(obj, "__qualname__", None) or obj.__name__
    return f"[`{name}`](../{_path(obj)})"


def _links(objects):
    return ", ".join(_link(obj) for obj in objects)


def _file_link(path):
    return f"[{path}](../{path})"


def _doc(obj):
    doc = inspect.getdoc(obj)
    return f"```text\n{doc}\n```" if doc else "(no docstring)"


def _signature(fn):
    try:
        return f"{fn.__qualname__}{inspect.signature(fn)}"
    except (TypeError, ValueError):
        return fn.__qualname__


def _describe(name, value, wrt):
    if hasattr(value, "shape"):
        kind = "d/d " if name in wrt else ""
        return f"{kind}`{name}` {tuple(value.shape)}"
    return f"`{name}`={value!r}"


def _case_line(case):
    problem = case.make(np.random.default_rng(0))
    parts = [_describe(k, v, problem.wrt) for k, v in problem.inputs.items() if v is not None]
    title = f"`{case.name}`" if case.name else "generated tests"
    return f"- {title}: " + ", ".join(parts)


def _entry(spec, shown):
    """The section of one entry; ``shown``: derivations already printed."""
    lines = [f"### {spec.name}", "", "| | |", "|---|---|",
             f"| Forward | {_link(spec.forward)} |",
             f"| Backward | {_link(spec.backward)} |"]
    adapters = [f for f in (spec.check_forward, spec.check_backward) if f is not None]
    if adapters:
        lines.append(f"| Checked as | {_links(adapters)} |")
    if spec.wrapper is not None:
        lines.append(f"| Module or builder | {_link(spec.wrapper)} |")
    if spec.kernels:
        impls = ", ".join(spec.implementations)
        lines.append(f"| Kernel ({impls}) | {_links(spec.kernels)} |")
    elif spec.cases:
        lines.append("| Kernel | none of its own: plain xp code, its own reference |")
    else:
        lines.append("| Kernels | those of its layers (" + ", ".join(spec.implementations) + ") |")
    if spec.references:
        lines.append(f"| Reference | {_links(spec.references)} |")
    lines.append(f"| Registry entry | {_file_link(_path(family_of(spec)))} |")
    tests = ["tests/test_op_specs.py"] + list(spec.tests)
    lines.append("| Tests | " + ", ".join(_file_link(t) for t in tests) + " |")
    lines.append(f"| Tolerance | float64 check {spec.tol:.0e} (step h = {spec.h:.0e})"
                 + (f", float32 against float64 {spec.float32_tol:.0e}" if spec.cases else "")
                 + " |")
    if spec.kinks:
        lines.append(f"| Kept away from | {spec.kinks} |")
    lines.append("")
    if spec.cases:
        lines += ["Problems (float64; d/d: differentiated, the other arrays held fixed):", ""]
        lines += [_case_line(case) for case in spec.cases]
        lines.append("")
    names = [check.name for check in spec.catalogue()]
    if names:
        lines += ["Catalogue checks: " + ", ".join(f"`{n}`" for n in names), ""]
    if spec.derivation is not None:
        key = id(spec.derivation)
        if key in shown:
            lines += [f"Derivation: as for [{shown[key]}](#{shown[key]}) "
                      f"({_link(spec.derivation, spec.derivation.__name__)}).", ""]
        else:
            shown[key] = spec.name
            lines += [f"Derivation ({_link(spec.derivation, spec.derivation.__name__)}):", "",
                      _doc(spec.derivation), ""]
    lines += [f"**Forward** `{_signature(spec.forward)}`", "", _doc(spec.forward), "",
              f"**Backward** `{_signature(spec.backward)}`", "", _doc(spec.backward), ""]
    return lines


def render():
    """The text of docs/derivations.md."""
    lines = ["# Derivations", "",
             "Generated from the op spec registry (scratchvae/gradcheck/) by",
             "`python -m scratchvae.gradcheck.derivations > docs/derivations.md`;",
             "edit the docstrings and the registry entries, not this file.", "",
             "Every differentiable op, loss and model of scratchvae: its forward and",
             "backward with their derivations, and where its code, kernel, reference,",
             "gradient check and tests are.", "",
             "| Entry | Family | Code |", "|---|---|---|"]
    for family in FAMILIES:
        for spec in family.SPECS:
            lines.append(f"| [{spec.name}](#{spec.name}) | {family.__name__.rsplit('.', 1)[1]} "
                         f"| {_file_link(_path(spec.forward))} |")
    lines.append("")
    shown = {}
    for family in FAMILIES:
        lines += [f"## {family.__name__.rsplit('.', 1)[1]}", "", inspect.getdoc(family), ""]
        for spec in family.SPECS:
            lines += _entry(spec, shown)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())

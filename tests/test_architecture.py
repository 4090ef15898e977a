"""The layers of the house, checked from the source: each module of
``scratchvae/`` and ``kernels/`` imports only modules of its own layer or of
the layers below it (imports inside functions included), no engine file
imports CuPy at module level, and nothing imports PyTorch.

Layers, bottom to top (the README's "What is inside"):

0. backend and kernels (plus the dependency-free helpers gradcheck and schedules)
1. ops: forward/backward pairs
2. layers (modules holding parameters), losses, optimizers
3. models
4. training, metrics, plots, data, checkpoints, reports, the gradient-check suite
5. the CLI
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("scratchvae", "kernels")

LAYERS = [
    ("scratchvae", "scratchvae.backend", "scratchvae.gradcheck", "scratchvae.schedules",
     "kernels"),
    ("scratchvae.ops",),
    ("scratchvae.layers", "scratchvae.losses", "scratchvae.optimizers"),
    ("scratchvae.models",),
    ("scratchvae.train", "scratchvae.metrics", "scratchvae.plots", "scratchvae.data",
     "scratchvae.checkpoints", "scratchvae.report", "scratchvae.checks",
     "scratchvae.checks_conv", "scratchvae.checks_vq"),
    ("scratchvae.cli", "scratchvae.__main__"),
]


def layer_of(module):
    """Index in LAYERS of the longest prefix naming ``module``; None if unplaced."""
    best, best_len = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def module_name(path, root=ROOT):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules():
    """{module name: source path} of every .py file of the two packages."""
    return {module_name(p): p for package in PACKAGES
            for p in sorted((ROOT / package).rglob("*.py"))}


def imported_modules(tree, module, is_package, known):
    """Project modules that ``tree`` imports anywhere (top level or in functions).

    ``from pkg import name`` counts as an import of ``pkg.name`` when that is
    a module of the project, else of ``pkg``.
    """
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def upward_imports(modules):
    """(importer, imported) pairs where a module imports from a higher layer."""
    known = set(modules)
    bad = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for imported in imported_modules(tree, module, path.name == "__init__.py", known):
            if layer_of(imported) > layer_of(module):
                bad.append((module, imported))
    return sorted(bad)


def test_every_module_has_a_layer():
    unplaced = [m for m in project_modules() if layer_of(m) is None]
    assert not unplaced, f"modules missing from LAYERS in {__file__}: {unplaced}"


def test_no_module_imports_from_a_layer_above_it():
    assert upward_imports(project_modules()) == []


def test_an_upward_import_is_reported(tmp_path):
    """The check can fail: an op importing a model is caught, a model importing an op is not."""
    ops_file = tmp_path / "scratchvae" / "ops" / "bad.py"
    model_file = tmp_path / "scratchvae" / "models" / "fine.py"
    for path in (ops_file, model_file):
        path.parent.mkdir(parents=True, exist_ok=True)
    ops_file.write_text("def f():\n    from ..models import vae\n")
    model_file.write_text("from ..ops.linear import linear_forward\n")
    modules = {module_name(p, tmp_path): p for p in (ops_file, model_file)}
    modules["scratchvae.models.vae"] = model_file     # so that the name is known
    assert upward_imports(modules) == [("scratchvae.ops.bad", "scratchvae.models.vae")]


@pytest.mark.parametrize("forbidden", ["cupy", "torch"])
def test_no_top_level_import_of_optional_frameworks(forbidden):
    """CuPy only inside functions (taken from the arrays); PyTorch nowhere in the engine."""
    offenders = []
    for module, path in project_modules().items():
        tree = ast.parse(path.read_text())
        nodes = ast.walk(tree) if forbidden == "torch" else tree.body
        for node in nodes:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == forbidden for n in names):
                offenders.append(module)
    assert offenders == []

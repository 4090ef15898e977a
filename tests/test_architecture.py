"""The layers of the house, checked from the source.

Every module of ``scratchvae/`` and ``kernels/`` is placed by its exact name in
one tier of PLACEMENT (a new module fails until it is placed), imports only
modules of its own tier or of the tiers below it (imports inside functions
included), and the import graph has no circle. No engine file imports CuPy at
module level; only the PyTorch twins (``scratchvae/twins``) import PyTorch, and
only the sweep's twin path imports them, inside its functions.

Tiers, bottom to top (the README's "What is inside"):

kernels      hot loops beside their NumPy references; import nothing of scratchvae
backend      array module from the arrays, seeded generators, checks of arguments
ops          functional forward/backward pairs
modules      layers holding parameters, losses, optimisers, schedules
models       the VAE chain and the architectures built on it
gradcheck    finite differences and the op spec registry over everything below
runs         files, data, checkpoints, configuration, run directories, training
figures      plots, the report of trained runs, the example scripts' helpers
cli          the commands of ``python -m scratchvae``
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("scratchvae", "kernels")

#: tier -> the exact names of its modules (packages by their own name)
PLACEMENT = {
    "kernels": ["kernels", "kernels._arrays", "kernels._dispatch", "kernels.adam", "kernels.bce",
                "kernels.blas", "kernels.codes", "kernels.conv_gemm", "kernels.counter_rng",
                "kernels.cublas",
                "kernels.gemm",
                "kernels.im2col", "kernels.layout", "kernels.gated", "kernels.windows",
                "kernels.relu", "kernels.sigmoid", "kernels.vq"],
    "backend": ["scratchvae", "scratchvae.backend"],
    "ops": ["scratchvae.ops", "scratchvae.ops.activations", "scratchvae.ops.conv",
            "scratchvae.ops.linear", "scratchvae.ops.sampler", "scratchvae.ops.shape",
            "scratchvae.ops.vq", "scratchvae.ops.iwae",
            "scratchvae.ops.embedding"],
    "modules": ["scratchvae.layers", "scratchvae.layers.base", "scratchvae.layers.conv",
                "scratchvae.layers.dense", "scratchvae.losses", "scratchvae.optimizers",
                "scratchvae.schedules",
                "scratchvae.layers.embedding"],
    "models": ["scratchvae.models", "scratchvae.models.classifier", "scratchvae.models.conv_vae",
               "scratchvae.models.cvae", "scratchvae.models.mlp_vae", "scratchvae.models.iwae", "scratchvae.models.vae",
               "scratchvae.models.hvae",
               "scratchvae.models.vq_vae", "scratchvae.models.pixelcnn"],
    "gradcheck": ["scratchvae.gradcheck", "scratchvae.gradcheck.core",
                  "scratchvae.gradcheck.problems", "scratchvae.gradcheck.spec",
                  "scratchvae.gradcheck.registry", "scratchvae.gradcheck.elementwise",
                  "scratchvae.gradcheck.dense", "scratchvae.gradcheck.losses",
                  "scratchvae.gradcheck.conv", "scratchvae.gradcheck.vq",
                  "scratchvae.gradcheck.models", "scratchvae.gradcheck.objectives",
                  "scratchvae.gradcheck.derivations",
                  "scratchvae.gradcheck.pixelcnn"],
    "runs": ["scratchvae.files", "scratchvae.data", "scratchvae.data.idx",
             "scratchvae.data.registry", "scratchvae.data.sources", "scratchvae.data.batches",
             "scratchvae.data.download",
             "scratchvae.checkpoints", "scratchvae.config", "scratchvae.rundir",
             "scratchvae.prior", "scratchvae.device_loop", "scratchvae.graph_step",
             "scratchvae.train", "scratchvae.metrics", "scratchvae.toy",
             "scratchvae.quality", "scratchvae.sweep",
             "scratchvae.twins", "scratchvae.twins.models", "scratchvae.twins.train"],
    "figures": ["scratchvae.plots", "scratchvae.latent_plots", "scratchvae.figures",
                "scratchvae.report"],
    "cli": ["scratchvae.run_commands", "scratchvae.sweep_commands", "scratchvae.cli", "scratchvae.__main__"],
}
TIERS = list(PLACEMENT)


def tier_of(placement=PLACEMENT):
    """{module: index of its tier}."""
    return {m: TIERS.index(tier) for tier, modules in placement.items() for m in modules}


def module_name(path, root=ROOT):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root=ROOT):
    """{module name: source path} of every .py file of the two packages."""
    return {module_name(p, root): p for package in PACKAGES
            for p in sorted((root / package).rglob("*.py"))}


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


def import_graph(modules):
    """{module: set of project modules it imports}."""
    known = set(modules)
    return {m: imported_modules(ast.parse(p.read_text(), filename=str(p)), m,
                                p.name == "__init__.py", known) - {m}
            for m, p in modules.items()}


def unplaced(modules, placement=PLACEMENT):
    """Modules of the tree without a tier, and placed names with no module."""
    placed = tier_of(placement)
    return sorted(set(modules) - set(placed)), sorted(set(placed) - set(modules))


def upward_imports(graph, placement=PLACEMENT):
    """(importer, imported) pairs where a module imports from a higher tier
    (unplaced modules are left to :func:`unplaced`)."""
    tiers = tier_of(placement)
    return sorted((m, i) for m, imported in graph.items() for i in imported
                  if m in tiers and i in tiers and tiers[i] > tiers[m])


def import_cycle(graph):
    """One circle of imports as a list of modules ending where it starts, or None.

    A package's ``__init__`` importing its own submodules is the package's
    contents, not a circle, so edges from a package into its own subtree are
    left out.
    """
    edges = {m: {i for i in imported if not i.startswith(m + ".")}
             for m, imported in graph.items()}
    state = {}

    def visit(m, path):
        state[m] = "open"
        for i in sorted(edges.get(m, ())):
            if state.get(i) == "open":
                return path[path.index(i):] + [i]
            if i not in state:
                found = visit(i, path + [i])
                if found:
                    return found
        state[m] = "done"
        return None

    for m in sorted(edges):
        if m not in state:
            found = visit(m, [m])
            if found:
                return found
    return None


def test_every_module_is_placed_in_exactly_one_tier():
    names = [m for modules in PLACEMENT.values() for m in modules]
    assert len(names) == len(set(names)), "a module is placed twice"
    missing, stale = unplaced(project_modules())
    assert not missing, f"modules without a tier in PLACEMENT of {__file__}: {missing}"
    assert not stale, f"PLACEMENT names modules that do not exist: {stale}"


def test_no_module_imports_from_a_tier_above_it():
    assert upward_imports(import_graph(project_modules())) == []


def test_the_import_graph_has_no_circle():
    assert import_cycle(import_graph(project_modules())) is None


def _tree(tmp_path, files):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return project_modules(tmp_path)


def test_the_checks_bite(tmp_path):
    """A new unplaced module, an upward import and a circle are each reported."""
    modules = _tree(tmp_path, {
        "kernels/__init__.py": "",
        "scratchvae/__init__.py": "",
        "scratchvae/ops/__init__.py": "",
        "scratchvae/ops/bad.py": "def f():\n    from ..models import vae\n",
        "scratchvae/models/__init__.py": "",
        "scratchvae/models/vae.py": "from ..ops.bad import f\nfrom . import cvae\n",
        "scratchvae/models/cvae.py": "from .vae import f\n",
        "scratchvae/brand_new.py": "",
    })
    placement = {"kernels": ["kernels"], "backend": ["scratchvae"],
                 "ops": ["scratchvae.ops", "scratchvae.ops.bad"],
                 "models": ["scratchvae.models", "scratchvae.models.vae",
                            "scratchvae.models.cvae", "scratchvae.models.gone"]}
    assert unplaced(modules, placement) == (["scratchvae.brand_new"], ["scratchvae.models.gone"])
    graph = import_graph(modules)
    assert upward_imports(graph, placement) == [("scratchvae.ops.bad", "scratchvae.models.vae")]
    assert import_cycle(graph) in (
        ["scratchvae.models.cvae", "scratchvae.models.vae", "scratchvae.models.cvae"],
        ["scratchvae.models.vae", "scratchvae.models.cvae", "scratchvae.models.vae"],
        ["scratchvae.models.vae", "scratchvae.ops.bad", "scratchvae.models.vae"])


def test_a_package_importing_its_own_modules_is_no_circle(tmp_path):
    modules = _tree(tmp_path, {"kernels/__init__.py": "from .relu import f\n",
                               "kernels/relu.py": "def f():\n    pass\n"})
    assert import_cycle(import_graph(modules)) is None


#: the package that alone imports PyTorch, and the modules that alone import it (lazily)
TWINS = "scratchvae.twins"
TWIN_IMPORTERS = ("scratchvae.sweep", "scratchvae.sweep_commands")


def _is_twins(name):
    return name == TWINS or name.startswith(TWINS + ".")


@pytest.mark.parametrize("forbidden", ["cupy", "torch"])
def test_no_top_level_import_of_optional_frameworks(forbidden):
    """CuPy only inside functions (taken from the arrays); PyTorch nowhere in the engine
    (the twins, scratchvae/twins, are no part of it)."""
    offenders = []
    for module, path in project_modules().items():
        if forbidden == "torch" and _is_twins(module):
            continue
        tree = ast.parse(path.read_text())
        nodes = ast.walk(tree) if forbidden == "torch" else tree.body
        for node in nodes:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == forbidden for n in names):
                offenders.append(module)
    assert offenders == []


def _top_level_imports(tree, module, is_package, known):
    """The project modules imported by the statements of the module's own body (not
    inside functions or classes)."""
    body = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))],
                      type_ignores=[])
    return imported_modules(body, module, is_package, known)


def test_only_the_sweeps_twin_path_imports_the_twins_and_only_lazily():
    """PyTorch stays out of every process that does not ask for a twin: outside
    scratchvae/twins, only the sweep's modules import the twins, inside functions;
    the twins' package itself imports PyTorch only inside functions (its checks run
    without it), and no module of the twins is imported at the top of another."""
    modules = project_modules()
    graph, known = import_graph(modules), set(modules)
    importers = sorted(m for m, imported in graph.items()
                       if not _is_twins(m) and any(_is_twins(i) for i in imported))
    assert set(importers) <= set(TWIN_IMPORTERS), importers
    for m in importers:
        path = modules[m]
        top = _top_level_imports(ast.parse(path.read_text()), m, path.name == "__init__.py",
                                 known)
        assert not any(_is_twins(i) for i in top), f"{m} imports the twins at module level"
    package = ast.parse(modules[TWINS].read_text())
    top_torch = [n.lineno for n in package.body
                 if isinstance(n, ast.Import) and any(a.name.split(".")[0] == "torch"
                                                      for a in n.names)
                 or isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "torch"]
    assert top_torch == [], f"scratchvae/twins/__init__.py imports torch at lines {top_torch}"

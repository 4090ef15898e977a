"""Tests generated from the op spec registry (scratchvae/gradcheck/), in the
spirit of Chainer's FunctionTestCase.

- the catalogue: every check of ``python -m scratchvae gradcheck`` passes,
  on each kernel implementation its op runs on the CPU (reference, cpu);
  its entries and names are recorded in tests/gradcheck_catalogue.txt, so
  a dropped or renamed one fails;
- every problem (Case) of every op spec, over {reference kernels
  (SCRATCHVAE_KERNELS=reference), CPU kernels} x {float64 gradient check,
  float32 forward/backward against float64} x {C-order, channels-last,
  non-contiguous inputs and upstream gradient}, with random non-uniform
  upstream gradients, checking that no input is modified; the ops with CUDA
  kernels run in one subprocess on the GPU tests' backend, real CuPy or the
  CuPy stand-in under the CUDA simulator (tests/op_specs_cuda.py);
- every ``*_backward`` of scratchvae/ops/ and scratchvae/losses.py has an
  entry, and every entry points to files that exist;
- docs/derivations.md is what scratchvae/gradcheck/derivations.py writes.

And that these tests can fail: a broken op planted in a spec is caught.
"""
import importlib
import pkgutil
import types
from pathlib import Path

import numpy as np
import pytest

from gpu_backend import run_on_gpu
from kernels._dispatch import ENV_VAR
from op_specs_harness import evaluate, prepared
from scratchvae import losses, ops
from scratchvae.gradcheck import REGISTRY, OpSpec, checks, register, relative_error
from scratchvae.gradcheck import derivations
from scratchvae.gradcheck.problems import LAYOUTS, Problem
from scratchvae.gradcheck.registry import FAMILIES, unregistered_backwards
from scratchvae.gradcheck.spec import Case
from scratchvae.ops import activations as A

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
CATALOGUE_FILE = TESTS / "gradcheck_catalogue.txt"
CPU_SIDE = ("reference", "cpu")


def use(implementation, monkeypatch):
    """Kernels as ``implementation``: "reference" forces the plain xp references,
    "cpu" leaves the dispatch to pick the Numba CPU kernels."""
    if implementation == "reference":
        monkeypatch.setenv(ENV_VAR, "reference")
    else:
        monkeypatch.delenv(ENV_VAR, raising=False)


# --------------------------------------------------------------------------
# the catalogue
# --------------------------------------------------------------------------

CATALOGUE = [pytest.param(spec, check, impl, id=f"{check.name} [{impl}]")
             for spec in REGISTRY.values() for check in spec.catalogue()
             for impl in spec.implementations if impl in CPU_SIDE]


@pytest.mark.parametrize("spec, check, implementation", CATALOGUE)
def test_catalogue_check_passes(spec, check, implementation, monkeypatch):
    use(implementation, monkeypatch)
    result = check.run(np.random.default_rng(0))
    assert result.errors, "the check compared nothing"
    assert result.name == check.name
    assert result.passed, str(result) + f" errors={result.errors}"
    assert result.max_error <= spec.tol


def catalogue_text():
    """Each entry's name, then its checks of the catalogue indented, in order."""
    lines = []
    for spec in REGISTRY.values():
        lines.append(spec.name)
        lines += ["    " + check.name for check in spec.catalogue()]
    return "\n".join(lines) + "\n"


def test_catalogue_is_the_recorded_one():
    """Entries and check names are fixed (the CLI's --only and --json use the
    names): dropping, renaming or adding one must be recorded here too."""
    recorded = "".join(line for line in CATALOGUE_FILE.read_text().splitlines(keepends=True)
                       if not line.startswith("#"))
    assert catalogue_text() == recorded, (
        f"the registry's entries or check names differ from {CATALOGUE_FILE.name}; "
        f"update that file if the change is intended")
    names = [check.name for check in checks()]
    assert len(set(names)) == len(names), "two checks share a name"


# --------------------------------------------------------------------------
# generated: every problem of every op spec
# --------------------------------------------------------------------------

OP_SPECS = [spec for spec in REGISTRY.values() if spec.cases]


def _has_4d_input(spec):
    return any(getattr(v, "ndim", 0) == 4 for case in spec.cases
               for v in case.make(np.random.default_rng(0)).inputs.values())


def _matrix():
    for spec in OP_SPECS:
        for impl in spec.implementations:
            if impl not in CPU_SIDE:
                continue
            for layout in LAYOUTS:
                if layout == "channels-last" and not _has_4d_input(spec):
                    continue        # nothing to lay out channels-last
                yield pytest.param(spec, impl, layout, id=f"{spec.name}-{impl}-{layout}")


MATRIX = list(_matrix())


def float64_gradcheck(spec, layout, seed=0):
    """Every case of ``spec``, laid out, against central differences (after one
    forward/backward that must leave the inputs unchanged)."""
    for i, case in enumerate(spec.cases):
        problem = case.make(np.random.default_rng(seed))
        inputs = prepared(problem.inputs, np.float64, layout)
        evaluate(spec, inputs, problem.wrt, layout)
        result = spec.check(case.name or spec.name, Problem(inputs, problem.wrt),
                            np.random.default_rng(seed), layout=LAYOUTS[layout])
        assert result.passed, f"case {i} in {layout}: {result} {result.errors}"


def float32_against_float64(spec, layout, seed=0):
    """Every case of ``spec`` in float32 and in float64: the same outputs and
    gradients to float32 precision, and float32 results."""
    for i, case in enumerate(spec.cases):
        problem = case.make(np.random.default_rng(seed))
        results = {dtype: evaluate(spec, prepared(problem.inputs, dtype, layout), problem.wrt,
                                   layout) for dtype in (np.float32, np.float64)}
        (out32, grads32), (out64, grads64) = results[np.float32], results[np.float64]
        for name, a, b in [("out", out32, out64)] + [(k, grads32[k], grads64[k]) for k in grads64]:
            assert a.dtype == np.float32, f"case {i} in {layout}: {name} is {a.dtype}"
            err = relative_error(a, b)
            assert err <= spec.float32_tol, f"case {i} in {layout}: {name} off by {err:.1e}"


@pytest.mark.parametrize("spec, implementation, layout", MATRIX)
def test_float64_gradcheck(spec, implementation, layout, monkeypatch):
    use(implementation, monkeypatch)
    float64_gradcheck(spec, layout)


@pytest.mark.parametrize("spec, implementation, layout", MATRIX)
def test_float32_against_float64(spec, implementation, layout, monkeypatch):
    use(implementation, monkeypatch)
    float32_against_float64(spec, layout)


@pytest.mark.gpu
def test_cuda_kernels_on_the_gpu_backend():
    """One subprocess for every op spec with CUDA kernels: on device arrays
    the CUDA kernels run, and give the NumPy path's results (tests/op_specs_cuda.py)."""
    out = run_on_gpu("import op_specs_cuda; op_specs_cuda.main()")
    for spec in OP_SPECS:
        if "cuda" in spec.implementations:
            assert f"{spec.name}: " in out, out


# the generated tests can fail --------------------------------------------------

def _relu_spec(**changes):
    relu = REGISTRY["relu"]
    fields = dict(name="broken relu", forward=relu.forward, backward=relu.backward,
                  cases=relu.cases)
    fields.update(changes)
    return OpSpec(**fields)


def test_a_wrong_backward_fails_the_float64_check():
    spec = _relu_spec(backward=lambda dy, y: dy * (y >= 0) * 1.5)
    with pytest.raises(AssertionError, match="max rel error"):
        float64_gradcheck(spec, "C-order")


def test_an_op_that_modifies_its_input_is_caught():
    def forward(x):
        y, cache = A.relu_forward(x)
        x[...] = y                          # writes into the caller's array
        return y, cache
    with pytest.raises(AssertionError, match=r"modified its input\(s\) \['x'\]"):
        float64_gradcheck(_relu_spec(forward=forward), "C-order")

    def backward(dy, y):
        dy *= (y > 0)                      # writes into the upstream gradient
        return dy
    with pytest.raises(AssertionError, match="backward modified dy"):
        float64_gradcheck(_relu_spec(backward=backward), "C-order")


def test_a_backward_that_ignores_strides_is_caught():
    """A kernel that reads dy's memory as if it were C-contiguous: right for
    C-order, wrong for channels-last and non-contiguous upstream gradients."""
    def backward(dy, y):
        c_strides = np.empty(dy.shape, dy.dtype).strides
        raw = np.lib.stride_tricks.as_strided(dy, dy.shape, c_strides)
        return A.relu_backward(np.array(raw), y)
    spec = _relu_spec(backward=backward)
    float64_gradcheck(spec, "C-order")
    for layout in ("channels-last", "non-contiguous"):
        with pytest.raises(AssertionError, match="max rel error"):
            float64_gradcheck(spec, layout)


def test_a_float32_path_that_loses_precision_is_caught():
    sigmoid = REGISTRY["sigmoid"]

    def half(x):                           # float32 inputs rounded to float16
        if x.dtype == np.float32:
            x = x.astype(np.float16).astype(np.float32)
        return A.sigmoid_forward(x)
    spec = OpSpec("half sigmoid", half, sigmoid.backward, cases=sigmoid.cases)
    with pytest.raises(AssertionError, match="out off by"):
        float32_against_float64(spec, "C-order")

    def promoting(x):                      # float32 inputs give float64 outputs
        return A.sigmoid_forward(x.astype(np.float64))
    spec = OpSpec("promoting sigmoid", promoting, sigmoid.backward, cases=sigmoid.cases)
    with pytest.raises(AssertionError, match="out is float64"):
        float32_against_float64(spec, "C-order")


# --------------------------------------------------------------------------
# coverage and pointers
# --------------------------------------------------------------------------

def op_modules():
    """scratchvae/ops/*.py and scratchvae/losses.py."""
    return [importlib.import_module(f"scratchvae.ops.{m.name}")
            for m in pkgutil.iter_modules(ops.__path__)] + [losses]


def test_every_backward_has_an_entry():
    assert len(op_modules()) >= 7
    missing = unregistered_backwards(op_modules())
    assert not missing, f"no registry entry (scratchvae/gradcheck/) for {missing}"


def test_a_backward_without_an_entry_is_caught(monkeypatch):
    def swish_backward(dy, cache):
        return dy
    swish_backward.__module__ = losses.__name__
    monkeypatch.setattr(losses, "swish_backward", swish_backward, raising=False)
    assert unregistered_backwards(op_modules()) == ["scratchvae.losses.swish_backward"]
    planted = types.ModuleType("scratchvae.ops.planted")
    exec("def gelu_backward(dy, cache):\n    return dy\n"
         "def gelu_forward(x):\n    return x, x\n", planted.__dict__)
    planted.gelu_backward.__module__ = planted.__name__
    assert unregistered_backwards([planted]) == ["scratchvae.ops.planted.gelu_backward"]


def test_register_refuses_a_second_entry_or_check_of_one_name():
    relu = REGISTRY["relu"]
    with pytest.raises(ValueError, match="an op spec named 'relu' exists already"):
        register(relu)
    twin = OpSpec("relu twin", relu.forward, relu.backward, checks=relu.checks)
    with pytest.raises(ValueError, match="a check named 'ReLU' exists already"):
        register(twin)
    assert "relu twin" not in REGISTRY


@pytest.mark.parametrize("spec", REGISTRY.values(), ids=list(REGISTRY))
def test_entry_points_to_what_exists(spec):
    assert callable(spec.forward) and callable(spec.backward)
    assert spec.cases or spec.catalogue(), f"{spec.name}: nothing to check"
    assert set(spec.implementations) <= {"reference", "cpu", "cuda"}
    if spec.cases:      # an op: a CPU kernel exactly when it names kernels and references
        assert ("cpu" in spec.implementations) == bool(spec.kernels) == bool(spec.references)
    assert any(spec in family.SPECS for family in FAMILIES)
    for path in spec.tests:
        assert (ROOT / path).is_file(), f"{spec.name}: no test file {path}"
    for case in spec.cases:
        problem = case.make(np.random.default_rng(0))
        assert isinstance(problem, Problem) and isinstance(case, Case)
        assert set(problem.wrt) - {None} <= set(problem.inputs)


def test_derivations_are_up_to_date():
    committed = (ROOT / "docs" / "derivations.md").read_text()
    assert committed == derivations.render(), (
        "docs/derivations.md is out of date; regenerate it with\n"
        "    python -m scratchvae.gradcheck.derivations > docs/derivations.md")

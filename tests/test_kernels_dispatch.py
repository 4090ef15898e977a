"""The kernels stand below the engine, and one rule dispatches all of them.

- ``kernels/`` imports nothing from ``scratchvae``: checked on the source
  (every import statement, at any depth, and ``importlib``/``__import__``
  calls with a literal name) and in a fresh interpreter (importing every
  kernel module loads no ``scratchvae`` module). The source check is shown
  to catch imports planted in a copy of the package.
- Every public kernel follows :mod:`kernels._dispatch`'s rule: C-contiguous
  float32 NumPy operands run its CPU kernel; ``SCRATCHVAE_KERNELS=reference``
  never does; a view that is not dense runs it only for the kernels that the
  rule lets read strides (``matmul``, ``ascontiguous``).
- The formulas written once for the CPU and the CUDA kernels
  (``register_jitable`` functions) are also plain Python functions, and
  every CUDA kernel compiles to PTX with the real CUDA compiler (NVVM, which
  needs no GPU) where it is installed; the simulator tests run the kernels
  as Python and cannot tell whether Numba's CUDA target accepts them.
"""
import ast
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import expit

import kernels
import kernels.adam as kadam
import kernels.bce as kbce
import kernels.codes as kcodes
import kernels.conv_gemm as kconv
import kernels.gated as kgated
import kernels.gemm as kgemm
import kernels.im2col as kim2col
import kernels.layout as klayout
import kernels.relu as krelu
import kernels.sigmoid as ksigmoid
import kernels.vq as kvq
from kernels._dispatch import ENV_VAR, choose

ROOT = pathlib.Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"


# --------------------------------------------------------------------------
# kernels/ imports nothing from scratchvae
# --------------------------------------------------------------------------

def _is_engine(name):
    return name == "scratchvae" or name.startswith("scratchvae.")


def engine_imports(path):
    """(line, imported name) of every import of ``scratchvae`` in the file at
    ``path``: import statements anywhere (functions included), relative
    imports that climb out of the package, and ``importlib.import_module`` /
    ``__import__`` calls with a literal module name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _is_engine(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:                        # from .. import x: above kernels/
                found.append((node.lineno, "." * node.level + (node.module or "")))
            elif node.level == 0 and _is_engine(node.module or ""):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            arg = node.args[0]
            if (name in ("import_module", "__import__") and isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str) and _is_engine(arg.value)):
                found.append((node.lineno, arg.value))
    return found


def package_engine_imports(package_dir):
    """{file name: engine_imports} for the files of a package that have any."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        hits = engine_imports(path)
        if hits:
            found[str(path.relative_to(package_dir))] = hits
    return found


def test_kernels_import_nothing_from_scratchvae():
    assert len(list(KERNELS.glob("*.py"))) >= 10          # the package was found
    assert package_engine_imports(KERNELS) == {}


def test_the_import_check_catches_planted_imports(tmp_path):
    copy = tmp_path / "kernels"
    shutil.copytree(KERNELS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert package_engine_imports(copy) == {}
    (copy / "planted.py").write_text(
        "import importlib\n"
        "import numpy as np\n"
        "from scratchvae.backend import get_xp\n"
        "\n"
        "\n"
        "def f():\n"
        "    import scratchvae.ops as ops\n"
        "    from .. import scratchvae\n"
        "    return importlib.import_module('scratchvae.losses')\n")
    with (copy / "relu.py").open("a") as f:
        f.write("\n\ndef g():\n    from scratchvae import backend\n")
    assert package_engine_imports(copy) == {
        "planted.py": [(3, "scratchvae.backend"), (7, "scratchvae.ops"), (8, ".."),
                       (9, "scratchvae.losses")],
        "relu.py": [(len((KERNELS / "relu.py").read_text().splitlines()) + 4, "scratchvae")],
    }


def test_importing_every_kernel_module_loads_no_engine_module():
    modules = sorted(p.stem for p in KERNELS.glob("*.py") if p.stem != "__init__")
    code = (f"import sys, kernels\n"
            f"for m in {modules!r}: __import__('kernels.' + m)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] == 'scratchvae'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


# --------------------------------------------------------------------------
# one dispatch rule
# --------------------------------------------------------------------------

def _f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _not_dense(a):
    """A view of a doubled copy of ``a``, every other element of the last axis."""
    return np.repeat(a, 2, axis=-1)[..., ::2]


def _case(name):
    """(call, its CPU kernels as (module, attribute, ...)) for public kernel ``name``;
    ``call(view)`` runs it on operands passed through ``view``."""
    rng = np.random.default_rng(0)
    K, S, P = (3, 3), (2, 2), (1, 1)
    x = _f32(rng, 2, 6, 6, 4)                             # (N, H, W, C) channels-last
    cols = kim2col.im2col_reference(x, K, S, P)          # (2*3*3, 36)
    cases = {
        "adam_step": (lambda v: kernels.adam_step(*[v(abs(_f32(rng, 5, 8))) for _ in range(4)],
                                                  1, 1e-3, 0.9, 0.999, 1e-8),
                      (kadam, "_adam_cpu")),
        "sgd_step": (lambda v: kernels.sgd_step(*[v(_f32(rng, 5, 8)) for _ in range(3)],
                                                1e-2, 0.9),
                     (kadam, "_sgd_cpu")),
        "bce_with_logits": (lambda v: kernels.bce_with_logits(v(_f32(rng, 5, 8)),
                                                              v(_f32(rng, 5, 8))),
                            (kbce, "_bce_cpu")),
        "bce_with_logits_forward": (lambda v: kernels.bce_with_logits_forward(
                                        v(_f32(rng, 5, 8)), v(_f32(rng, 5, 8))),
                                    (kbce, "_bce_cpu")),
        "relu_forward": (lambda v: kernels.relu_forward(v(_f32(rng, 5, 8))),
                         (krelu, "_relu_forward_cpu")),
        "add_bias": (lambda v: kernels.add_bias(v(_f32(rng, 5, 8)), v(_f32(rng, 8)), True),
                     (krelu, "_add_bias_cpu")),
        "relu_backward": (lambda v: kernels.relu_backward(v(_f32(rng, 5, 8)),
                                                          v(_f32(rng, 5, 8))),
                          (krelu, "_relu_backward_cpu")),
        "gated_forward": (lambda v: kernels.gated_forward(v(_f32(rng, 3, 4, 5, 6))),
                          (kgated, "_gated_forward_cpu")),
        "gated_backward": (lambda v: kernels.gated_backward(v(_f32(rng, 3, 2, 5, 6)),
                                                            v(_f32(rng, 3, 4, 5, 6))),
                           (kgated, "_gated_backward_cpu")),
        "nearest_code": (lambda v: kernels.nearest_code(v(_f32(rng, 9, 4)), v(_f32(rng, 3, 4))),
                         (kvq, "_nearest_cpu")),
        "matmul": (lambda v: kernels.matmul(v(_f32(rng, 80, 80)), v(_f32(rng, 80, 80))),
                   (kgemm, "_gemm_blocks")),
        "ascontiguous": (lambda v: klayout.ascontiguous(v(_f32(rng, 2, 3, 4, 5).transpose(
                             0, 2, 3, 1))),
                         (klayout, "_transpose_cpu", "_copy_cpu")),
        "segment_sum": (lambda v: kcodes.segment_sum(rng.integers(0, 3, 9), v(_f32(rng, 9, 4)),
                                                     3),
                        (kcodes, "_segment_sum_cpu")),
        "im2col": (lambda v: kim2col.im2col(v(x), K, S, P), (kim2col, "_im2col_cpu")),
        "col2im": (lambda v: kim2col.col2im(v(cols), x.shape, K, S, P),
                   (kim2col, "_col2im_cpu")),
        "conv_forward_product": (lambda v: kconv.conv_forward_product(
                                     v(x), v(_f32(rng, 5, 36)), K, S, P),
                                 (kconv, "_columns_cpu", "_class_columns_cpu")),
        "conv_weight_product": (lambda v: kconv.conv_weight_product(
                                    v(x), v(_f32(rng, 18, 5)), K, S, P),
                                (kconv, "_columns_cpu", "_class_columns_cpu")),
        "conv_forward_and_weight_products": (lambda v: kconv.conv_forward_and_weight_products(
                                                 v(x), v(_f32(rng, 5, 36)),
                                                 v(_f32(rng, 18, 5)), K, S, P),
                                             (kconv, "_columns_cpu", "_class_columns_cpu")),
        "conv_transposed_product": (lambda v: kconv.conv_transposed_product(
                                        v(_f32(rng, 18, 5)), v(_f32(rng, 5, 36)), x.shape,
                                        K, S, P),
                                    (kconv, "_transposed_cpu", "_class_transposed_cpu")),
    }
    return cases[name]


PUBLIC = ["adam_step", "sgd_step", "bce_with_logits", "bce_with_logits_forward",
          "relu_forward", "relu_backward", "add_bias", "nearest_code", "segment_sum", "matmul",
          "ascontiguous",
          "gated_forward", "gated_backward",
          "im2col", "col2im", "conv_forward_product", "conv_weight_product",
          "conv_forward_and_weight_products", "conv_transposed_product"]
#: the kernels the rule lets read any strides (kernels._dispatch)
READS_STRIDES = {"matmul", "ascontiguous"}


@pytest.fixture(autouse=True)
def _auto_dispatch(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def _spied(monkeypatch, target):
    """Calls of the CPU kernel(s) ``target`` = (module, attribute, ...)."""
    module, *attributes = target
    calls = []

    def spied(attribute):
        real = getattr(module, attribute)

        def spy(*args):
            calls.append(attribute)
            return real(*args)
        return spy
    for attribute in attributes:
        monkeypatch.setattr(module, attribute, spied(attribute))
    return calls


def test_every_kernel_is_listed():
    listed = {n for n in kernels.__all__ if not n.endswith("_reference")}
    assert listed <= set(PUBLIC)


def check_follows_the_rule(name, monkeypatch):
    """Assert that public kernel ``name`` runs its CPU kernel exactly when the
    rule says so, on plain operands, on views that are not dense and under
    ``SCRATCHVAE_KERNELS=reference``."""
    call, target = _case(name)
    calls = _spied(monkeypatch, target)
    # matmul's compiled loop on one thread too (its NumPy path: tests/test_kernels_gemm.py)
    monkeypatch.setattr(kgemm, "_numpy_makes_the_call", lambda a, b: False)

    def same(a):
        return a

    call(same)                                        # C-contiguous float32 NumPy
    assert calls, f"{name}: the CPU kernel should run"
    calls.clear()
    call(_not_dense)                                  # a view that is not dense
    assert bool(calls) == (name in READS_STRIDES), f"{name}: on a view that is not dense"
    calls.clear()
    monkeypatch.setenv(ENV_VAR, "reference")
    call(same)
    assert calls == [], f"{name}: under {ENV_VAR}=reference"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_kernel_follows_the_one_rule(name, monkeypatch):
    check_follows_the_rule(name, monkeypatch)


@pytest.mark.parametrize("name", ["bce_with_logits_forward", "matmul"])
def test_a_kernel_that_ignored_the_rule_would_be_caught(name, monkeypatch):
    """A kernel whose dispatch always answers "cpu" fails the check."""
    module = _case(name)[1][0]
    monkeypatch.setattr(module, "choose", lambda *arrays, strided=False: "cpu")
    with pytest.raises(AssertionError, match=name):
        check_follows_the_rule(name, monkeypatch)


def test_the_rule_reads_strides_only_when_asked():
    a = np.zeros((4, 6), np.float32)
    assert choose(a[:, ::2]) == "reference"
    assert choose(a[:, ::2], strided=True) == "cpu"
    assert choose(a.T, a, strided=True) == "cpu"
    assert choose(a, a.astype(np.float64), strided=True) == "reference"   # still one dtype


# --------------------------------------------------------------------------
# formulas written once
# --------------------------------------------------------------------------

def test_shared_formulas_are_plain_python_functions_too():
    assert kim2col.conv_output_size(28, 4, 2, 1) == 14
    assert kvq.squared_distance(2.0, 1.5, 3.0) == 2.0
    zz, dot, ee = np.array([[2.0]]), np.array([[1.5, 0.5]]), np.array([[3.0, 1.0]])
    np.testing.assert_array_equal(kvq.squared_distance(zz, dot, ee), [[2.0, 2.0]])
    assert kbce._linear_terms(-2.0, 0.5) == 1.0 and kbce._linear_terms(2.0, 0.5) == 1.0
    assert krelu._relu(-1.0) == 0 and krelu._relu_grad(3.0, 0.5) == 3.0
    p, m, v = kadam._adam_element(1.0, 0.5, 0.0, 0.0, 0.1, 0.999, 0.001, 0.01, 1.0, 1e-8,
                                  0.0, 1e-38, 0.0)
    assert (m, v) == pytest.approx((0.05, 0.00025)) and p < 1.0


def test_one_stable_sigmoid():
    """The array form: no overflow, the input's dtype, the value to float32
    rounding; the scalar form of the kernels: the array form's bits."""
    x = np.array([-1e4, -30.0, -1.0, -0.0, 0.0, 1.0, 30.0, 1e4], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = ksigmoid.sigmoid(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expit(x.astype(np.float64)), rtol=1e-6, atol=0)
    x64 = x.astype(np.float64)
    e = np.exp(-np.abs(x64))
    scalar = [ksigmoid.sigmoid_of_exp(a, b) for a, b in zip(x64, e)]
    np.testing.assert_array_equal(scalar, ksigmoid.sigmoid(x64))


PTX_SCRIPT = """
import types
import numba.cuda.dispatcher as dispatcher
from numba.cuda.cudadrv import nvvm
try:
    nvvm.NVVM()
except Exception as e:
    print("NO NVVM", e)
    raise SystemExit(0)
# no GPU: the device functions are compiled for a given compute capability
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(8, 0))
import numpy as np
from numba import cuda, types as T
import kernels.adam as A, kernels.bce as B, kernels.im2col as I, kernels.relu as R, kernels.vq as V
import kernels.gated as G
import kernels.counter_rng as C

f32, f64, i64, b1 = T.float32, T.float64, T.int64, T.boolean
v1, m2, t4 = f32[::1], f32[:, ::1], f32[:, :, :, ::1]
(adam, sgd), (relu_f, relu_b), (im2col, col2im) = (A._cuda_kernels(), R._cuda_kernel(),
                                                   I._cuda_kernels())
jobs = {"adam": (adam, (v1,) * 4 + (f32,) * 9),
        "sgd": (sgd, (v1,) * 3 + (f32,) * 4 + (b1,) * 3 + (f32,) * 2),
        "bce": (B._cuda_kernel(), (m2, m2, f64, v1, m2, b1)),
        "relu_forward": (relu_f, (v1, v1)), "relu_backward": (relu_b, (v1, v1, v1)),
        "nearest_code": (V._cuda_kernel(), (m2, f64[:, ::1], f64[::1], i64[::1], f64[::1])),
        "im2col": (im2col, (t4, m2) + (i64,) * 6 + (f32,)),
        "col2im": (col2im, (m2, t4) + (i64,) * 6 + (f32,)),
        "gated_forward": (G._cuda_kernels()[0], (f32[:, :, ::1], m2, f32)),
        "gated_backward": (G._cuda_kernels()[1], (m2, f32[:, :, ::1], f32[:, :, ::1], f32)),
        "adam_advance": (A._cuda_device_scalar_kernels()[0], (i64[::1], f64[::1], f64, f64, v1)),
        "adam_device": (A._cuda_device_scalar_kernels()[1], (v1,) * 5 + (f32,) * 7),
        "counter_rng": (C._cuda_kernel(), (v1, T.uint64, i64[::1], b1))}
for name, (kernel, signature) in jobs.items():
    cuda.compile_ptx(kernel.py_func, signature, cc=(8, 0))
    print("compiled", name)

def allocating(a):                  # what the CUDA target refuses: an allocation
    a[0] = np.empty(3)[0]
try:
    cuda.compile_ptx(allocating, (v1,), cc=(8, 0))
    print("allocating compiled")
except Exception:
    print("allocating refused")
"""


def test_every_cuda_kernel_compiles_to_ptx():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, "-c", PTX_SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if proc.stdout.startswith("NO NVVM"):
        pytest.skip("libNVVM (the CUDA toolkit's compiler) is not installed")
    compiled = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("compiled")]
    assert compiled == ["adam", "sgd", "bce", "relu_forward", "relu_backward", "nearest_code",
                        "im2col", "col2im", "gated_forward", "gated_backward", "adam_advance",
                        "adam_device", "counter_rng"]
    assert "allocating refused" in proc.stdout       # the check can fail


def test_numpy_has_the_row_stack_alias_numba_cuda_registers():
    """numba-cuda's typing registers np.row_stack, which NumPy 2.5 removed: the kernels
    package restores the alias (to np.vstack) so that CUDA kernels compile."""
    import kernels  # noqa: F401  (the alias is made on import)

    a, b = np.arange(3.0), np.arange(3.0, 6.0)
    np.testing.assert_array_equal(np.row_stack((a, b)), np.vstack((a, b)))


def test_low_occupancy_warnings_of_the_grid_stride_kernels_are_silenced():
    """numba-cuda warns at every launch of fewer than 128 blocks (in bold ANSI); the
    kernels size their grids to the work, so importing them filters that warning and
    no other. A fresh interpreter: pytest replaces the warning filters of each test."""
    import subprocess
    import sys

    script = (
        "import warnings, kernels\n"
        "from numba.core.errors import NumbaPerformanceWarning as W\n"
        "warnings.warn(W('Grid size 2 will likely result in GPU under-utilization due to low "
        "occupancy.'))\n"
        "warnings.warn(W('another performance warning'))\n")
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "another performance warning" in proc.stderr
    assert "Grid size" not in proc.stderr

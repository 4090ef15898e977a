"""The BLAS the products call (kernels/blas.py): each choice found, its products right
to rounding, the same results from NumPy's and SciPy's OpenBLAS, clear errors.

Each choice runs in its own process: the choice is made once per process.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = """
import json, sys
import numpy as np
from kernels.blas import blas, describe
from kernels.gemm import matmul
from kernels.conv_gemm import conv_forward_product
from threadpoolctl import threadpool_info

rng = np.random.default_rng(7)
out = {"name": blas().name, "describe": describe(),
       "integer": str(next(iter(blas().gemm.values()))[1].dtype),
       "threads": sorted({l["num_threads"] for l in threadpool_info() if l["user_api"] == "blas"}),
       "products": []}
for dtype in (np.float32, np.float64):
    for m, k, n in ((128, 784, 400), (20, 784, 200), (200, 20, 784), (37, 1000, 53)):
        a = rng.standard_normal((m, k)).astype(dtype)
        b = rng.standard_normal((n, k)).astype(dtype).T          # a transposed view
        c = matmul(a, b)
        exact = a.astype(np.float64) @ b.astype(np.float64)
        scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
        out["products"].append([str(np.dtype(dtype)), float(np.max(np.abs(c - exact) / scale)),
                                c.ravel()[:64].tolist()])
x = rng.standard_normal((5, 14, 14, 8)).astype(np.float32)
w = rng.standard_normal((16, 4 * 4 * 8)).astype(np.float32)
y = conv_forward_product(x, w, (4, 4), (2, 2), (1, 1))
out["conv"] = y.ravel()[:64].tolist()
print(json.dumps(out))
"""


def _probe(choice=None, **extra_env):
    env = {k: v for k, v in os.environ.items() if k != "SCRATCHVAE_BLAS"}
    if choice is not None:
        env["SCRATCHVAE_BLAS"] = choice
    env.update(extra_env)
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    return proc


def _result(choice=None):
    proc = _probe(choice)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _numpy_has_openblas():
    from threadpoolctl import threadpool_info
    home = os.path.dirname(np.__file__)
    return any(i.get("internal_api") == "openblas" and i.get("filepath", "").startswith(home)
               for i in threadpool_info())


def _mkl_installed():
    from kernels.blas import mkl_library
    return mkl_library() is not None


@pytest.mark.parametrize("choice", [
    "numpy", "scipy",
    pytest.param("mkl", marks=pytest.mark.skipif(not _mkl_installed(),
                                                 reason="the mkl extra is not installed"))])
def test_each_blas_computes_the_products_to_rounding_on_one_thread(choice):
    if choice == "numpy" and not _numpy_has_openblas():
        pytest.skip("NumPy here is not built on OpenBLAS")
    r = _result(choice)
    assert r["name"] == choice
    assert r["threads"] == [1]                      # every BLAS library on one thread
    for dtype, error, _ in r["products"]:           # relative to sum |a_ik b_kj|
        assert error < (1e-6 if dtype == "float32" else 1e-14), (choice, dtype, error)


def test_the_default_is_numpys_openblas_with_its_64_bit_integers():
    if not _numpy_has_openblas():
        pytest.skip("NumPy here is not built on OpenBLAS")
    r = _result()
    assert r["name"] == "numpy" and "OpenBLAS" in r["describe"] and "NumPy" in r["describe"]
    from threadpoolctl import threadpool_info
    numpys = [i for i in threadpool_info()
              if i.get("filepath", "").startswith(os.path.dirname(np.__file__))]
    ilp64 = any("64_" in os.path.basename(i["filepath"]) for i in numpys)
    assert r["integer"] == ("int64" if ilp64 else "int32")


def test_numpys_and_scipys_openblas_give_the_same_products():
    """Both run OpenBLAS's kernels for this CPU: what changes is the speed, and the
    products agree to float rounding (bit for bit where their kernels are the same)."""
    if not _numpy_has_openblas():
        pytest.skip("NumPy here is not built on OpenBLAS")
    ours, theirs = _result("numpy"), _result("scipy")
    for (dtype, _, a), (_, _, b) in zip(ours["products"], theirs["products"]):
        rtol = 1e-5 if dtype == "float32" else 1e-13
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * 10)
    np.testing.assert_allclose(ours["conv"], theirs["conv"], rtol=1e-5, atol=1e-4)


def test_an_unknown_blas_is_refused_naming_the_choices():
    proc = _probe("openblas-please")
    assert proc.returncode != 0
    assert "SCRATCHVAE_BLAS='openblas-please': expected one of numpy, scipy, mkl" in proc.stderr


def test_mkl_asked_for_but_missing_says_how_to_install_it(tmp_path, monkeypatch):
    import kernels.blas as kb
    monkeypatch.setattr(sys, "prefix", str(tmp_path))     # no lib/libmkl_rt.so* there
    with pytest.raises(kb.BlasNotFound, match=r"pip install -e \.\[mkl\]"):
        kb._mkl()


def test_the_training_header_names_threads_and_blas(tmp_path):
    env = dict(os.environ, SCRATCHVAE_BLAS="scipy", NUMBA_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "scratchvae", "train", "--model", "mlp-vae",
                           "--sample", "--epochs", "1", "--train-limit", "256",
                           "--test-limit", "128", "--no-progress", "--out",
                           str(tmp_path / "run")], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert "device cpu (1 thread, BLAS OpenBLAS" in proc.stdout
    assert "(SciPy's))" in proc.stdout


def test_train_with_an_unknown_blas_exits_1_and_writes_nothing(tmp_path):
    env = dict(os.environ, SCRATCHVAE_BLAS="bogus")
    proc = subprocess.run([sys.executable, "-m", "scratchvae", "train", "--model", "mlp-vae",
                           "--sample", "--epochs", "1", "--train-limit", "256",
                           "--test-limit", "128", "--no-progress", "--out",
                           str(tmp_path / "run")], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert "error: SCRATCHVAE_BLAS='bogus': expected one of numpy, scipy, mkl" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()

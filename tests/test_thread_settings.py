"""What scratchvae does to the process's thread pools (see kernels/gemm.py):
importing it changes no environment variable; the first matrix product on
the CPU kernel sets the BLAS libraries to one thread, since scratchvae's own
(Numba) threads then call BLAS, each on its own block."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIABLES = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS")


def env_probe(module):
    return (f"import json, os, {module}; "
            f"print(json.dumps({{k: os.environ.get(k) for k in {VARIABLES!r}}}))")


BLAS_PROBE = """
import json
import numpy as np
import scipy.linalg.cython_blas            # SciPy's BLAS loaded before anything runs
from threadpoolctl import threadpool_info
import kernels

def blas_threads():
    return sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})

before = blas_threads()
kernels.matmul(np.ones((8, 8), np.float32), np.ones((8, 8), np.float32))   # small: plain a @ b
small = blas_threads()
a = np.ones((256, 256), np.float32)
assert np.array_equal(kernels.matmul(a, a), a @ a)
print(json.dumps({"before": before, "small": small, "after": blas_threads()}))
"""


def _run(code, **env_vars):
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES + ("SCRATCHVAE_KERNELS",)}
    env.update(env_vars)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["scratchvae", "kernels"])
def test_importing_changes_no_environment_variable(module):
    assert _run(env_probe(module)) == {k: None for k in VARIABLES}


def test_the_users_settings_are_kept():
    chosen = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4",
              "OPENBLAS_NUM_THREADS": "2"}
    assert _run(env_probe("scratchvae"), **chosen) == chosen


def test_the_first_kernel_product_sets_blas_to_one_thread():
    got = _run(BLAS_PROBE, OPENBLAS_NUM_THREADS="2")
    assert got["before"] == [2] and got["small"] == [2]   # untouched until the kernel runs
    assert got["after"] == [1]

"""What importing scratchvae does to the thread pools' settings (see
kernels/__init__.py): Numba's OpenMP threads wait passively unless the user
chose otherwise; OpenBLAS's own spin is left alone."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = ("import json, os, {module}; "
         "print(json.dumps({{k: os.environ.get(k) for k in "
         "('OMP_WAIT_POLICY', 'OPENBLAS_THREAD_TIMEOUT')}}))")


def _env_after_import(module, **env_vars):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    env.update(env_vars)
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], cwd=ROOT,
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("module", ["scratchvae", "kernels"])
def test_omp_waits_passively_and_openblas_is_left_alone(module):
    assert _env_after_import(module) == {"OMP_WAIT_POLICY": "PASSIVE",
                                         "OPENBLAS_THREAD_TIMEOUT": None}


def test_the_users_choice_is_kept():
    got = _env_after_import("scratchvae", OMP_WAIT_POLICY="ACTIVE", OPENBLAS_THREAD_TIMEOUT="4")
    assert got == {"OMP_WAIT_POLICY": "ACTIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}

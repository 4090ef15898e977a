"""Run a script with Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1).

The variable must be set before Numba is imported, so the script runs in a
fresh interpreter; it must print "CUDASIM OK" when every check passed.
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_under_cudasim(script, path=()):
    """``path``: directories put first on the script's sys.path (e.g. a stand-in package)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join([*map(str, path), str(ROOT),
                                           os.environ.get("PYTHONPATH", "")]))
    env.pop("SCRATCHVAE_KERNELS", None)  # the script must reach the CUDA kernels
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CUDASIM OK" in proc.stdout
    return proc.stdout

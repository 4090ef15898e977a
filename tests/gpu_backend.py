"""The one switch of the GPU tests: real CuPy on a CUDA device, or the stand-in.

:func:`backend` returns ``"cupy"`` when ``import cupy`` works and CuPy sees
at least one CUDA device, else ``"stand-in"`` (tests/fake_cupy, a NumPy-based
stand-in for CuPy, under Numba's CUDA simulator). The environment variable
``SCRATCHVAE_GPU_TESTS`` overrides the choice: ``stand-in`` forces the
stand-in, ``cupy`` demands real CuPy (an error, not a skip, where it does not
work), ``auto`` or unset chooses as above.

:func:`run_on_gpu` runs a check script in a fresh interpreter on the chosen
backend: on the stand-in with ``NUMBA_ENABLE_CUDASIM=1`` (read when Numba is
imported, hence the subprocess) and tests/fake_cupy first on ``sys.path``;
on real CuPy with neither. The script prints ``GPU OK`` when every check
passed; inside it, :func:`check_child` confirms it got the backend it was
promised and :func:`on_real_cupy` tells which one that is.
"""
import functools
import os
import subprocess
import sys
from pathlib import Path

ENV_VAR = "SCRATCHVAE_GPU_TESTS"
CHOICES = ("auto", "stand-in", "cupy")
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FAKE_CUPY = TESTS / "fake_cupy"
#: what a check script prints last when every check passed
OK = "GPU OK"


@functools.lru_cache(maxsize=None)
def _probe():
    """``(cupy module, None)`` when real CuPy sees a CUDA device, else ``(None, why)``."""
    try:
        import cupy

        if "fake_cupy" in str(getattr(cupy, "__file__", "")):
            return None, "`import cupy` finds the stand-in (tests/fake_cupy is on sys.path)"
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:   # ImportError, CUDARuntimeError (no driver), ...
        return None, f"{type(e).__name__}: {e}"
    if count < 1:
        return None, "CuPy imports but sees no CUDA device"
    return cupy, None


def requested():
    """The value of ``SCRATCHVAE_GPU_TESTS`` (``"auto"`` when unset); a
    ``ValueError`` names the accepted values for anything else."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV_VAR}: expected one of {', '.join(CHOICES)} (or unset), "
                         f"got {value!r}")
    return value


def backend():
    """``"cupy"`` or ``"stand-in"``, by the module docstring's rule."""
    value = requested()
    if value == "stand-in":
        return "stand-in"
    cupy, why = _probe()
    if cupy is None and value == "cupy":
        raise RuntimeError(f"{ENV_VAR}=cupy: the GPU tests need real CuPy and a CUDA "
                           f"device, but {why}")
    return "cupy" if cupy is not None else "stand-in"


def on_real_cupy():
    """True when the GPU tests run on real CuPy (in the test process or a script)."""
    return backend() == "cupy"


def describe():
    """One line for the test report's header: which backend, and on what."""
    try:
        choice = backend()
    except (ValueError, RuntimeError) as e:
        return f"GPU tests: cannot run ({e})"
    if choice == "stand-in":
        return "GPU tests: the NumPy stand-in under Numba's CUDA simulator"
    cupy, _ = _probe()
    try:
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception as e:   # the header must not break the run
        name = f"device 0 ({type(e).__name__})"
    return f"GPU tests: real CuPy {cupy.__version__} on {name}"


def run_on_gpu(script, path=(), timeout=600):
    """Run ``script`` with ``python -c`` on :func:`backend`; return its stdout.

    ``path``: directories put first on the script's ``sys.path`` (after the
    stand-in, on the stand-in); tests/ and the repository root follow. The
    script must exit 0 and print ``GPU OK``.
    """
    choice = backend()
    first = [str(p) for p in path]
    env = dict(os.environ, **{ENV_VAR: choice})
    if choice == "stand-in":
        first.insert(0, str(FAKE_CUPY))
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    else:
        env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [*first, str(TESTS), str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("SCRATCHVAE_KERNELS", None)  # the script must reach the CUDA kernels
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert OK in proc.stdout, proc.stdout + proc.stderr
    return proc.stdout


def check_child():
    """In a script run by :func:`run_on_gpu`: assert that ``cupy`` and
    ``numba.cuda`` are what the backend promises; return the ``cupy`` module."""
    import cupy
    from numba import config

    fake = "fake_cupy" in str(getattr(cupy, "__file__", ""))
    if on_real_cupy():
        assert not fake and not config.ENABLE_CUDASIM, (cupy.__file__, config.ENABLE_CUDASIM)
    else:
        assert fake and config.ENABLE_CUDASIM, (cupy.__file__, config.ENABLE_CUDASIM)
    return cupy

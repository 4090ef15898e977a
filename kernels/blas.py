"""Which BLAS library the engine's matrix products call, chosen once per process.

The CPU kernels of kernels/gemm.py and kernels/conv_gemm.py call a Fortran
``sgemm``/``dgemm`` through its address. Three libraries can provide it:

- ``numpy``: the OpenBLAS that NumPy's wheels bundle (``scipy-openblas64``: 64-bit
  integers, symbols ``scipy_sgemm_64_``), found through ``threadpoolctl`` among the
  libraries NumPy loaded. The default where it is found.
- ``scipy``: SciPy's bundled OpenBLAS, through ``scipy.linalg.cython_blas`` (32-bit
  integers; the BLAS that Numba calls for ``np.dot``). The default otherwise.
- ``mkl``: Intel's MKL runtime, ``libmkl_rt`` from the ``mkl`` package (the extra
  ``pip install -e .[mkl]``), on its sequential threading layer.

``SCRATCHVAE_BLAS=numpy|scipy|mkl`` chooses; the training header prints the
choice (:func:`describe`). Why NumPy's first: it is never slower than SciPy's
on the engine's products and faster on some, with the same results bit for bit;
MKL is no faster (benchmarks/RESULTS.md, 2026-12-04). MKL's results differ from
OpenBLAS's by rounding only (tests/test_blas.py).

Every library is set to one thread (``threadpoolctl``) once it is chosen:
Numba's threads call it, one block each (kernels/gemm.py).
"""
import collections
import ctypes
import functools
import glob
import os
import re
import sys

import numpy as np

CHOICES = ("numpy", "scipy", "mkl")
ENV = "SCRATCHVAE_BLAS"

#: a chosen library: ``name`` (one of CHOICES), ``description`` (for headers),
#: ``gemm`` {dtype: (address of its Fortran gemm, a zero of its integer type)},
#: the form kernels.gemm's compiled loops take (the zero's type picks 32- or
#: 64-bit integer arguments when they are compiled)
Blas = collections.namedtuple("Blas", "name description gemm")


class BlasNotFound(RuntimeError):
    """The BLAS asked for through SCRATCHVAE_BLAS is not in this environment."""


def _address(lib, symbol):
    try:
        return ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value
    except AttributeError:
        return None


def _numpy_openblas():
    """NumPy's own BLAS, where it is an OpenBLAS whose gemm symbols can be found."""
    from threadpoolctl import threadpool_info

    home = os.path.dirname(np.__file__)
    for info in threadpool_info():
        path = info.get("filepath", "")
        if info.get("internal_api") != "openblas" or not path.startswith(home):
            continue      # numpy.libs/ sits beside numpy/: same prefix
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_", ""):
            for suffix, zero in (("_64_", np.int64(0)), ("_", np.int32(0))):
                s, d = (_address(lib, f"{prefix}{t}gemm{suffix}") for t in "sd")
                if s and d and (suffix == "_64_" or not _ilp64_without_suffix()):
                    return Blas("numpy", f"OpenBLAS {info.get('version')} (NumPy's)",
                                {np.dtype(np.float32): (s, zero),
                                 np.dtype(np.float64): (d, zero)})
    return None


def _ilp64_without_suffix():
    """True when NumPy's BLAS uses 64-bit integers (its build configuration says
    so): its unsuffixed symbols then take 64-bit integers, which are not used."""
    try:
        config = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    except TypeError:       # NumPy before 1.26 has no mode="dicts": assume 32-bit
        return False
    return "USE64BITINT" in str(config.get("openblas configuration", ""))


def _scipy_openblas():
    from numba.extending import get_cython_function_address
    from threadpoolctl import threadpool_info

    gemm = {np.dtype(t): (get_cython_function_address("scipy.linalg.cython_blas", f"{c}gemm"),
                          np.int32(0)) for t, c in ((np.float32, "s"), (np.float64, "d"))}
    import scipy
    home = os.path.dirname(scipy.__file__)          # scipy.libs/ sits beside scipy/
    versions = [i.get("version") for i in threadpool_info()
                if i.get("filepath", "").startswith(home) and i.get("user_api") == "blas"]
    return Blas("scipy", f"OpenBLAS {versions[0] if versions else '?'} (SciPy's)", gemm)


def mkl_library():
    """The path of the MKL runtime the ``mkl`` extra installs (libmkl_rt under this
    environment's lib/), or None."""
    paths = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
    return paths[0] if paths else None


def _mkl():
    path = mkl_library()
    if path is None:
        raise BlasNotFound(f"{ENV}=mkl: no libmkl_rt.so under {sys.prefix}/lib; install "
                           f"Intel's MKL runtime with `pip install -e .[mkl]` (the `mkl` "
                           f"package), or choose one of {', '.join(CHOICES[:2])}")
    lib = ctypes.CDLL(path)
    lib.MKL_Set_Threading_Layer(ctypes.c_int(1))   # MKL_THREADING_SEQUENTIAL
    version = ctypes.create_string_buffer(256)
    lib.MKL_Get_Version_String(version, ctypes.c_int(256))
    zero = np.int32(0)                              # libmkl_rt's default: LP64
    found = re.search(r"Version (\S+)", version.value.decode(errors="replace"))
    return Blas("mkl", f"MKL {found.group(1) if found else '?'} (libmkl_rt, sequential)",
                {np.dtype(np.float32): (_address(lib, "sgemm_"), zero),
                 np.dtype(np.float64): (_address(lib, "dgemm_"), zero)})


@functools.lru_cache(maxsize=None)
def blas():
    """The :data:`Blas` of this process, as ``SCRATCHVAE_BLAS`` asks (default:
    NumPy's OpenBLAS, else SciPy's); every BLAS library is then set to one thread."""
    from threadpoolctl import threadpool_limits

    asked = os.environ.get(ENV, "").strip().lower()
    if asked and asked not in CHOICES:
        raise BlasNotFound(f"{ENV}={asked!r}: expected one of {', '.join(CHOICES)}")
    if asked == "mkl":
        chosen = _mkl()
    elif asked == "scipy":
        chosen = _scipy_openblas()
    else:
        chosen = _numpy_openblas()
        if chosen is None:
            if asked == "numpy":
                raise BlasNotFound(f"{ENV}=numpy: NumPy's BLAS here is not an OpenBLAS "
                                   f"whose gemm this engine can call; choose scipy")
            chosen = _scipy_openblas()
    threadpool_limits(limits=1, user_api="blas")   # every loaded BLAS, the chosen one too
    return chosen


def describe():
    """One line for a run's header: the BLAS of the products, e.g. "OpenBLAS 0.3.31
    (NumPy's)"."""
    return blas().description

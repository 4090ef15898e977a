"""A test-only stand-in for CuPy, built on NumPy. It is NOT CuPy.

``import cupy`` finds this package only when a test puts ``tests/fake_cupy``
first on ``sys.path``, in a subprocess (tests/test_gpu_path.py), together with
Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``). It lets the engine's GPU
path -- ``get_xp`` returning ``cupy``, ``to_device``/``to_numpy``, the kernel
dispatch choosing ``"cuda"``, the CUDA kernels, device-resident optimiser and
codebook state -- run on a machine without a GPU, so that the mistakes that
only a device array reveals show up in a test.

What it mimics, because that is where engine bugs hide:

- ``type(a).__module__ == "cupy"``: the engine recognises the arrays as CuPy
  (``kernels._arrays.is_cupy``, which ``scratchvae.backend`` re-exports).
- ``ndarray`` is *not* a ``numpy.ndarray`` subclass: ``np.asarray(a)``,
  ``np.array(a)``, ``np.ascontiguousarray(a)``, ``np.savez(..., a)`` raise
  CuPy's ``TypeError`` ("Implicit conversion to a NumPy array is not
  allowed"); ``a.get()`` / ``cupy.asnumpy(a)`` copy to the host.
- Arithmetic, comparisons and ufuncs (``a + b``, ``np.exp(a)``, ``a @ b``,
  ``a += b``) mixing a device array with a ``numpy.ndarray`` raise
  ``TypeError``, whatever the NumPy array's ndim, 0-d included: CuPy's kernels
  take device arrays and Python/NumPy *scalars* (``numpy.generic``) only. The
  same for the functions of this module, except those that create device
  arrays from host data (``asarray``, ``array``, ``*_like``).
- A NumPy function called on device arrays (``np.concatenate([a, b])``) runs
  the function of the same name of this module when there is one, else raises
  ``TypeError``: CuPy's ``__array_function__`` dispatches to CuPy's functions
  the same way.
- Reductions and integer indexing return 0-d device arrays, not NumPy scalars.
- ``a[basic index] = numpy_array`` (ndim > 0) raises ``ValueError`` as CuPy's
  ``fill`` does; ``a[integer array] = numpy_array`` transfers, as in CuPy.
- ``cupy.asarray(numpy_array)`` copies (a transfer): the device array does not
  alias the host memory.
- Kernel arguments: Numba's CUDA simulator takes the arrays as they are (the
  class is registered as a ``numba.cuda.args.ArgHint`` whose ``to_device``
  hands the simulator this very memory), so a kernel's writes land in the
  array itself, as on a GPU, and a kernel never sees a host copy.
- ``cuda.runtime.getDeviceCount() == 1``; ``cuda.get_current_stream()`` is the
  null stream (``ptr == 0``) unless a ``with cupy.cuda.Stream():`` block made
  another current; such a stream has a fake non-zero ``ptr``.
- ``random.default_rng(seed)``: a generator whose draws are device arrays.
- Device-to-host transfers and allocations are counted (not a CuPy API; for
  tests): :func:`counters` returns ``{"to_host": n, "allocations": n}``,
  :func:`reset_counters` sets both to 0. ``to_host`` counts every read of
  device memory by the host: ``get()``/``asnumpy``, ``float``/``int``/
  ``bool``/``complex`` of an array, ``item()``/``tolist()``, ``repr``/``str``,
  and ``np.asarray`` (``__array__``, refused as in CuPy, counted all the same);
  also ``bincount``, ``nonzero``, ``flatnonzero`` and ``unique``, which in CuPy
  read a value back to size their output (``bincount`` reads max(x)).
  ``allocations`` counts the stand-in arrays created on fresh memory (a view of
  an existing array is not one).
- Stream capture (``Stream.begin_capture()``, ``end_capture()`` -> a
  ``cuda.Graph`` whose ``launch()`` replays it), emulated: while a stream
  captures, every operation runs as usual *and* is recorded on a tape, each
  entry writing into the arrays the capture created (the fixed addresses of a
  CUDA graph); Numba kernel launches (the simulator's) are recorded with their
  grid and arguments, scalars baked in as in a real graph. ``end_capture``
  restores the arrays that existed before the capture to their contents at
  ``begin_capture`` (a real capture executes nothing); ``launch`` replays the
  tape. A transfer to the host, a host-to-device copy or a ``cupy.random``
  draw (cuRAND's host API: the graph would replay the same numbers) during a
  capture raises ``RuntimeError``, as an illegal operation invalidates a real
  capture. ``cuda.MemoryPool``, ``cuda.using_allocator`` exist (no memory).

What it does NOT mimic (a passing test proves nothing about these):

- Only what the engine uses is implemented; each name exists in CuPy 13, but
  the signatures are NumPy's, so an argument CuPy lacks passes here. An
  ``AttributeError`` naming this stand-in may mean "not implemented here":
  check CuPy's API before changing the engine.
- Numerics: everything runs in NumPy on the CPU. cuBLAS, CuPy's reductions and
  NVVM (which may fuse a multiply and an add into an FMA) round differently.
- Memory and time: no device memory (no out-of-memory), no transfers, no
  asynchrony; streams are labels only, so a missing synchronisation or a
  kernel on the wrong stream cannot race here (tests can only check which
  stream a launch names). No performance whatsoever.
- Real Numba launches need ``__cuda_array_interface__`` (this class has none)
  and compile the kernels for the GPU (typing, FMA); the simulator runs them
  as Python.
- The random generator is NumPy's PCG64, not CuPy's cuRAND (XORWOW): other
  numbers, and CuPy's ``Generator`` has fewer methods.
- Out-of-bounds integer indices raise here; CuPy wraps them around. Lists
  are accepted wherever NumPy takes them (CuPy refuses some, e.g. in ufuncs).
  Of the ufunc methods only ``__call__`` and ``reduce`` are supported.
- Of what a real capture refuses, only transfers, host-to-device copies,
  ``synchronize()`` and ``cupy.random`` draws are caught; a replay recomputes
  the recorded NumPy operations (no memory pool, no cuBLAS workspace, no
  capture mode), so a graph that replays here may still fail to capture or
  instantiate on a GPU.
- Multiple devices, ``cupy.cuda.Device`` semantics, pinned memory, dlpack,
  custom kernels (``ElementwiseKernel``, ``RawKernel``), ``cupyx``.
"""
import builtins
import contextlib
import sys
import types
import weakref

import numpy
import numpy.lib.mixins

__version__ = "13.0.0+fake"

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` "
             "to construct a NumPy array explicitly.")


# --------------------------------------------------------------------------
# counters (tests read them) and the capture tape
# --------------------------------------------------------------------------

_COUNTS = {"to_host": 0, "allocations": 0}
#: id -> NumPy array owning memory that a stand-in array has used (weak: freed ones go)
_MEMORY = weakref.WeakValueDictionary()
#: while a stream captures: {"stream", "tape": [thunks], "saved": [(array, copy)]}
_CAPTURE = {}


def counters():
    """``{"to_host": n, "allocations": n}`` since the last :func:`reset_counters`
    (see the module docstring for what each counts)."""
    return dict(_COUNTS)


def reset_counters():
    """Set the transfer and allocation counters to 0."""
    _COUNTS["to_host"] = _COUNTS["allocations"] = 0


def _to_host(what):
    """Count a device-to-host transfer; refuse it during a capture."""
    if _CAPTURE:
        raise RuntimeError(f"fake cupy: {what} (a device-to-host transfer) during stream "
                           f"capture: illegal on a GPU (the capture is invalidated)")
    _COUNTS["to_host"] += 1


def _to_device(what):
    """Refuse a host-to-device copy during a capture."""
    if _CAPTURE:
        raise RuntimeError(f"fake cupy: {what} (a host-to-device copy) during stream "
                           f"capture: illegal on a GPU (the capture is invalidated)")


def _refuse_cublas_in_capture():
    """CuPy's cuBLAS calls (``@``, ``matmul``, ``dot``) refuse a capturing stream."""
    if _CAPTURE:
        raise NotImplementedError("calling cuBLAS API during stream capture is currently "
                                  "unsupported (fake cupy, as CuPy 14)")


def _root(a):
    while isinstance(a.base, numpy.ndarray):
        a = a.base
    return a


def _note_memory(a):
    """Count ``a``'s memory as an allocation unless a stand-in array used it before."""
    root = _root(a)
    if id(root) not in _MEMORY or _MEMORY[id(root)] is not root:
        _MEMORY[id(root)] = root
        _COUNTS["allocations"] += 1


def _write(out, result):
    """Replay: write a recomputed result into the arrays the capture created."""
    if isinstance(out, ndarray):
        if result is not out._a:
            out._a[...] = result._a if isinstance(result, ndarray) else result
    elif isinstance(out, (tuple, list)):
        for o, r in zip(out, result):
            _write(o, r)


def _recorded(compute):
    """``compute()`` as device arrays; during a capture its replay goes on the tape."""
    out = _wrap(compute())
    if _CAPTURE:
        _CAPTURE["tape"].append(lambda: _write(out, compute()))
    return out


def _recorded_in_place(action):
    """An in-place ``action()``; during a capture it goes on the tape as it is."""
    result = action()
    if _CAPTURE:
        _CAPTURE["tape"].append(action)
    return result


# --------------------------------------------------------------------------
# conversions between the stand-in and the NumPy array underneath
# --------------------------------------------------------------------------

def _dev(x):
    """An argument of a device operation -> what NumPy computes with.

    Device arrays give their memory; NumPy arrays (any ndim) are refused with
    CuPy's TypeError; lists and tuples are converted element by element.
    """
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, numpy.ndarray):
        raise TypeError(f"Unsupported type {type(x)} (fake cupy: a NumPy array mixed with "
                        f"device arrays; move it with cupy.asarray or .get() the other)")
    if isinstance(x, (list, tuple)):
        return type(x)(_dev(v) for v in x)
    return x


def _host_ok(x):
    """As :func:`_dev` for functions that create device arrays from host data."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_host_ok(v) for v in x)
    return x


def _index(key):
    """An index: device arrays give their memory; NumPy arrays and lists are
    accepted (CuPy copies them to the device)."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, ndarray):
        return key._a
    return key


def _is_advanced(key):
    keys = key if isinstance(key, tuple) else (key,)
    return builtins.any(isinstance(k, (numpy.ndarray, list)) for k in keys)


def _wrap(r):
    """A NumPy result -> device arrays (0-d for scalars, as CuPy's reductions give)."""
    if isinstance(r, numpy.ndarray):
        return ndarray._of(r)
    if isinstance(r, numpy.generic):
        return ndarray._of(numpy.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(v) for v in r)
    if isinstance(r, list):
        return [_wrap(v) for v in r]
    return r


# --------------------------------------------------------------------------
# the array
# --------------------------------------------------------------------------

#: ndarray attributes passed through as they are (host metadata)
_ATTRIBUTES = frozenset({"shape", "dtype", "ndim", "size", "strides", "nbytes", "itemsize",
                         "flags"})
#: ndarray methods (each exists on cupy.ndarray); results become device arrays
_METHODS = frozenset({
    "all", "any", "argmax", "argmin", "astype", "clip", "conj", "copy", "cumsum", "dot",
    "fill", "flatten", "max", "mean", "min", "nonzero", "prod", "ravel", "repeat",
    "reshape", "round", "squeeze", "std", "sum", "swapaxes", "take", "transpose", "var",
    "view"})
#: methods that return host values (Python scalars, lists)
_HOST_METHODS = frozenset({"item", "tolist"})


class ndarray(numpy.lib.mixins.NDArrayOperatorsMixin):
    """A device array: a NumPy array that refuses to mix with host arrays."""

    __slots__ = ("_a",)

    def __init__(self, shape, dtype=float, order="C"):
        self._a = numpy.empty(shape, dtype=dtype, order=order)
        _note_memory(self._a)

    @classmethod
    def _of(cls, a):
        self = object.__new__(cls)
        self._a = a if type(a) is numpy.ndarray else numpy.asarray(a)
        _note_memory(self._a)
        return self

    # -- the host boundary ---------------------------------------------------
    def __array__(self, *args, **kwargs):
        _COUNTS["to_host"] += 1
        raise TypeError(_IMPLICIT)

    def get(self, stream=None, order="C", out=None):
        """A NumPy copy of the array (the only way to the host, as in CuPy)."""
        _to_host("get()")
        host = numpy.array(self._a, order=order, copy=True)
        if out is not None:
            out[...] = host
            return out
        return host

    def set(self, arr, stream=None):
        """Copy the host array ``arr`` into this array."""
        if not isinstance(arr, numpy.ndarray) or arr.shape != self._a.shape:
            raise ValueError("fake cupy: set() needs a NumPy array of the same shape")
        _to_device("set()")
        self._a[...] = arr

    @property
    def data(self):
        """``cupy.cuda.MemoryPointer`` of the first element: here its ``ptr`` is the
        host address of the NumPy memory underneath."""
        return types.SimpleNamespace(ptr=self._a.ctypes.data)

    # -- NumPy protocols: ufuncs and functions ---------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method not in ("__call__", "reduce") or not hasattr(_this, ufunc.__name__):
            return NotImplemented
        if ufunc.__name__ == "matmul":
            _refuse_cublas_in_capture()
        args = [_dev(x) for x in inputs]
        out = kwargs.get("out")
        if out is not None:
            for o in out:
                if not isinstance(o, ndarray):
                    raise TypeError(f"Unsupported type {type(o)} for out= (fake cupy)")
            kwargs["out"] = tuple(o._a for o in out)
            _recorded_in_place(lambda: getattr(ufunc, method)(*args, **kwargs))
            return out[0] if len(out) == 1 else out
        return _recorded(lambda: getattr(ufunc, method)(*args, **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        impl = _FUNCTIONS.get(func.__name__) if func.__module__ == "numpy" else None
        if impl is None:
            return NotImplemented   # NumPy raises TypeError, as with CuPy
        return impl(*args, **kwargs)

    # -- attributes and methods ----------------------------------------------------
    def __getattr__(self, name):
        if name in _ATTRIBUTES:
            return getattr(self._a, name)
        if name in _HOST_METHODS:
            _to_host(f"{name}()")
            return getattr(self._a, name)
        if name in _METHODS:
            method = getattr(self._a, name)

            def call(*args, **kwargs):
                out = kwargs.get("out")
                args = [_dev(a) if name != "take" else _index(a) for a in args]
                kwargs = {k: _dev(v) for k, v in kwargs.items()}
                if name == "fill" or out is not None:
                    _recorded_in_place(lambda: method(*args, **kwargs))
                    return None if name == "fill" else out
                result = method(*args, **kwargs)
                if result is self._a:
                    return self
                out = _wrap(result)
                if _CAPTURE:
                    _CAPTURE["tape"].append(lambda: _write(out, method(*args, **kwargs)))
                return out
            return call
        raise AttributeError(f"fake cupy: ndarray attribute {name!r} is not implemented "
                             f"by the stand-in (does CuPy have it?)")

    @property
    def T(self):
        return ndarray._of(self._a.T)

    @property
    def base(self):
        return None if self._a.base is None else ndarray._of(self._a.base)

    # -- indexing ------------------------------------------------------------------
    def __getitem__(self, key):
        if _is_advanced(key):
            _to_device("indexing with host indices")
        key = _index(key)
        return _recorded(lambda: self._a[key])

    def __setitem__(self, key, value):
        if _is_advanced(key):
            _to_device("indexing with host indices")
        key = _index(key)
        if isinstance(value, ndarray):
            value = value._a
        elif isinstance(value, numpy.ndarray) and value.ndim > 0 and not _is_advanced(key):
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill "
                             "(fake cupy, as CuPy: basic-index assignment from the host)")
        elif isinstance(value, numpy.ndarray):
            _to_device("assignment of a host array")

        def assign():
            self._a[key] = value
        _recorded_in_place(assign)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for i in range(len(self._a)):
            yield self[i]

    # -- to Python scalars (a synchronisation in CuPy) --------------------------------
    def __bool__(self):
        _to_host("bool()")
        return bool(self._a)

    def __float__(self):
        _to_host("float()")
        return float(self._a)

    def __int__(self):
        _to_host("int()")
        return int(self._a)

    def __complex__(self):
        _to_host("complex()")
        return complex(self._a)

    def __repr__(self):
        _to_host("repr()")
        return repr(self._a)

    def __str__(self):
        _to_host("str()")
        return str(self._a)

    # -- Numba's CUDA simulator --------------------------------------------------------
    def to_device(self, retr, stream=0):
        """The simulator's view of this array for a kernel: the same memory."""
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(self._a)


ndarray.__module__ = "cupy"


# --------------------------------------------------------------------------
# module functions (each name exists in CuPy)
# --------------------------------------------------------------------------

#: CuPy functions that read a value back from the device to size their output
_SIZED_ON_THE_HOST = ("bincount", "flatnonzero", "nonzero", "unique")


def _device_function(f):
    def function(*args, **kwargs):
        if f.__name__ in ("dot", "einsum"):
            _refuse_cublas_in_capture()
        if f.__name__ in _SIZED_ON_THE_HOST:
            _to_host(f"{f.__name__} (CuPy reads a value of its input back to size the output)")
        out = kwargs.get("out")
        args = [_dev(a) for a in args]
        kwargs = {k: _dev(v) for k, v in kwargs.items()}
        if isinstance(out, ndarray):
            _recorded_in_place(lambda: f(*args, **kwargs))
            return out
        return _recorded(lambda: f(*args, **kwargs))
    function.__name__ = f.__name__
    return function


def _creation_function(f):
    def function(*args, **kwargs):
        values = list(args) + list(kwargs.values())
        if builtins.any(isinstance(v, numpy.ndarray) for v in values):
            _to_device(f"{f.__name__} of a host array")
        args = [_host_ok(a) for a in args]
        kwargs = {k: _host_ok(v) for k, v in kwargs.items()}
        return _recorded(lambda: f(*args, **kwargs))
    function.__name__ = f.__name__
    return function


def _ufunc(u):
    def function(*args, **kwargs):
        for a in list(args) + list(kwargs.values()):
            _dev(a)                             # refuses host arrays
        # device arguments: __array_ufunc__ computes (and records a capture)
        result = u(*args, **kwargs)
        return result if isinstance(result, (ndarray, tuple)) else _wrap(result)
    function.__name__ = u.__name__
    function.reduce = lambda *a, **k: _wrap(u.reduce(*(_dev(x) for x in a),
                                                     **{n: _dev(v) for n, v in k.items()}))
    return function


def asarray(a, dtype=None, order=None):
    """Device array of ``a``: the same array if it is one already (and the dtype
    fits), else a copy -- a host array is transferred, never aliased."""
    if isinstance(a, ndarray):
        if dtype is None or numpy.dtype(dtype) == a.dtype:
            return a
        return a.astype(dtype)
    _to_device("asarray of host data")
    return ndarray._of(numpy.array(a, dtype=dtype, order=order or "K", copy=True))


def array(obj, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(obj, ndarray):
        memory = obj._a
        return _recorded(lambda: numpy.array(memory, dtype=dtype, copy=True, order=order,
                                             ndmin=ndmin))
    _to_device("array of host data")
    return ndarray._of(numpy.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin))


asanyarray = asarray


def asnumpy(a, stream=None, order="C", out=None):
    """Host copy of a device array; a host array is returned as NumPy would."""
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out)
    return numpy.asarray(a, order=order)


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):
        raise TypeError(f"Unsupported type {type(a)} (fake cupy: ascontiguousarray of a "
                        f"host array)")
    memory = a._a
    return _recorded(lambda: numpy.ascontiguousarray(memory, dtype=dtype))


_CREATION = ["empty", "zeros", "ones", "full", "arange", "linspace", "eye", "empty_like",
             "zeros_like", "ones_like", "full_like"]
_DEVICE = ["all", "allclose", "amax", "amin", "any", "argmax", "argmin", "argsort",
           "array_equal", "bincount", "broadcast_to", "clip", "concatenate", "count_nonzero",
           "cumsum", "dot", "einsum", "expand_dims", "flatnonzero", "isclose", "max", "mean",
           "min", "moveaxis", "ndim", "nonzero", "prod", "ravel", "repeat", "reshape",
           "sort", "split", "squeeze", "stack", "std", "sum", "swapaxes", "take", "tile",
           "transpose", "unique", "var", "where"]
_UFUNCS = ["abs", "absolute", "add", "ceil", "cos", "cosh", "divide", "equal", "exp",
           "expm1", "floor", "floor_divide", "fmax", "fmin", "greater", "greater_equal",
           "isfinite", "isinf", "isnan", "less", "less_equal", "log", "log10", "log1p",
           "log2", "logical_and", "logical_not", "logical_or", "logical_xor", "matmul",
           "maximum", "minimum", "multiply", "negative", "not_equal", "power",
           "reciprocal", "rint", "sign", "sin", "sinh", "sqrt", "square", "subtract",
           "tanh", "true_divide"]

# (these shadow the builtins all, any, max, min, sum and abs in this module: its
# own code calls builtins.any)
_this = sys.modules[__name__]
for _name in _CREATION:
    setattr(_this, _name, _creation_function(getattr(numpy, _name)))
for _name in _DEVICE:
    setattr(_this, _name, _device_function(getattr(numpy, _name)))
for _name in _UFUNCS:
    setattr(_this, _name, _ufunc(getattr(numpy, _name)))

#: NumPy function name -> this module's function, for ``__array_function__``
_FUNCTIONS = {name: getattr(_this, name)
              for name in _CREATION + _DEVICE + ["asarray", "array", "asanyarray",
                                                 "ascontiguousarray"]}

# dtypes and constants: CuPy re-exports NumPy's
dtype = numpy.dtype
bool_, int8, int16, int32, int64 = numpy.bool_, numpy.int8, numpy.int16, numpy.int32, numpy.int64
uint8, uint16, uint32, uint64 = numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64
float16, float32, float64 = numpy.float16, numpy.float32, numpy.float64
newaxis, pi, e, inf, nan = None, numpy.pi, numpy.e, numpy.inf, numpy.nan


# --------------------------------------------------------------------------
# cupy.random
# --------------------------------------------------------------------------

class _Generator:
    """``cupy.random.Generator`` stand-in: NumPy's PCG64 underneath (other
    numbers than CuPy's cuRAND), draws returned as device arrays."""

    def __init__(self, seed=None):
        self._g = numpy.random.default_rng(seed)

    @staticmethod
    def _draw(values, out):
        if _CAPTURE:
            raise RuntimeError("fake cupy: a cupy.random draw during stream capture: cuRAND's "
                               "host API sets its offset at capture, so every replay of the "
                               "graph would give the same numbers")
        if out is None:
            return _wrap(numpy.asarray(values))
        out._a[...] = values
        return out

    def random(self, size=None, dtype=numpy.float64, out=None):
        size = out.shape if out is not None else size
        return self._draw(self._g.random(size=size, dtype=dtype), out)

    def standard_normal(self, size=None, dtype=numpy.float64, out=None):
        size = out.shape if out is not None else size
        return self._draw(self._g.standard_normal(size=size, dtype=dtype), out)

    def uniform(self, low=0.0, high=1.0, size=None, dtype=numpy.float64):
        return _wrap(numpy.asarray(self._g.uniform(low, high, size=size)).astype(dtype))

    def integers(self, low, high=None, size=None, dtype=numpy.int64, endpoint=False):
        return _wrap(numpy.asarray(self._g.integers(low, high, size=size, dtype=dtype,
                                                    endpoint=endpoint)))


random = types.ModuleType("cupy.random")
random.Generator = _Generator
random.default_rng = _Generator


# --------------------------------------------------------------------------
# cupy.cuda: one device, streams as labels
# --------------------------------------------------------------------------

class Stream:
    """``cupy.cuda.Stream``: ``ptr`` 0 for the null stream, a fake non-zero
    handle otherwise; ``with stream:`` makes it current. Nothing is ordered."""

    _last_ptr = 0x5000
    _current = []

    def __init__(self, null=False, non_blocking=False, ptds=False):
        if null:
            self.ptr = 0
        else:
            Stream._last_ptr += 0x10
            self.ptr = Stream._last_ptr
        self.non_blocking = non_blocking

    def __enter__(self):
        Stream._current.append(self)
        return self

    def __exit__(self, *exc):
        Stream._current.pop()

    def use(self):
        Stream._current[:] = [self]
        return self

    def synchronize(self):
        if _CAPTURE:
            raise RuntimeError("fake cupy: synchronize() of a capturing stream")

    def begin_capture(self, mode=None):
        """Start recording (module docstring: what is emulated)."""
        if self.ptr == 0:
            raise RuntimeError("fake cupy: the null stream cannot capture (as in CUDA)")
        if _CAPTURE:
            raise RuntimeError("fake cupy: a capture is already under way")
        saved = [(a, a.copy()) for a in list(_MEMORY.values())]
        _CAPTURE.update(stream=self, tape=[], saved=saved)

    def is_capturing(self):
        return bool(_CAPTURE) and _CAPTURE["stream"] is self

    def end_capture(self):
        """Stop recording; the arrays older than the capture get their contents back."""
        if not self.is_capturing():
            raise RuntimeError("fake cupy: end_capture() of a stream that does not capture")
        tape, saved = _CAPTURE["tape"], _CAPTURE["saved"]
        _CAPTURE.clear()
        for a, contents in saved:
            a[...] = contents
        return Graph(tape)

    def __repr__(self):
        return f"<fake cupy.cuda.Stream ptr={self.ptr:#x}>"


class Graph:
    """``cupy.cuda.Graph``: ``launch()`` replays the tape of a capture."""

    def __init__(self, tape):
        self._tape = tape

    def launch(self, stream=None):
        if _CAPTURE:
            raise RuntimeError("fake cupy: a graph launched during a capture")
        for entry in self._tape:
            entry()

    def upload(self, stream=None):
        pass


class MemoryPool:
    """``cupy.cuda.MemoryPool``: no memory here; ``malloc`` is what an allocator calls."""

    def malloc(self, size):
        return None

    def used_bytes(self):
        return 0

    def free_all_blocks(self, stream=None):
        pass


@contextlib.contextmanager
def using_allocator(allocator=None):
    """``cupy.cuda.using_allocator``: the allocator is ignored here."""
    yield


Stream.null = Stream(null=True)


def get_current_stream(device_id=-1):
    return Stream._current[-1] if Stream._current else Stream.null


class Device:
    def __init__(self, device=0):
        self.id = int(device)

    def synchronize(self):
        pass

    def use(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


cuda = types.ModuleType("cupy.cuda")
cuda.Stream, cuda.get_current_stream, cuda.Device = Stream, get_current_stream, Device
cuda.Graph, cuda.MemoryPool, cuda.using_allocator = Graph, MemoryPool, using_allocator
cuda.runtime = types.ModuleType("cupy.cuda.runtime")
cuda.runtime.getDeviceCount = lambda: 1
cuda.runtime.streamCaptureModeRelaxed = 2


def get_array_module(*args):
    return _this if builtins.any(isinstance(a, ndarray) for a in args) else numpy


# --------------------------------------------------------------------------
# Numba's CUDA simulator: stand-in arrays are kernel arguments as they are
# --------------------------------------------------------------------------

def _register_with_the_simulator():
    try:
        from numba import config
    except ImportError:
        return
    if config.ENABLE_CUDASIM:
        from numba.cuda.simulator import kernel
        from numba.cuda.simulator.kernel import FakeCUDAKernel

        # the simulator calls to_device on an ArgHint: Numba's is an ABC, numba-cuda's
        # (the package on GPU machines) a plain class, recognised through a tuple
        if hasattr(kernel.ArgHint, "register"):
            kernel.ArgHint.register(ndarray)
        elif not isinstance(kernel.ArgHint, tuple):
            kernel.ArgHint = (kernel.ArgHint, ndarray)
        launch = FakeCUDAKernel.__call__

        def recorded_launch(self, *args):
            """A launch; during a capture also a tape entry with this grid and these
            arguments (a graph's kernel node)."""
            grid = (self.grid_dim, self.block_dim, self.dynshared_size)
            result = launch(self, *args)
            if _CAPTURE and not self._device:
                def replay():
                    self.grid_dim, self.block_dim, self.dynshared_size = grid
                    launch(self, *args)
                _CAPTURE["tape"].append(replay)
            return result
        FakeCUDAKernel.__call__ = recorded_launch


_register_with_the_simulator()

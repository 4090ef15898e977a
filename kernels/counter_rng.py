"""Counter-based random numbers: a value is a hash of (seed, stream, counter, index).

Element i of a draw is a pure function of its key, so the numbers of a step
can be made inside a captured CUDA graph: the step counter is read from device
memory when the kernel runs, not baked into the graph (cuRAND's host API, and
with it ``cupy.random``, fixes its offset when the call is captured, so every
replay would give the same numbers). With splitmix64 (Steele, Lea & Flood
2014), ``h(x)``, on unsigned 64-bit integers (arithmetic mod 2^64):

    key = h(h(seed + stream) + counter)
    b1  = h(key + 2 i),  b2 = h(key + 2 i + 1)
    u1  = (b1 >> 11 + 1) / 2^53  in (0, 1],   u2 = (b2 >> 11) / 2^53  in [0, 1)

``fill_uniform`` writes u2; ``fill_normal`` writes the Box-Muller normal
sqrt(-2 log u1) cos(2 pi u2), computed in float64 and stored in the array's
dtype. ``counter`` is a one-element int64 device array (the training step);
``seed`` and ``stream`` are Python integers (a stream per use: the sampler's
noise, the binarisation's uniforms).

Dispatch (:mod:`kernels._dispatch`): the NumPy reference for NumPy arrays and
the CUDA kernel for CuPy arrays (and, under the simulator, for NumPy arrays
handed to ``*_cuda`` by the tests). Both compute the same float64 formulas;
the CUDA library's ``log`` and ``cos`` may differ from NumPy's in the last
float64 bit, which the float32 result rounds away almost always.
"""
import functools
import math
from typing import Any, NamedTuple

import numpy as np

from ._arrays import check_float, get_xp
from ._dispatch import CUDA_THREADS, choose, cuda_grid, cuda_stream

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1


class CounterDraws(NamedTuple):
    """The key of the draws of one use, in place of a generator: ``seed`` and
    ``stream`` Python integers, ``counter`` a one-element int64 array on the
    device of the arrays drawn for (read there, never on the host)."""
    seed: int
    stream: int
    counter: Any


def splitmix64(x):
    """splitmix64's output function of uint64 ``x`` (NumPy arrays or Python ints)."""
    if isinstance(x, int):
        z = (x + _GOLDEN) & _MASK
        z = ((z ^ (z >> 30)) * _MIX1) & _MASK
        z = ((z ^ (z >> 27)) * _MIX2) & _MASK
        return z ^ (z >> 31)
    z = x + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
    return z ^ (z >> np.uint64(31))


def stream_key(seed, stream):
    """h(seed + stream): the part of the key that does not change between steps."""
    return splitmix64((int(seed) + int(stream)) & _MASK)


def _check(op, out, counter):
    check_float(op, "out", out)
    if counter.shape != (1,) or np.dtype(counter.dtype) != np.int64:
        raise ValueError(f"{op}: expected counter, a one-element int64 array, got "
                         f"{counter.dtype} {tuple(counter.shape)}")


def _uniforms_reference(n, seed, stream, counter):
    """(u1, u2) of elements 0..n-1 as float64 NumPy arrays (``counter`` an int)."""
    key = splitmix64((stream_key(seed, stream) + int(counter)) & _MASK)
    i = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        b1 = splitmix64(np.uint64(key) + np.uint64(2) * i)
        b2 = splitmix64(np.uint64(key) + np.uint64(2) * i + np.uint64(1))
    scale = 2.0 ** -53
    u1 = ((b1 >> np.uint64(11)).astype(np.float64) + 1.0) * scale
    u2 = (b2 >> np.uint64(11)).astype(np.float64) * scale
    return u1, u2


def normal_reference(shape, dtype, seed, stream, counter):
    """The draw of :func:`fill_normal` as a new NumPy array (``counter`` an int)."""
    u1, u2 = _uniforms_reference(int(np.prod(shape)), seed, stream, counter)
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return z.astype(dtype).reshape(shape)


def uniform_reference(shape, dtype, seed, stream, counter):
    """The draw of :func:`fill_uniform` as a new NumPy array (``counter`` an int)."""
    _, u2 = _uniforms_reference(int(np.prod(shape)), seed, stream, counter)
    return u2.astype(dtype).reshape(shape)


def fill_normal(out, seed, stream, counter):
    """Write N(0, 1) numbers into ``out`` (C-contiguous float array), keyed by
    ``seed``, ``stream`` and the device scalar ``counter`` (int64, shape (1,))."""
    _fill("fill_normal", out, seed, stream, counter, True)


def fill_uniform(out, seed, stream, counter):
    """Write U[0, 1) numbers into ``out``, keyed as :func:`fill_normal`."""
    _fill("fill_uniform", out, seed, stream, counter, False)


def _fill(op, out, seed, stream, counter, normal):
    _check(op, out, counter)
    if not out.flags.c_contiguous:
        raise ValueError(f"{op}: expected a C-contiguous out")
    impl = choose(out)
    if impl == "cuda":
        _fill_cuda(out.reshape(-1), np.uint64(stream_key(seed, stream)), counter, normal)
        return
    xp = get_xp(out)
    draw = normal_reference if normal else uniform_reference
    counter_value = int(counter[0]) if xp is np else int(counter.get()[0])
    out[...] = xp.asarray(draw(out.shape, out.dtype, seed, stream, counter_value))


@functools.lru_cache(maxsize=None)
def _cuda_mix():
    """splitmix64 as a CUDA device function (also kernels/codes.py's)."""
    global cuda
    from numba import cuda, uint64

    golden, mix1, mix2 = uint64(_GOLDEN), uint64(_MIX1), uint64(_MIX2)
    s27, s30, s31 = uint64(27), uint64(30), uint64(31)

    @cuda.jit(device=True)
    def mix(x):
        z = x + golden
        z = (z ^ (z >> s30)) * mix1
        z = (z ^ (z >> s27)) * mix2
        return z ^ (z >> s31)

    return mix


@functools.lru_cache(maxsize=None)
def _cuda_kernel():
    # numba.cuda as a module global: see kernels/adam.py
    global cuda
    from numba import cuda, uint64

    mix = _cuda_mix()
    s11, one, two = uint64(11), uint64(1), uint64(2)

    @cuda.jit
    def fill(out, key0, counter, normal):
        key = mix(key0 + uint64(counter[0]))
        scale = 2.0 ** -53
        for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            b2 = mix(key + two * uint64(i) + one)
            u2 = float(b2 >> s11) * scale
            if normal:
                b1 = mix(key + two * uint64(i))
                u1 = (float(b1 >> s11) + 1.0) * scale
                out[i] = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
            else:
                out[i] = u2

    return fill


def _fill_cuda(out, key, counter, normal):
    """Launch the CUDA kernel on a 1-D device array."""
    if out.size:
        kernel = _cuda_kernel()
        kernel[cuda_grid(out.size), CUDA_THREADS, cuda_stream(out)](out, key, counter, normal)

"""Every CUDA kernel of kernels/ against its NumPy reference, on device arrays.

Run by tests/test_gpu_kernels.py through ``gpu_backend.run_on_gpu`` (real
CuPy on a GPU, or the CuPy stand-in under Numba's CUDA simulator). Not a
pytest module: each check is an ``assert``; ``main()`` prints one
``checked <kernel>`` line per CUDA kernel and "GPU OK" at the end.

Each check calls a kernel through its public function (``kernels.relu_forward``,
``kernels.im2col.col2im``, ...) on device arrays of odd shapes (7x13, batch 3,
5 channels on the stand-in; thousands of rows and odd sizes on a GPU), in
float32 and float64, with random inputs, and compares the result, copied to
the host, with the kernel's ``*_reference`` applied to the same values as
NumPy arrays. While a public function runs, ``cupy.empty``/``cupy.empty_like``
hand out NaN-filled (integers: -1-filled) arrays, so an output element the
kernel forgets to write shows up as a mismatch. Every check also asserts that
its CUDA launcher ran (``kernels.*._*_cuda``): a silent fall-back to the
xp reference would otherwise pass.

:data:`CHECKS` maps each ``@cuda.jit`` kernel's name to its check;
:func:`discover_cuda_kernels` lists those kernels from the sources of
kernels/*.py, and tests/test_gpu_kernels.py fails when the two differ.
"""
import contextlib
import importlib
import pkgutil
import re
from pathlib import Path

import numpy as np

KERNELS_DIR = Path(__file__).resolve().parents[1] / "kernels"
#: threads per block on the stand-in: the simulator runs one Python thread per CUDA thread
SIMULATOR_THREADS = 16
TOL = {np.dtype(np.float32): dict(rtol=2e-5, atol=2e-6),
       np.dtype(np.float64): dict(rtol=1e-12, atol=1e-13)}


def discover_cuda_kernels():
    """``{kernel name: module name}`` for every ``@cuda.jit`` function in kernels/*.py."""
    found = {}
    for path in sorted(KERNELS_DIR.glob("*.py")):
        # kernels, not device functions (@cuda.jit(device=True))
        for name in re.findall(r"@cuda\.jit(?!\(device=True\))[^\n]*\n\s*def (\w+)\(",
                               path.read_text()):
            found[name] = path.stem
    return found


# --------------------------------------------------------------------------
# the harness: launch counting, poisoned allocations, sizes, comparison
# --------------------------------------------------------------------------

LAUNCHES = []


def _count_launches():
    """Wrap every CUDA launcher (``_*_cuda`` of a kernels module) to record its name."""
    import kernels

    for info in pkgutil.iter_modules(kernels.__path__):
        module = importlib.import_module(f"kernels.{info.name}")
        for name, launcher in list(vars(module).items()):
            if name.startswith("_") and name.endswith("_cuda") and callable(launcher):
                setattr(module, name, _counted(name, launcher))


def _counted(name, launcher):
    def launch(*args, **kwargs):
        LAUNCHES.append(name)
        return launcher(*args, **kwargs)
    return launch


@contextlib.contextmanager
def poisoned_allocations(cupy):
    """``cupy.empty``/``empty_like`` return NaN-filled (integers: -1) arrays meanwhile."""
    empty, empty_like = cupy.empty, cupy.empty_like

    def fill(a):
        a.fill(np.nan if np.dtype(a.dtype).kind == "f" else -1)
        return a

    cupy.empty = lambda *args, **kwargs: fill(empty(*args, **kwargs))
    cupy.empty_like = lambda *args, **kwargs: fill(empty_like(*args, **kwargs))
    try:
        yield
    finally:
        cupy.empty, cupy.empty_like = empty, empty_like


class Run:
    """What a check needs: the device module, a generator, the sizes, the dtype."""

    def __init__(self, cupy, real, dtype, seed):
        self.cupy, self.real, self.dtype = cupy, real, np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.tol = TOL[self.dtype]

    def normal(self, *shape, scale=1.0):
        return (scale * self.rng.standard_normal(shape)).astype(self.dtype)

    def device(self, host):
        return self.cupy.asarray(host)

    def call(self, launcher, function, *args, **kwargs):
        """``function(*args)`` with poisoned allocations; assert ``launcher`` ran."""
        del LAUNCHES[:]
        with poisoned_allocations(self.cupy):
            out = function(*args, **kwargs)
        assert launcher in LAUNCHES, (f"{function.__name__}: the CUDA launcher {launcher} "
                                      f"did not run (launched: {LAUNCHES})")
        return out

    def close(self, what, got, want, **tol):
        got = got.get() if isinstance(got, self.cupy.ndarray) else got
        assert isinstance(got, np.ndarray), (what, type(got))
        assert got.shape == want.shape, (what, got.shape, want.shape)
        np.testing.assert_allclose(got, want, err_msg=f"{what}, {self.dtype.name}",
                                   **(tol or self.tol))


# --------------------------------------------------------------------------
# one check per CUDA kernel
# --------------------------------------------------------------------------

def check_adam(r):
    import kernels

    shape = (1031, 517) if r.real else (7, 13)
    p, m = r.normal(*shape), r.normal(*shape, scale=0.1)
    v = np.abs(r.normal(*shape, scale=0.1))
    dp, dm, dv = r.device(p), r.device(m), r.device(v)
    for step in (1, 2):
        g = r.normal(*shape)
        r.call("_adam_cuda", kernels.adam_step, dp, r.device(g), dm, dv, step, 1e-2, 0.9,
               0.999, 1e-8, 0.1)
        kernels.adam_step_reference(p, g, m, v, step, 1e-2, 0.9, 0.999, 1e-8, 0.1)
    for what, got, want in (("param", dp, p), ("exp_avg", dm, m), ("exp_avg_sq", dv, v)):
        r.close(f"adam_step {what}", got, want)


def check_sgd(r):
    import kernels

    shape = (517, 1031) if r.real else (3, 5, 7)
    p, b = r.normal(*shape), r.normal(*shape)
    dp, db = r.device(p), r.device(b)
    for step in (1, 2):
        g = r.normal(*shape)
        r.call("_sgd_cuda", kernels.sgd_step, dp, r.device(g), db, 0.1, momentum=0.9,
               weight_decay=0.01, nesterov=True, first_step=step == 1)
        kernels.sgd_step_reference(p, g, b, 0.1, 0.9, 0.0, 0.01, True, step == 1)
    r.close("sgd_step param", dp, p)
    r.close("sgd_step buf", db, b)


def check_bce(r):
    import kernels

    shape = (257, 3, 29, 31) if r.real else (3, 5, 7)     # rows of 2697 or 35 (odd)
    logits = r.normal(*shape, scale=4)
    logits.flat[:4] = 1e4, -1e4, 50, -50
    targets = r.rng.random(shape).astype(r.dtype)
    width = int(np.prod(shape[1:]))
    row_tol = dict(rtol=r.tol["rtol"], atol=r.tol["atol"] * width)   # a sum of `width` terms
    row, dl = r.call("_bce_cuda", kernels.bce_with_logits, r.device(logits),
                     r.device(targets), 0.5)
    want_row, want_dl = kernels.bce_with_logits_reference(logits, targets, 0.5)
    r.close("bce_with_logits row loss", row, want_row, **row_tol)
    r.close("bce_with_logits dlogits", dl, want_dl)
    row = r.call("_bce_forward_cuda", kernels.bce_with_logits_forward, r.device(logits),
                 r.device(targets))
    r.close("bce_with_logits_forward", row, kernels.bce_with_logits_forward_reference(
        logits, targets), **row_tol)


def check_relu_forward(r):
    import kernels

    x = r.normal(*((67, 5, 29, 31) if r.real else (7, 13)))
    x.flat[:3] = np.nan, -0.0, -1.0
    r.close("relu_forward", r.call("_relu_forward_cuda", kernels.relu_forward, r.device(x)),
            kernels.relu_forward_reference(x))
    dx = r.device(x)
    r.call("_relu_forward_cuda", kernels.relu_forward, dx, out=dx)
    r.close("relu_forward in place", dx, kernels.relu_forward_reference(x))


def check_relu_backward(r):
    import kernels

    shape = (67, 5, 29, 31) if r.real else (3, 5, 7)
    y = np.maximum(r.normal(*shape), 0).astype(r.dtype)
    dy = r.normal(*shape)
    r.close("relu_backward", r.call("_relu_backward_cuda", kernels.relu_backward,
                                    r.device(dy), r.device(y)),
            kernels.relu_backward_reference(dy, y))


def check_gated_forward(r):
    import kernels

    x = r.normal(*((67, 10, 29, 31) if r.real else (3, 10, 7, 5)), scale=3)
    r.close("gated_forward", r.call("_gated_forward_cuda", kernels.gated_forward, r.device(x)),
            kernels.gated_forward_reference(x))


def check_gated_backward(r):
    import kernels

    shape = (67, 10, 29, 31) if r.real else (3, 10, 7, 5)
    x = r.normal(*shape, scale=3)
    dy = r.normal(shape[0], shape[1] // 2, *shape[2:])
    r.close("gated_backward", r.call("_gated_backward_cuda", kernels.gated_backward,
                                     r.device(dy), r.device(x)),
            kernels.gated_backward_reference(dy, x))


#: (x shape NHWC, kernel, stride, padding): odd sizes, strides and paddings
def _conv_cases(real):
    """(x shape, kernel, stride, padding): rows long enough for im2col's four entries
    at a time and its remainder, and pixels with 1, 2 and 3 kernel offsets j for
    col2im's two at a time and its remainder."""
    if real:
        return [((67, 29, 31, 5), (3, 3), (2, 2), (1, 1)),
                ((3, 57, 43, 7), (5, 3), (1, 2), (2, 0)),
                ((2, 9, 131, 1), (3, 5), (1, 2), (1, 2))]
    return [((3, 7, 13, 5), (3, 2), (2, 1), (1, 0)),
            ((1, 5, 5, 3), (3, 3), (1, 1), (1, 1)),
            ((2, 6, 37, 5), (5, 2), (2, 1), (2, 0)),
            ((1, 4, 70, 1), (3, 5), (1, 2), (1, 2))]


def check_im2col(r):
    from kernels import im2col as K

    for shape, k, s, p in _conv_cases(r.real):
        x = r.normal(*shape)
        r.close(f"im2col {shape} {k} {s} {p}", r.call("_im2col_cuda", K.im2col, r.device(x),
                                                       k, s, p),
                K.im2col_reference(x, k, s, p), rtol=0, atol=0)


def check_col2im(r):
    from kernels import im2col as K

    for shape, k, s, p in _conv_cases(r.real):
        rows = K.im2col_reference(np.zeros(shape, r.dtype), k, s, p).shape
        cols = r.normal(*rows)
        r.close(f"col2im {shape} {k} {s} {p}", r.call("_col2im_cuda", K.col2im,
                                                       r.device(cols), shape, k, s, p),
                K.col2im_reference(cols, shape, k, s, p))


def check_nearest(r):
    import kernels

    M, D, K = (100003, 13, 67) if r.real else (131, 5, 7)
    z, codebook = r.normal(M, D), r.normal(K, D)
    codebook[3] = codebook[1]                  # a duplicated code: the lower index wins
    z[0] = codebook[1]
    indices, sqdist = r.call("_nearest_cuda", kernels.nearest_code, r.device(z),
                             r.device(codebook))
    want_indices, want_sqdist = kernels.nearest_code_reference(z, codebook)
    got = indices.get()
    assert got.dtype == np.int64 and got[0] == 1, (got.dtype, got[:1])
    np.testing.assert_array_equal(got, want_indices, err_msg=f"nearest_code indices, "
                                                             f"{r.dtype.name}")
    r.close("nearest_code sqdist", sqdist, want_sqdist, rtol=1e-12, atol=1e-12)


def _code_cases(r):
    """(M, K, D) of the per-code kernels: odd sizes, and codes no row chose."""
    return [(100003, 67, 13), (6272, 128, 16)] if r.real else [(37, 7, 3), (5, 9, 2)]


def check_segment_sum(r):
    from kernels import codes as K

    for M, C, D in _code_cases(r):
        idx = r.rng.integers(0, C - 2, M)           # the last two codes unused
        values = r.normal(M, D)
        got = r.call("_segment_sum_cuda", K.segment_sum, r.device(idx), r.device(values), C)
        want = np.stack([np.bincount(idx, weights=values[:, d], minlength=C)
                         for d in range(D)], axis=1).astype(r.dtype)
        # float64 sums in the order of m, as bincount's: the same bits
        np.testing.assert_array_equal(got.get(), want, err_msg=f"segment_sum {M} {C} {D}")


def check_counts(r):
    from kernels import codes as K

    for M, C, _ in _code_cases(r):
        idx = r.rng.integers(0, C - 2, M)
        got = r.call("_counts_cuda", K.code_counts, r.device(idx), C)
        np.testing.assert_array_equal(got.get(), np.bincount(idx, minlength=C))


def check_restart(r):
    from kernels import codes as K

    for M, C, D in _code_cases(r) + [(3, 9, 2)]:      # the last: more dead codes than rows
        codebook, rows = r.normal(C, D), r.normal(M, D)
        unused = r.rng.integers(0, 3, C).astype(np.int64)
        counts = np.bincount(r.rng.integers(0, C, min(M, C // 2)), minlength=C)
        d = [r.device(a) for a in (codebook, unused, rows, counts)]
        for counter in (0, 41):
            c = r.device(np.array([counter], np.int64))
            before = codebook.copy()
            dead = int((np.where(counts > 0, 0, unused + 1) >= 2).sum())
            r.call("_restart_cuda", K.restart_dead_codes, *d, 2, 5, 2, c)
            K.restart_dead_codes_reference(codebook, unused, rows, counts, 2, 5, 2, counter)
            np.testing.assert_array_equal(d[1].get(), unused, err_msg=f"restart unused {M}")
            np.testing.assert_array_equal(d[0].get(), codebook, err_msg=f"restart rows {M}")
            # the restarted codes took distinct rows: min(dead codes, M) of them
            changed = np.flatnonzero((codebook != before).any(axis=1))
            taken = {next(m for m in range(M) if (rows[m] == codebook[k]).all())
                     for k in changed}
            assert len(taken) == len(changed) == min(M, dead) > 0, (changed, taken, M, dead)
            counts[:] = 0                          # the second call: every code is dead
            d[3] = r.device(counts)


def _cuda_chosen(*arrays):
    from kernels._dispatch import choose

    assert choose(*arrays) == "cuda", "the dispatch did not pick the CUDA kernel"


def check_adam_advance(r):
    from kernels import adam as K

    lr_table = np.array([1e-3, 5e-4, 2.5e-4, 1e-4], np.float64)
    for start in (0, 2, 6):                   # within the table, at its end, beyond it
        t, scalars = r.device(np.array([start], np.int64)), r.device(np.full(2, np.nan, r.dtype))
        _cuda_chosen(scalars)
        K.adam_advance(t, r.device(lr_table), 0.9, 0.999, scalars)
        step = start + 1
        want = np.array([lr_table[min(step, 4) - 1] / (1 - 0.9 ** step),
                         np.sqrt(1 - 0.999 ** step)]).astype(r.dtype)
        assert int(t.get()[0]) == step, (start, t.get())
        r.close(f"adam_advance from step {start}", scalars, want)


def check_adam_device(r):
    from kernels import adam as K

    shape = (1031, 517) if r.real else (7, 13)
    p, g, m = r.normal(*shape), r.normal(*shape), r.normal(*shape, scale=0.1)
    v = np.abs(r.normal(*shape, scale=0.1))
    scalars = np.array([1e-3 / (1 - 0.9 ** 3), np.sqrt(1 - 0.999 ** 3)], r.dtype)
    d = [r.device(a) for a in (p, g, m, v, scalars)]
    _cuda_chosen(*d)
    K.adam_step_device(*d, 0.9, 0.999, 1e-8, weight_decay=0.01)
    K.adam_step_device_reference(p, g, m, v, scalars, 0.9, 0.999, 1e-8, weight_decay=0.01)
    for what, got, want in (("param", d[0], p), ("exp_avg", d[2], m), ("exp_avg_sq", d[3], v)):
        r.close(f"adam_step_device {what}", got, want)


def check_counter_rng(r):
    from kernels import counter_rng as K

    shape = (1031, 517) if r.real else (7, 13)
    for fill, reference in ((K.fill_normal, K.normal_reference),
                            (K.fill_uniform, K.uniform_reference)):
        out = r.device(np.full(shape, np.nan, r.dtype))
        counter = r.device(np.array([17], np.int64))
        del LAUNCHES[:]
        fill(out, 5, 2, counter)
        assert "_fill_cuda" in LAUNCHES, LAUNCHES
        r.close(f"{fill.__name__}", out, reference(shape, r.dtype, 5, 2, 17))


def check_cublas_handle(cupy, real):
    """kernels.cublas.CublasHandle (cuBLAS called through ctypes; on the stand-in,
    tests/fake_cublas.py) against NumPy: odd shapes, transposed and strided
    views, an empty inner dimension, ``out=``, and a product captured into a
    CUDA graph and replayed on new inputs copied into the same arrays."""
    from kernels import cublas, gemm

    fake = None if real else __import__("fake_cublas").install()

    def same_product(got, x, y, what):
        """got within the rounding bound of a product, |got - x y| <= K eps |x| |y|
        (entrywise; cuBLAS and NumPy sum in other orders)."""
        got = got.get() if isinstance(got, cupy.ndarray) else got
        want = x.astype(np.float64) @ y.astype(np.float64)
        bound = max(x.shape[1], 1) * np.finfo(x.dtype).eps * (np.abs(x) @ np.abs(y))
        excess = np.abs(got - want) - bound
        assert got.shape == want.shape and excess.max(initial=-1) <= 0, (
            f"{what}: {int((excess > 0).sum())} of {got.size} entries beyond the bound, "
            f"by up to {excess.max():.3g}")

    stream = cupy.cuda.Stream(non_blocking=True)
    workspace = cupy.empty(1 << 20, dtype=np.uint8)
    handle = cublas.CublasHandle(cupy, stream, workspace)
    rng = np.random.default_rng(0)
    M, K, N = (301, 517, 129) if real else (7, 13, 5)

    def transposed(x):                        # a view of column-major storage
        return cupy.asarray(np.ascontiguousarray(x.T)).T

    for dtype in (np.float32, np.float64):
        a, b = (rng.standard_normal(s).astype(dtype) for s in ((M, K), (K, N)))
        wide = rng.standard_normal((K, N + 3)).astype(dtype)
        da, db = cupy.asarray(a), cupy.asarray(b)
        cases = {"a @ b": (da, db), "a^T-view @ b": (transposed(a), db),
                 "a @ b^T-view": (da, transposed(b)),
                 "a^T-view @ b^T-view": (transposed(a), transposed(b)),
                 "a @ wide[:, :N]": (da, cupy.asarray(wide)[:, :N]),
                 "a^T-view @ wide[:, :N]": (transposed(a), cupy.asarray(wide)[:, :N]),
                 "row @ b": (da[:1], db), "a @ column": (da, db[:, :1]),
                 "a[::2] @ b (a copy)": (da[::2], db), "a[:, :0] @ b[:0]": (da[:, :0], db[:0])}
        with stream:
            for what, (dx, dy) in cases.items():
                x, y = dx.get(), dy.get()
                got = handle.matmul(dx, dy)
                stream.synchronize()
                same_product(got, x, y, f"{what} {dtype.__name__}")
            out = cupy.full((M, N), np.nan, dtype=dtype)
            with cublas.capturable_products(handle):      # matmul's CUDA path, out=
                assert gemm.matmul(cupy.asarray(a), cupy.asarray(b), out=out) is out
            stream.synchronize()
            same_product(out, a, b, f"matmul(out=) {dtype.__name__}")
            # captured once, replayed on new operands copied into the same arrays
            da, db, dc = cupy.asarray(a), cupy.asarray(b), cupy.empty((M, N), dtype=dtype)
            handle.matmul(da, db.T.copy().T, out=dc)          # warm-up, as the step's
            stream.synchronize()
            stream.begin_capture(mode=cupy.cuda.runtime.streamCaptureModeRelaxed)
            handle.matmul(da, db, out=dc)
            graph = stream.end_capture()
            a2, b2 = a[::-1].copy(), b[:, ::-1].copy()
            da.set(a2)
            db.set(b2)
            graph.launch(stream=stream)
            stream.synchronize()
            same_product(dc, a2, b2, f"graph {dtype.__name__}")
    handle.close()
    if fake is not None:
        names = [name for name, _ in fake.calls]
        assert names[:3] == ["cublasCreate_v2", "cublasSetStream_v2", "cublasSetWorkspace_v2"]
        assert fake.calls[1][1][1] == stream.ptr and fake.calls[2][1][2] == 1 << 20
        assert "cublasSgemm_v2" in names and "cublasDgemm_v2" in names
    print(f"checked the own cuBLAS handle ({'cuBLAS' if real else 'the stand-in'}), "
          f"captured product included")


CHECKS = {"adam_kernel": check_adam, "sgd_kernel": check_sgd, "bce_kernel": check_bce,
          "relu_forward_kernel": check_relu_forward,
          "relu_backward_kernel": check_relu_backward,
          "gated_forward_kernel": check_gated_forward,
          "gated_backward_kernel": check_gated_backward,
          "im2col_kernel": check_im2col, "col2im_kernel": check_col2im,
          "nearest_kernel": check_nearest, "adam_advance_kernel": check_adam_advance,
          "adam_device_kernel": check_adam_device, "fill": check_counter_rng,
          "segment_sum_kernel": check_segment_sum, "counts_kernel": check_counts,
          "restart_kernel": check_restart}


def main(only=None):
    """Run the check of every CUDA kernel (or of the names in ``only``)."""
    import time

    import gpu_backend

    cupy = gpu_backend.check_child()
    real = gpu_backend.on_real_cupy()
    missing = set(discover_cuda_kernels()) - set(CHECKS)
    assert not missing, f"CUDA kernels without a check: {sorted(missing)}"
    if not real:                              # before any kernel is built (bce reads it then)
        for info in pkgutil.iter_modules(importlib.import_module("kernels").__path__):
            module = importlib.import_module(f"kernels.{info.name}")
            if hasattr(module, "CUDA_THREADS"):
                module.CUDA_THREADS = SIMULATOR_THREADS
    _count_launches()
    for i, (name, check) in enumerate(CHECKS.items()):
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        for dtype in (np.float32, np.float64):
            check(Run(cupy, real, dtype, seed=i))
        print(f"checked {name} ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(gpu_backend.OK)

"""kernels.gemm.matmul (BLAS per block on Numba's threads) against a float64 product:
every way of cutting a product, every operand layout, both dtypes, one and
two threads; what goes to plain ``a @ b`` instead; and its errors."""
import re

import numba
import numpy as np
import pytest

import kernels
import kernels.gemm as kmm
from kernels._dispatch import ENV_VAR

DTYPES = [np.float32, np.float64]
#: (M, K, N) for each way of cutting: rows of C, columns of C, the inner dimension;
#: odd sizes, so that blocks are uneven
SHAPES = {kmm.ROWS: [(1031, 67, 129), (6272, 512, 64)],
          kmm.COLUMNS: [(129, 67, 1031), (64, 96, 6272)],
          kmm.INNER: [(64, 6272, 512), (3, 100003, 5), (1, 25088, 32)]}
CASES = [(split, shape) for split, shapes in SHAPES.items() for shape in shapes]


@pytest.fixture(autouse=True)
def _auto_dispatch(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def kernel_calls(monkeypatch):
    """The split of every call that reaches the compiled loop, and its operands; the
    loop on one thread too (one thread's NumPy path is tested on its own, below)."""
    monkeypatch.setattr(kmm, "_numpy_makes_the_call", lambda a, b: False)
    calls = []
    real = kmm._gemm_blocks

    def spy(gemm, split, threads, a, a_rows, lda, b, b_rows, ldb, *rest):
        calls.append({"split": split, "a": a, "b": b, "a_rows": a_rows, "b_rows": b_rows})
        return real(gemm, split, threads, a, a_rows, lda, b, b_rows, ldb, *rest)
    monkeypatch.setattr(kmm, "_gemm_blocks", spy)
    return calls


def _operands(rng, M, K, N, dtype, a_transposed, b_transposed):
    """a (M, K) and b (K, N), each either C-contiguous or a transposed view."""
    a = rng.standard_normal((K, M) if a_transposed else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if b_transposed else (K, N)).astype(dtype)
    return (a.T if a_transposed else a), (b.T if b_transposed else b)


def _assert_product(c, a, b):
    """c equals a @ b computed in float64, to the dtype's rounding over K terms."""
    exact = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)   # error bound's scale
    eps = np.finfo(c.dtype).eps
    assert c.shape == exact.shape and c.dtype == a.dtype and c.flags.c_contiguous
    assert np.all(np.abs(c - exact) <= 4 * eps * np.sqrt(a.shape[1]) * scale + 1e-30)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b_transposed", [False, True])
@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("split, shape", CASES)
def test_every_split_and_layout_matches_the_exact_product(split, shape, a_transposed,
                                                          b_transposed, dtype, kernel_calls):
    a, b = _operands(np.random.default_rng(0), *shape, dtype, a_transposed, b_transposed)
    _assert_product(kernels.matmul(a, b), a, b)
    assert [c["split"] for c in kernel_calls] == [split]     # the kernel ran, cut this way
    call = kernel_calls[0]
    if min(a.shape) > 1:                  # a single row or column is both layouts at once
        assert call["a_rows"] is not a_transposed
    assert call["b_rows"] is not b_transposed
    assert np.shares_memory(call["a"], a) and np.shares_memory(call["b"], b)   # no copies


@pytest.mark.parametrize("split, shape", CASES)
def test_one_thread_gives_the_same_product(split, shape):
    a, b = _operands(np.random.default_rng(1), *shape, np.float64, False, True)
    two = kernels.matmul(a, b)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one = kernels.matmul(a, b)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_allclose(one, two, rtol=1e-12, atol=1e-12 * np.abs(two).max())
    _assert_product(one, a, b)


def test_views_with_a_row_or_column_stride_are_used_in_place(kernel_calls):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((700, 900)).astype(np.float32)
    y = rng.standard_normal((900, 600)).astype(np.float32)
    views = [(x[:, 100:700], y[:600, :]),       # rows of a at stride 900 > 600
             (x[5:600, :], y[:, 50:450]),       # columns of b at stride 600 > 400
             (y[:600, :500].T, x[:600, :].T[:600])]
    for a, b in views:
        _assert_product(kernels.matmul(a, b), a, b)
    assert len(kernel_calls) == len(views)
    for (a, b), call in zip(views, kernel_calls):
        assert np.shares_memory(call["a"], a) and np.shares_memory(call["b"], b)


def test_views_without_a_unit_stride_are_copied_first(kernel_calls):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((600, 900)).astype(np.float32)
    z = rng.standard_normal((900, 300)).astype(np.float32)
    cases = [(x[:, ::2], z[:450]),                              # every other column
             (x[::-1], z),                                      # rows reversed
             (np.broadcast_to(x[0], (600, 900)), z)]            # one row, repeated
    for a, b in cases:
        _assert_product(kernels.matmul(a, b), a, b)
    assert len(kernel_calls) == len(cases)
    assert not np.shares_memory(kernel_calls[0]["a"], x)       # the strided view was copied
    assert not np.shares_memory(kernel_calls[1]["a"], x)       # and the reversed one


@pytest.mark.parametrize("a, b", [
    (np.ones((8, 8), np.float32), np.ones((8, 8), np.float32)),          # small
    (np.ones((0, 600), np.float32), np.ones((600, 900), np.float32)),    # empty
    (np.ones((600, 0), np.float32), np.ones((0, 900), np.float32)),      # K = 0: zeros
    (np.ones((300, 600), np.int64), np.ones((600, 900), np.int64)),      # not float
    (np.ones((300, 600), np.float32), np.ones((600, 900), np.float64)),  # mixed: promoted
])
def test_small_empty_and_other_products_are_plain_numpy(a, b, kernel_calls):
    c = kernels.matmul(a, b)
    expected = a @ b
    assert c.dtype == expected.dtype and c.shape == expected.shape
    np.testing.assert_array_equal(c, expected)
    assert kernel_calls == []


def test_the_reference_is_forced_by_the_environment(monkeypatch, kernel_calls):
    monkeypatch.setenv(ENV_VAR, "reference")
    a = np.random.default_rng(4).standard_normal((300, 400)).astype(np.float32)
    np.testing.assert_array_equal(kernels.matmul(a, a.T), a @ a.T)
    assert kernel_calls == []


@pytest.mark.parametrize("a, b, expected", [
    (np.ones(5), np.ones((5, 2)), "expected two 2-D arrays, got shapes (5,) and (5, 2)"),
    (np.ones((2, 3, 4)), np.ones((4, 2)), "expected two 2-D arrays"),
    (np.ones((3, 4)), np.ones((5, 2)),
     "expected a (M, K) and a (K, N) array, got shapes (3, 4) and (5, 2)"),
])
def test_bad_shapes_are_refused(a, b, expected):
    with pytest.raises(ValueError, match=re.escape("matmul: " + expected)):
        kernels.matmul(a, b)


def test_a_wrong_block_offset_is_caught(monkeypatch):
    """The comparison has teeth: a kernel that computes every block from the
    first rows of op(A) (a plausible off-by-offset bug) fails it."""
    def first_rows_only(gemm, split, threads, a, a_rows, lda, b, b_rows, ldb, out, M, N, K,
                        one, zero):
        half = M // 2
        out[:half] = a.reshape(-1)[:half * lda].reshape(half, lda)[:, :K] @ b.reshape(-1)[
            :K * ldb].reshape(K, ldb)[:, :N]
        out[half:] = out[:M - half]
    monkeypatch.setattr(kmm, "_gemm_blocks", first_rows_only)
    monkeypatch.setattr(kmm, "_numpy_makes_the_call", lambda a, b: False)   # one thread too
    a, b = _operands(np.random.default_rng(5), 1031, 67, 129, np.float64, False, False)
    with pytest.raises(AssertionError):
        _assert_product(kernels.matmul(a, b), a, b)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("split, shape", CASES[::2] + [(None, (8, 8, 8))])
def test_out_receives_the_same_bits(split, shape, threads, kernel_calls):
    """out= (a parameter's gradient buffer) holds exactly the product matmul returns
    (every cut, one and two threads, and a small product's plain ``a @ b``)."""
    a, b = _operands(np.random.default_rng(6), *shape, np.float32, True, False)
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        fresh = kernels.matmul(a, b)
        out = np.full(fresh.shape, np.nan, np.float32)
        assert kernels.matmul(a, b, out=out) is out
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(out, fresh)
    assert [c["split"] for c in kernel_calls] == ([split] * 2 if split is not None else [])


@pytest.mark.parametrize("out, expected", [
    (np.zeros((3, 2), np.float32), "got a float32 array of shape (3, 2)"),
    (np.zeros((2, 3), np.float64), "got a float64 array of shape (2, 3)"),
    (np.zeros((3, 2), np.float32).T, "got a strided float32 array of shape (2, 3)"),
])
def test_a_bad_out_is_refused(out, expected):
    a, b = np.ones((2, 4), np.float32), np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=re.escape(
            "matmul: expected out, a C-contiguous float32 array of shape (2, 3), " + expected)):
        kernels.matmul(a, b, out=out)


@pytest.fixture
def one_thread():
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    yield
    numba.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b_transposed", [False, True])
@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("shape", [(20, 784, 200), (784, 20, 200), (129, 67, 1031),
                                   (64, 6272, 512)])
def test_one_thread_hands_numpy_the_same_gemm_call(shape, a_transposed, b_transposed, dtype,
                                                   one_thread, monkeypatch):
    """On one thread a C- or Fortran-ordered product goes to NumPy's ``matmul`` (the
    compiled loop is not called) and gives the loop's bits, ``out=`` included."""
    a, b = _operands(np.random.default_rng(7), *shape, dtype, a_transposed, b_transposed)
    assert kmm._numpy_makes_the_call(a, b)
    loop_calls = []
    real = kmm._gemm_blocks
    monkeypatch.setattr(kmm, "_gemm_blocks", lambda *args: loop_calls.append(1) or real(*args))
    out = np.full((shape[0], shape[2]), np.nan, dtype)
    assert kernels.matmul(a, b, out=out) is out
    assert loop_calls == []
    with monkeypatch.context() as m:                 # the compiled loop, on one thread
        m.setattr(kmm, "_numpy_makes_the_call", lambda a, b: False)
        loop = kernels.matmul(a, b)
    assert loop_calls == [1]
    np.testing.assert_array_equal(out, loop)
    _assert_product(out, a, b)


def test_numpy_is_not_handed_what_it_would_compute_otherwise(monkeypatch):
    """Where NumPy would not make the loop's one gemm call (gemv for a single row or
    column, syrk for an operand and its own transpose, its own loop for a view
    without C or Fortran order) or another BLAS is chosen, the compiled loop runs."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((600, 900)).astype(np.float32)
    w = rng.standard_normal((900, 400)).astype(np.float32)
    assert kmm._numpy_makes_the_call(x, w)
    assert not kmm._numpy_makes_the_call(x[:1], w)            # one row of C
    assert not kmm._numpy_makes_the_call(x, w[:, :1])         # one column
    assert not kmm._numpy_makes_the_call(x, x.T)              # a @ a.T
    assert not kmm._numpy_makes_the_call(x[:, :500], w[:500])  # rows at a longer stride
    monkeypatch.setattr(kmm, "blas", lambda: kernels.blas.Blas("scipy", "", {}))
    assert not kmm._numpy_makes_the_call(x, w)

"""Matrix products C = A @ B on scratchvae's own thread pool: BLAS per block.

BLAS does the arithmetic, as everywhere in the engine; this kernel only
decides which thread computes which part of C.

The kernels of this package and the products between them run on one
thread pool, Numba's (OpenMP). Why one pool: beside a BLAS library's own
threads, an idle pool must either sleep (and be woken, dozens of times a
training step) or spin (and take the other pool's cores); alone, its idle
threads spin briefly and nothing else wants the cores (benchmarks/RESULTS.md).

How. A product is cut into T blocks, T = Numba's thread count, and one
parallel loop gives each thread one block, for which it calls BLAS
``gemm`` (the BLAS library set to one thread: it is one of T calls at
once). Usually the blocks are ranges of rows of C (when M >= N) or of its
columns, each entry of C then being one call's sum over the whole inner
dimension K. A product whose K is at least twice M and N (a weight
gradient, summed over a batch of pixels) is cut along K instead: each
thread multiplies its own range of A's columns and B's rows, reading its
part of both operands once, and the T partial products are added. The last
bits of a result can depend on T (the K cut does, and BLAS may round an
uneven block's edge differently), as with any multi-threaded BLAS.

Row-major arrays, column-major BLAS. Fortran BLAS reads a matrix
column-major; a row-major (M, N) matrix with row stride ld is, read that
way, its transpose (N, M) with leading dimension ld. So the row-major
product C = op(A) op(B) is computed as the column-major product
C^T = op(B)^T op(A)^T: B is passed first, and an operand given as a
transposed view (a column-major array, ``W.T``) is passed as its row-major
base with the transpose flag set, never copied. An operand needs only one
unit stride: rows (row-major, any row stride >= its width) or columns
(column-major); anything else is copied once.

Which BLAS. The one :mod:`kernels.blas` chooses (NumPy's bundled OpenBLAS by
default, SciPy's or MKL on request), whose ``sgemm``/``dgemm`` addresses are
handed to the compiled loop at run time, each with a zero of the library's
integer type (32- or 64-bit: the loop is compiled for it). The first product
the kernel runs sets every BLAS library of the process to one thread
(``threadpoolctl``): scratchvae's pool runs the threads, and a BLAS library's
own threads would compete with it. NumPy's ``@`` elsewhere in the same
process then runs on one thread too.

Dispatch (:mod:`kernels._dispatch`, which states matmul's small-product and
one-thread exceptions): the Numba CPU kernel for NumPy float32/float64 operands of any
layout; cuBLAS (``a @ b``, or a handle of kernels/cublas.py while a training step
is captured) for CuPy arrays; ``matmul_reference`` otherwise.
"""
import numpy as np
from llvmlite import ir
from numba import get_num_threads, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._arrays import blas_layout, get_xp
from .blas import blas
from .cublas import active_handle
from ._dispatch import choose

#: products with fewer multiply-adds than this (M*N*K) run as plain ``a @ b``:
#: a parallel launch costs more than it saves (OpenBLAS itself keeps products
#: under 4 * 65536 multiply-adds on one thread)
SMALL_PRODUCT = 1 << 18

#: largest dimension or leading dimension the 32-bit integers of LP64 BLAS hold
_INT32_MAX = 2 ** 31 - 1


def matmul_reference(a, b, out=None):
    """C = a @ b in plain ``xp`` (NumPy, or CuPy's cuBLAS), into ``out`` when given."""
    if out is None:
        return a @ b
    return get_xp(a).matmul(a, b, out=out)


# --------------------------------------------------------------------------
# calling Fortran gemm through a function address
# --------------------------------------------------------------------------

@intrinsic
def _call_gemm(typingctx, gemm, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
               beta, c, ldc):
    """A Fortran gemm (every argument by pointer); ``gemm`` is (its address, a zero of
    its integer type), as :func:`kernels.blas.blas` gives it.

    ``trans_a``/``trans_b`` are character codes (ord('N') or ord('T')), the
    sizes and leading dimensions integers (passed as the library's integers,
    32-bit for LP64 BLAS, 64-bit for ILP64), ``alpha`` and ``beta`` scalars of
    the matrix dtype, and ``a``, ``b``, ``c`` integer addresses of the first
    matrix entries. The scalars are stored on the stack and their addresses
    passed. An intrinsic (rather than a ctypes function object) keeps the
    address a run-time argument, so the compiled loop can be cached on disk.
    """
    sig = types.void(gemm, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        byte_ptr = ir.IntType(8).as_pointer()
        argtypes = signature.args
        integer = argtypes[0].types[1]          # the type of the zero beside the address

        def by_pointer(i, to_type):
            value = context.cast(builder, args[i], argtypes[i], to_type)
            slot = cgutils.alloca_once_value(builder, value)   # in the entry block
            return builder.bitcast(slot, byte_ptr)

        def address_of(i):
            return builder.inttoptr(args[i], byte_ptr)

        char = types.int8
        fortran_args = [by_pointer(1, char), by_pointer(2, char),
                        by_pointer(3, integer), by_pointer(4, integer), by_pointer(5, integer),
                        by_pointer(6, argtypes[6]), address_of(7), by_pointer(8, integer),
                        address_of(9), by_pointer(10, integer),
                        by_pointer(11, argtypes[11]), address_of(12), by_pointer(13, integer)]
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr] * 13)
        address = context.cast(builder, builder.extract_value(args[0], 0),
                               argtypes[0].types[0], types.intp)
        gemm = builder.inttoptr(address, fnty.as_pointer())
        builder.call(gemm, fortran_args)
        return context.get_dummy_value()

    return sig, codegen


_N, _T = ord("N"), ord("T")


@njit(inline="always")
def gemm_rows(gemm, a_rows, b_rows, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Row-major C (m, n) = alpha op(A) op(B) + beta C by the Fortran ``gemm``
    ((address, integer zero), :func:`kernels.blas.blas`).

    ``a``, ``b``, ``c``: addresses of the first entries. ``a_rows`` True when
    op(A) (m, k) is stored row-major (rows contiguous, row stride ``lda``),
    False when column-major (columns contiguous at stride ``lda``); likewise
    ``b_rows`` for op(B) (k, n). C is row-major with row stride ``ldc``.

    Fortran reads every matrix column-major, where a row-major storage is the
    transpose: C^T (n x m, ld ldc) = op(B)^T (n x k) op(A)^T (k x m), with
    'N' for an operand stored row-major and 'T' for one stored column-major.
    """
    _call_gemm(gemm, _N if b_rows else _T, _N if a_rows else _T, n, m, k, alpha, b, ldb,
               a, lda, beta, c, ldc)


#: how a product is cut into one block per thread (chosen by :func:`_split`)
ROWS, COLUMNS, INNER = 0, 1, 2


@njit(parallel=True, cache=True)
def _gemm_blocks(gemm, split, threads, a, a_rows, lda, b, b_rows, ldb, out, M, N, K,
                 one, zero):
    """op(A) @ op(B), (M, K) times (K, N), by one BLAS call per block, in parallel.

    ``split`` ROWS or COLUMNS: ``out`` is C (M, N), C-contiguous, and block
    t is a range of its rows (op(A)'s rows) or of its columns (op(B)'s
    columns), the other operand read whole. INNER: ``out`` is (threads, M, N)
    and block t the product of a range of op(A)'s columns with the same
    range of op(B)'s rows, written to out[t]; the caller adds them up.

    ``a`` is op(A)'s storage as a 1-D view from its first entry; ``a_rows``
    True when that storage is row-major (op(A)'s rows contiguous, row stride
    ``lda``), False when column-major (its columns contiguous at stride
    ``lda``). Likewise ``b``. Sizes in elements. ``threads`` is Numba's thread
    count, read by the caller (calling ``get_num_threads`` in here would keep
    the compiled loop from being cached).
    """
    length = M if split == ROWS else (N if split == COLUMNS else K)
    size = a.itemsize
    a_base, b_base, out_base = (np.int64(a.ctypes.data), np.int64(b.ctypes.data),
                                np.int64(out.ctypes.data))   # addresses, as signed ints
    for t in prange(threads):
        lo = t * length // threads
        hi = (t + 1) * length // threads
        if hi <= lo and split != INNER:
            continue
        m, n, k = M, N, K                   # this block's product: (m, k) times (k, n)
        a_off = b_off = c_off = 0
        if split == ROWS:                   # rows lo:hi of op(A) and of C
            m = hi - lo
            a_off = lo * lda if a_rows else lo
            c_off = lo * N
        elif split == COLUMNS:              # columns lo:hi of op(B) and of C
            n = hi - lo
            b_off = lo if b_rows else lo * ldb
            c_off = lo
        else:                               # columns lo:hi of op(A), rows lo:hi of op(B)
            k = hi - lo
            a_off = lo if a_rows else lo * lda
            b_off = lo * ldb if b_rows else lo
            c_off = t * M * N
        gemm_rows(gemm, a_rows, b_rows, m, n, k, one, a_base + a_off * size, lda,
                  b_base + b_off * size, ldb, zero, out_base + c_off * size, N)


def _split(M, N, K):
    """How to cut a product among threads: a long inner dimension (K at least
    twice M and N, e.g. a weight gradient summed over a batch of pixels) into
    K ranges, each thread reading its own part of both operands; otherwise
    C along its longer side."""
    if K >= 2 * max(M, N):
        return INNER
    return ROWS if M >= N else COLUMNS


def _gemm_addresses():
    """{dtype: (address of the chosen Fortran gemm, a zero of its integer type)}
    (:mod:`kernels.blas`; the first call sets BLAS to one thread)."""
    return blas().gemm


def _storage(x):
    """(first entry as a 1-D view, row-major?, leading dimension) of a 2-D array,
    read as :func:`kernels._arrays.blas_layout` reads it; an array BLAS cannot
    read as it is (no unit stride, negative strides) is copied to C order first.
    """
    row_major, ld = blas_layout(x)
    if row_major is not None:
        return _base_view(x), row_major, ld
    x = np.ascontiguousarray(x)
    return x.reshape(-1), True, max(x.shape[1], 1)


def _base_view(x):
    """A 1-D view starting at x's first entry and reaching its last (no copy): a
    reshape for a C- or Fortran-ordered x, else a strided view over its span."""
    if x.flags.c_contiguous:
        return x.reshape(-1)
    if x.flags.f_contiguous:
        return x.T.reshape(-1)
    span = (x.shape[0] - 1) * x.strides[0] + (x.shape[1] - 1) * x.strides[1] + x.itemsize
    return np.lib.stride_tricks.as_strided(x, shape=(span // x.itemsize,),
                                           strides=(x.itemsize,))


def _numpy_makes_the_call(a, b):
    """True where NumPy's ``matmul`` makes the one gemm call that this kernel makes on
    one thread, the same bits without the compiled loop's launch and the typing of its
    arguments (a large part of a small product's time, at batch 20): the chosen BLAS is NumPy's
    own (and set to one thread by :func:`kernels.blas.blas`); each operand is C- or
    Fortran-ordered (NumPy passes a transposed one with the transpose flag, as
    :func:`gemm_rows` does); C is not a single row or column (NumPy calls gemv) and
    the operands do not overlap (NumPy calls syrk for ``a @ a.T``)."""
    return (a.shape[0] > 1 and b.shape[1] > 1
            and (a.flags.c_contiguous or a.flags.f_contiguous)
            and (b.flags.c_contiguous or b.flags.f_contiguous)
            and not np.may_share_memory(a, b) and blas().name == "numpy")


def _check(a, b):
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"matmul: expected two 2-D arrays, got shapes {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: expected a (M, K) and a (K, N) array, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")


def _check_out(out, a, b):
    """ValueError unless ``out`` is None or a C-contiguous array of C's shape and dtype."""
    if out is None:
        return
    shape, dtype = (a.shape[0], b.shape[1]), np.result_type(a.dtype, b.dtype)
    if tuple(out.shape) != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"matmul: expected out, a C-contiguous {dtype} array of shape "
                         f"{shape}, got a{'' if out.flags.c_contiguous else ' strided'} "
                         f"{out.dtype} array of shape {tuple(out.shape)}")


def matmul(a, b, out=None):
    """C = a @ b for 2-D a (M, K) and b (K, N); returns a C-contiguous (M, N) array,
    ``out`` when given (a C-contiguous (M, N) array of a's dtype: no new array).

    NumPy float32/float64 operands of one dtype run on the kernel (any
    layout: transposed views are not copied); CuPy arrays go to cuBLAS, through
    CuPy's ``@`` or, inside :func:`kernels.cublas.capturable_products`, on that
    block's own handle; anything else, and small products, to
    :func:`matmul_reference`.
    """
    _check(a, b)
    M, K = a.shape
    N = b.shape[1]
    _check_out(out, a, b)
    impl = choose(a, b, strided=True)
    if impl == "cuda" and active_handle() is not None:   # a capturable cuBLAS call
        return active_handle().matmul(a, b, out)
    if impl != "cpu" or M * N * K < SMALL_PRODUCT or max(M, N, K) > _INT32_MAX:
        return matmul_reference(a, b, out)               # "cuda": CuPy's cuBLAS, a @ b
    if get_num_threads() == 1 and _numpy_makes_the_call(a, b):
        return np.matmul(a, b, out=out)
    a_flat, a_rows, lda = _storage(a)
    b_flat, b_rows, ldb = _storage(b)
    if max(lda, ldb) > _INT32_MAX:
        return matmul_reference(a, b, out)
    gemm = _gemm_addresses()[np.dtype(a.dtype)]
    threads = get_num_threads()
    split = _split(M, N, K)
    if split == INNER and threads > 1:             # partial products, added below
        blocks = np.empty((threads, M, N), dtype=a.dtype)
    else:                                          # C itself (one block: out[None])
        if out is None:
            out = np.empty((M, N), dtype=a.dtype)
        blocks = out.reshape(1, M, N) if split == INNER else out
    _gemm_blocks(gemm, split, threads, a_flat, a_rows, lda, b_flat, b_rows, ldb, blocks,
                 M, N, K, a.dtype.type(1), a.dtype.type(0))
    if split == INNER and threads > 1:             # added in a fixed order
        return blocks.sum(axis=0, out=out)
    return out

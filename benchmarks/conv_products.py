"""The matrix products of the fused conv kernels alone: the floor under a conv step.

A fused conv kernel (kernels/conv_gemm.py) builds each chunk's columns (im2col)
or gathers them back (col2im) around BLAS calls. :func:`record` notes, over one
training step, every call of its two CPU kernels (``_columns_cpu``,
``_transposed_cpu``): the products asked for, the geometry, the chunk size and
the threads. :func:`replay` then makes the same BLAS calls on the same threads,
chunk by chunk, on columns made once beforehand: what the step's convolutions
cost with no column built, gathered, biased or passed through a ReLU. With the
linear layers' products (benchmarks.common.record_products) and the Adam step it
is the floor under a conv model's step (bench_train.py ``--products``).
"""
import numpy as np
from numba import njit, prange

from kernels.gemm import gemm_rows
from kernels.im2col import conv_output_size

#: the products of one recorded call (POINTWISE: a 1x1 convolution's, one matmul)
FORWARD, WEIGHT, FORWARD_AND_WEIGHT, TRANSPOSED = "forward", "weight", "forward+weight", \
    "transposed"
POINTWISE = "pointwise"
_CODES = {FORWARD: 0, WEIGHT: 1, FORWARD_AND_WEIGHT: 2, TRANSPOSED: 3}


def record(run_once):
    """The fused conv kernel calls of one ``run_once()``, as dicts: kind, images N,
    rows per image P, columns per row ``width``, the other side of each product
    (O: forward outputs, D: weight-gradient rows, C: a transposed product's input
    channels; 0 where unused), ``chunk`` (images), ``threads`` and ``dtype``; and
    a 1x1 convolution's products (kind POINTWISE, its operands ``a``, ``b``)."""
    import kernels.conv_gemm as G

    records = []
    columns, transposed, matmul = G._columns_cpu, G._transposed_cpu, G.matmul

    def recording_matmul(a, b, out=None):        # a 1x1 convolution's plain product
        records.append({"kind": POINTWISE, "a": a, "b": b})
        return matmul(a, b, out=out)

    def recording_columns(*args):
        x, kh, kw, sh, sw, ph, pw = args[1:8]
        chunk, threads, forward, Wm, weight, R = args[10], args[11], args[14], args[15], \
            args[22], args[23]
        N, H, W, C = x.shape
        P = conv_output_size(H, kh, sh, ph) * conv_output_size(W, kw, sw, pw)
        kind = (FORWARD_AND_WEIGHT if forward and weight else FORWARD if forward else WEIGHT)
        records.append({"kind": kind, "N": N, "P": P, "width": kh * kw * C,
                        "O": Wm.shape[0] if forward else 0, "D": R.shape[1] if weight else 0,
                        "C": 0, "chunk": chunk, "threads": threads, "dtype": x.dtype})
        return columns(*args)

    def recording_transposed(*args):
        X, Wm, y, P, chunk, threads = args[1], args[2], args[4], args[5], args[15], args[16]
        records.append({"kind": TRANSPOSED, "N": y.shape[0], "P": P, "width": Wm.shape[1],
                        "O": 0, "D": 0, "C": Wm.shape[0], "chunk": chunk, "threads": threads,
                        "dtype": X.dtype})
        return transposed(*args)

    G._columns_cpu, G._transposed_cpu = recording_columns, recording_transposed
    G.matmul = recording_matmul
    try:
        run_once()
    finally:
        G._columns_cpu, G._transposed_cpu, G.matmul = columns, transposed, matmul
    return records


@njit(parallel=True, cache=True)
def _chunk_products(gemm, code, threads, N, P, chunk, width, O, D, C, one, zero, cols, W,
                    out, R, parts):
    """The BLAS calls of one fused kernel call, on thread t's images in chunks
    (as kernels/conv_gemm.py cuts them), with thread t's columns ``cols[t]``
    made beforehand: 0 forward out = cols W^T, 1 weight parts[t] += R^T cols,
    2 both, 3 transposed cols = R W (R: the input, C channels)."""
    size = cols.itemsize
    w_at, out_at = np.int64(W.ctypes.data), np.int64(out.ctypes.data)
    r_at, parts_at = np.int64(R.ctypes.data), np.int64(parts.ctypes.data)
    for t in prange(threads):
        lo, hi = t * N // threads, (t + 1) * N // threads
        cols_at = np.int64(cols[t].ctypes.data)
        beta = zero
        for n0 in range(lo, hi, chunk):
            rows = (min(n0 + chunk, hi) - n0) * P
            if code == 0 or code == 2:
                gemm_rows(gemm, True, False, rows, O, width, one, cols_at, width, w_at, width,
                          zero, out_at + n0 * P * O * size, O)
            if code == 1 or code == 2:
                gemm_rows(gemm, False, True, D, width, rows, one, r_at + n0 * P * D * size, D,
                          cols_at, width, beta, parts_at + t * D * width * size, width)
                beta = one
            if code == 3:
                gemm_rows(gemm, True, True, rows, width, C, one, r_at + n0 * P * C * size, C,
                          w_at, width, zero, cols_at, width)


def operands(rec, rng):
    """Random operands for one record: (cols (threads, chunk*P, width), W, out, R,
    parts), in its dtype."""
    dtype, threads, rows = rec["dtype"], rec["threads"], rec["N"] * rec["P"]

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)
    side = rec["C"] if rec["kind"] == TRANSPOSED else rec["O"]
    return (normal(threads, rec["chunk"] * rec["P"], rec["width"]),
            normal(max(side, 1), rec["width"]),
            np.empty((rows, max(rec["O"], 1)), dtype),
            normal(rows, max(rec["D"], rec["C"], 1)),
            np.empty((threads, max(rec["D"], 1), rec["width"]), dtype))


def replay(records, rng=None):
    """A function that makes the BLAS calls of every record, in order, on operands
    made once here (:func:`operands`); returns it and the operands."""
    from kernels.gemm import _gemm_addresses

    from kernels.gemm import matmul

    rng = np.random.default_rng(0) if rng is None else rng
    jobs = []
    for rec in records:
        if rec["kind"] == POINTWISE:
            jobs.append((rec, None))
            continue
        dtype = np.dtype(rec["dtype"])
        one, zero = dtype.type(1), dtype.type(0)
        buffers = operands(rec, rng)
        jobs.append(((_gemm_addresses()[dtype], _CODES[rec["kind"]], rec["threads"], rec["N"],
                      rec["P"], rec["chunk"], rec["width"], rec["O"], rec["D"], rec["C"], one,
                      zero) + buffers, buffers))

    def products():
        for args, _ in jobs:
            if isinstance(args, dict):
                matmul(args["a"], args["b"])
            else:
                _chunk_products(*args)
    return products, [buffers for _, buffers in jobs]

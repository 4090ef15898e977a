"""The matrix products of the fused conv kernels alone: the floor under a conv step.

A fused conv kernel (kernels/conv_gemm.py) builds each chunk's columns (im2col)
or gathers them back (col2im) around BLAS calls. :func:`record` notes, over one
training step, every call of its CPU kernels (``_columns_cpu``,
``_transposed_cpu``, and ``_class_columns_cpu``, ``_class_transposed_cpu`` of
the padded layers, which go by window classes): the products asked for, the
geometry (per class: its windows per image, its width and chunk), the chunk
sizes and the threads. :func:`replay` then makes the same BLAS calls on the same
threads, chunk by chunk, on columns made once beforehand: what the step's
convolutions cost with no column built, gathered, biased or passed through a
ReLU. With the linear layers' products (benchmarks.common.record_products) and
the Adam step it is the floor under a conv model's step (bench_train.py
``--products``).
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

    def class_record(kind, N, channels, width, bounds, starts, chunks, kw, threads, dtype,
                     **sides):
        counts, runs = np.diff(starts), (bounds[:, 3] - bounds[:, 2]) * channels
        widths = (bounds[:, 1] - bounds[:, 0]) * runs
        blocks = (bounds[:, 2] == 0) & (bounds[:, 3] == kw)      # columns: one block of W's
        rec = {"kind": kind, "N": N, "P": int(counts.sum()), "width": width, "O": 0, "D": 0,
               "C": 0, "chunk": 0, "threads": threads, "dtype": dtype,
               "classes": (counts, widths, np.asarray(chunks).copy(),
                           np.where(blocks, 0, runs))}
        rec.update(sides)
        records.append(rec)

    def recording_class_columns(*args):
        x, kw, bounds, starts, chunks, threads = args[1], args[2], args[8], args[9], \
            args[11], args[13]
        forward, Wm, weight, R, parts = args[16], args[17], args[26], args[27], args[28]
        kind = (FORWARD_AND_WEIGHT if forward and weight else FORWARD if forward else WEIGHT)
        class_record(kind, x.shape[0], x.shape[3], Wm.shape[1] if forward else parts.shape[2],
                     bounds, starts, chunks, kw, threads, x.dtype,
                     O=Wm.shape[0] if forward else 0, D=R.shape[1] if weight else 0)
        return class_columns(*args)

    def recording_class_transposed(*args):
        X, Wm, y, kw, bounds, starts, chunks, threads = args[1], args[2], args[6], args[7], \
            args[13], args[14], args[16], args[18]
        class_record(TRANSPOSED, y.shape[0], y.shape[3], Wm.shape[1], bounds, starts, chunks,
                     kw, threads, X.dtype, C=X.shape[1])
        return class_transposed(*args)

    class_columns, class_transposed = G._class_columns_cpu, G._class_transposed_cpu
    G._columns_cpu, G._transposed_cpu = recording_columns, recording_transposed
    G._class_columns_cpu = recording_class_columns
    G._class_transposed_cpu = recording_class_transposed
    G.matmul = recording_matmul
    try:
        run_once()
    finally:
        G._columns_cpu, G._transposed_cpu, G.matmul = columns, transposed, matmul
        G._class_columns_cpu, G._class_transposed_cpu = class_columns, class_transposed
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


@njit(parallel=True, cache=True)
def _class_products(gemm, code, threads, N, counts, widths, chunks, runs, O, D, C, one, zero,
                    cols, W, out, R, parts):
    """The BLAS calls of one fused call by window classes (kernels/conv_gemm.py's
    ``_class_*_cpu``): class by class, thread t's images in chunks of
    ``chunks[k]``, on its columns ``cols[t]`` made beforehand; ``runs[k]`` > 0:
    the class's weight gradient by one product per kernel row of ``runs[k]``
    columns. Codes as :func:`_chunk_products`."""
    size = cols.itemsize
    w_at, out_at = np.int64(W.ctypes.data), np.int64(out.ctypes.data)
    r_at = np.int64(R.ctypes.data)
    full = parts.shape[2]
    for t in prange(threads):
        lo, hi = t * N // threads, (t + 1) * N // threads
        cols_at = np.int64(cols[t].ctypes.data)
        part_at = np.int64(parts[t].ctypes.data)
        for k in range(counts.shape[0]):
            width = widths[k]
            if width == 0:
                continue
            for n0 in range(lo, hi, chunks[k]):
                rows = (min(n0 + chunks[k], hi) - n0) * counts[k]
                if code == 0 or code == 2:
                    gemm_rows(gemm, True, False, rows, O, width, one, cols_at, width, w_at,
                              width, zero, out_at, O)
                if code == 1 or code == 2:
                    if runs[k] == 0:
                        gemm_rows(gemm, False, True, D, width, rows, one, r_at, D, cols_at,
                                  width, one, part_at, full)
                    else:
                        for i in range(width // runs[k]):
                            gemm_rows(gemm, False, True, D, runs[k], rows, one, r_at, D,
                                      cols_at + i * runs[k] * size, width, one,
                                      part_at + i * runs[k] * size, full)
                if code == 3:
                    gemm_rows(gemm, True, True, rows, width, C, one, r_at, C, w_at, width,
                              zero, cols_at, width)


def operands(rec, rng):
    """Random operands for one record: (cols (threads, chunk*P, width), W, out, R,
    parts), in its dtype."""
    dtype, threads, rows = rec["dtype"], rec["threads"], rec["N"] * rec["P"]

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)
    side = rec["C"] if rec["kind"] == TRANSPOSED else rec["O"]
    if "classes" in rec:       # the largest class chunk's columns; W, out as large as any
        counts, widths, chunks, _ = rec["classes"]
        width = int(widths.max())
        return (normal(threads, int((chunks * counts * widths).max()), 1).reshape(threads, -1),
                normal(max(side, 1), width),
                np.empty((rows, max(rec["O"], 1)), dtype),
                normal(rows, max(rec["D"], rec["C"], 1)),
                np.zeros((threads, max(rec["D"], 1), int(widths.sum())), dtype))
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
        head = (_gemm_addresses()[dtype], _CODES[rec["kind"]], rec["threads"], rec["N"])
        if "classes" in rec:
            jobs.append(((_class_products, head + rec["classes"]
                          + (rec["O"], rec["D"], rec["C"], one, zero) + buffers), buffers))
        else:
            jobs.append(((_chunk_products, head + (rec["P"], rec["chunk"], rec["width"],
                                                   rec["O"], rec["D"], rec["C"], one, zero)
                          + buffers), buffers))

    def products():
        for args, _ in jobs:
            if isinstance(args, dict):
                matmul(args["a"], args["b"])
            else:
                args[0](*args[1])
    return products, [buffers for _, buffers in jobs]

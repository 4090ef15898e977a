"""Embedding (index -> learned vector) and the class-conditional bias.

- Embedding:  indices (any integer shape S) in [0, K), table (K, D)
              -> out = table[indices], shape S + (D,)   (``nn.Embedding``)
- ClassBias:  h (N, C, H, W), labels (N,) in [0, K), table (K, C)
              -> y = h + table[labels][:, :, None, None]

Both outputs are a gather of table rows, so both backwards are the adjoint
of a gather: a scatter-add of the upstream rows into a table of zeros,

    dtable[k] = sum over the positions s with indices[s] = k of dout[s].

It is computed deterministically (:func:`scatter_add_rows`): the sum of
each row is taken in the same order on every run.

Registry entries (gradient checks, generated tests, docs/derivations.md):
scratchvae/gradcheck/pixelcnn.py.
"""
import numpy as np

from kernels.gemm import matmul

from ..backend import check_float, check_shape, get_xp


def check_indices(op, name, indices, table):
    """``indices`` as an array of ``table``'s array module; ``ValueError`` naming
    ``op`` unless it holds integers in [0, K), K = the table's row count."""
    count = table.shape[0]
    indices = get_xp(table).asarray(indices)
    if indices.dtype.kind not in "iu":
        raise ValueError(f"{op}: expected integer {name} in [0, {count}), got dtype "
                         f"{indices.dtype}")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= count):
        raise ValueError(f"{op}: expected {name} in [0, {count}), got values from "
                         f"{int(indices.min())} to {int(indices.max())}")
    return indices


def scatter_add_rows(rows, indices, count):
    """dtable (count, D) with dtable[k] = sum of the rows r with indices[r] = k.

    rows (M, D), indices (M,). On NumPy the rows are grouped by index (a
    stable sort, so each group keeps the rows' order) and each group is
    summed by ``np.add.reduce`` along the rows, one row after another: the
    sums of ``np.add.at(table, indices, rows)``, bit for bit, without its
    slow per-row loop. Other array modules (CuPy, whose scatter-add uses
    atomics in no fixed order) use :func:`scatter_add_onehot`. Either way a
    run repeats bit for bit.
    """
    if get_xp(rows) is not np:
        return scatter_add_onehot(rows, indices, count)
    table = np.zeros((count, rows.shape[1]), dtype=rows.dtype)
    if rows.shape[0] == 0:
        return table
    order = np.argsort(indices, kind="stable")
    keys, grouped = indices[order], rows[order]
    bounds = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1], [True])))
    for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        np.add.reduce(grouped[start:stop], axis=0, out=table[keys[start]])
    return table


def scatter_add_onehot(rows, indices, count):
    """The same sums as the product onehot(indices)^T rows: one GEMM, its
    order of summation fixed. Costs count * M * D multiply-adds and a
    (count, M) matrix, small beside a network for a code book of hundreds."""
    xp = get_xp(rows)
    onehot = (xp.arange(count)[:, None] == indices[None, :]).astype(rows.dtype)
    return matmul(onehot, rows)


# --------------------------------------------------------------------------
# Embedding
# --------------------------------------------------------------------------

def embedding_forward(indices, table):
    """out[s] = table[indices[s]]: indices of any shape S, table (K, D) -> S + (D,).

    A gather: each output row is a copy of one table row. Returns
    ``(out, cache)``; the cache holds the indices and the table's shape.
    """
    op = "Embedding"
    check_shape(op, "table", table, (None, None))
    check_float(op, "table", table)
    indices = check_indices(op, "indices", indices, table)
    return table[indices], (indices, table.shape)


def embedding_backward(dout, cache):
    """dtable given dout = dL/dout of shape S + (D,).

    out[s, d] = table[indices[s], d], so d out[s, d] / d table[k, d] =
    1[indices[s] = k], and

        dtable[k, d] = sum_s 1[indices[s] = k] dout[s, d],

    a scatter-add of the rows of dout (:func:`scatter_add_rows`). Rows of
    the table no index picked get 0. The indices have no gradient.
    """
    indices, (count, dim) = cache
    check_shape("Embedding.backward", "upstream gradient", dout, tuple(indices.shape) + (dim,))
    check_float("Embedding.backward", "upstream gradient", dout)
    return scatter_add_rows(dout.reshape(-1, dim), indices.reshape(-1), count)


# --------------------------------------------------------------------------
# class-conditional bias
# --------------------------------------------------------------------------

def class_bias_forward(h, labels, table):
    """y[n, c, i, j] = h[n, c, i, j] + table[labels[n], c].

    The embedding of each image's label, a per-channel bias broadcast over
    the image's H x W positions. h (N, C, H, W), labels (N,), table (K, C).
    Returns ``(y, cache)``.
    """
    op = "ClassBias"
    check_shape(op, "table", table, (None, None))
    check_float(op, "table", table)
    check_shape(op, "input", h, (None, table.shape[1], None, None))
    check_float(op, "input", h, table.dtype)
    labels = check_indices(op, "labels", labels, table)
    check_shape(op, "labels", labels, (h.shape[0],))
    return h + table[labels][:, :, None, None], (labels, table.shape, h.shape)


def class_bias_backward(dy, cache):
    """dh and dtable given dy = dL/dy of shape (N, C, H, W).

    y is h plus a term without h, so dh = dy. The bias of image n is
    table[labels[n]], added at every position, so its gradient is
    dy summed over the positions, g[n, c] = sum_{i,j} dy[n, c, i, j], and
    the table's is the embedding's scatter-add of the rows g[n]:

        dtable[k, c] = sum_n 1[labels[n] = k] g[n, c].

    Returns ``(dh, dtable)``; dh is dy itself (the caller must not write
    into it).
    """
    labels, (count, channels), h_shape = cache
    check_shape("ClassBias.backward", "upstream gradient", dy, tuple(h_shape))
    check_float("ClassBias.backward", "upstream gradient", dy)
    return dy, scatter_add_rows(dy.sum(axis=(2, 3)), labels, count)

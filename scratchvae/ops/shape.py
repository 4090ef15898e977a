"""Shape ops: no arithmetic, so each backward only undoes the rearrangement.

A reshape moves no numbers, hence dL/dx is dL/dy read back in x's shape;
a concatenation copies blocks, hence dL/dx_k is the matching block of dL/dy.

Memory layout: the flattened values are always in the logical (C-order)
sequence, as in PyTorch (a Linear layer after Flatten sees (c, h, w) order).
Flatten hands its gradient back laid out in memory like its input was: a
channels-last image (see ops/conv.py) gets a channels-last gradient, so the
elementwise backward below it (a ReLU, comparing with its channels-last
output) and the convolution's backward see one layout and need no copy.
(Reshape's gradient comes back C-ordered; in the models its input is the
C-ordered output of a Linear layer.)

Registry entries (gradient checks, generated tests, docs/derivations.md):
scratchvae/gradcheck/dense.py.
"""
import math

from kernels.layout import ascontiguous

from ..backend import check_shape, get_xp, memory_order


def _in_layout(dx, order):
    """dx (logical shape of the input) laid out in memory in ``order``."""
    if order == tuple(range(dx.ndim)):
        return dx
    inverse = tuple(sorted(range(len(order)), key=order.__getitem__))
    return ascontiguous(dx.transpose(order)).transpose(inverse)


def flatten_forward(x):
    """(N, d1, d2, ...) -> (N, d1*d2*...).  Caches the input shape and memory order."""
    if x.ndim < 2:
        raise ValueError(f"Flatten: expected an input (N, d1, ...) with a batch axis and at "
                         f"least one more, got shape {tuple(x.shape)}")
    # a channels-last image is copied to the logical order (kernels.layout, in parallel)
    return ascontiguous(x).reshape(x.shape[0], -1), (x.shape, memory_order(x))


def flatten_backward(dy, cache):
    """dx = dy reshaped to the input shape (in the input's memory layout)."""
    in_shape, order = cache
    check_shape("Flatten.backward", "upstream gradient", dy,
                (in_shape[0], math.prod(in_shape[1:])))
    return _in_layout(dy.reshape(in_shape), order)


def reshape_forward(x, shape):
    """(N, ...) -> (N, *shape); the batch axis is kept.  Caches both shapes."""
    target = math.prod(shape)
    if x.ndim < 1 or math.prod(x.shape[1:]) != target:
        raise ValueError(f"Reshape: expected an input with {target} values per sample "
                         f"to reshape to (N, {', '.join(map(str, shape))}), got shape {tuple(x.shape)}")
    out_shape = (x.shape[0],) + tuple(shape)
    return x.reshape(out_shape), (x.shape, out_shape)


def reshape_backward(dy, cache):
    """dx = dy reshaped back to the input shape."""
    in_shape, out_shape = cache
    check_shape("Reshape.backward", "upstream gradient", dy, out_shape)
    return ascontiguous(dy).reshape(in_shape)       # a copy only for a dy not C-ordered


def concat_forward(xs, axis=1):
    """y = [x_1 | x_2 | ...] along ``axis``.  Caches the sizes along ``axis`` and y's shape."""
    if not xs:
        raise ValueError("Concat: expected at least one input, got none")
    ref = xs[0]
    for i, x in enumerate(xs[1:], 1):
        if x.ndim != ref.ndim or any(a != b for k, (a, b) in enumerate(zip(x.shape, ref.shape))
                                     if k != axis % ref.ndim):
            raise ValueError(f"Concat: expected input {i} to match input 0 except along axis "
                             f"{axis}, got shapes {tuple(ref.shape)} and {tuple(x.shape)}")
        if x.dtype != ref.dtype:
            raise ValueError(f"Concat: expected input {i} of dtype {ref.dtype}, got {x.dtype}")
    sizes = [x.shape[axis] for x in xs]
    y = get_xp(*xs).concatenate(xs, axis=axis)
    return y, (sizes, axis, y.shape)


def concat_backward(dy, cache):
    """dx_k = the block of dy that x_k was copied to.  Returns a list."""
    sizes, axis, out_shape = cache
    check_shape("Concat.backward", "upstream gradient", dy, out_shape)
    bounds = [0]
    for s in sizes:
        bounds.append(bounds[-1] + s)
    index = [slice(None)] * dy.ndim
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        index[axis] = slice(a, b)
        out.append(dy[tuple(index)])
    return out

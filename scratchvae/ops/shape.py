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

Through a ReLU before them. When the input x is a ReLU's output (x = max(u, 0)),
``input_relu=True`` returns dL/du = dx 1[x > 0] instead, the ReLU's backward
(ops.activations.relu_backward's values) made in the copy that rearranges dx
(kernels/layout.py); Sequential (scratchvae/layers/dense.py) uses it so that
the ReLU's backward needs no pass of its own. The caches hold x for it (a
reference: in the models x is a ReLU's output, which the ReLU keeps anyway,
the input images, or logits whose reshaped view the loss holds).

Registry entries (gradient checks, generated tests, docs/derivations.md):
scratchvae/gradcheck/dense.py.
"""
import math

from kernels.layout import ascontiguous

from ..backend import check_shape, get_xp, memory_order


def _in_layout(dx, order, relu_output=None):
    """dx (logical shape of the input) laid out in memory in ``order`` (the memory
    order of ``relu_output`` too, when given: then dx where relu_output > 0, else 0)."""
    gate = None if relu_output is None else relu_output.transpose(order)
    if order == tuple(range(dx.ndim)):
        return dx if gate is None else ascontiguous(dx, relu_output=gate)
    inverse = tuple(sorted(range(len(order)), key=order.__getitem__))
    return ascontiguous(dx.transpose(order), relu_output=gate).transpose(inverse)


def flatten_forward(x):
    """(N, d1, d2, ...) -> (N, d1*d2*...).  Caches the input and its memory order."""
    if x.ndim < 2:
        raise ValueError(f"Flatten: expected an input (N, d1, ...) with a batch axis and at "
                         f"least one more, got shape {tuple(x.shape)}")
    # a channels-last image is copied to the logical order (kernels.layout, in parallel)
    return ascontiguous(x).reshape(x.shape[0], -1), (x, memory_order(x))


def flatten_backward(dy, cache, input_relu=False):
    """dx = dy reshaped to the input shape (in the input's memory layout);
    ``input_relu``: dx 1[x > 0] (module docstring)."""
    x, order = cache
    check_shape("Flatten.backward", "upstream gradient", dy,
                (x.shape[0], math.prod(x.shape[1:])))
    return _in_layout(dy.reshape(x.shape), order, x if input_relu else None)


def reshape_forward(x, shape):
    """(N, ...) -> (N, *shape); the batch axis is kept.  Caches the input and the output shape."""
    target = math.prod(shape)
    if x.ndim < 1 or math.prod(x.shape[1:]) != target:
        raise ValueError(f"Reshape: expected an input with {target} values per sample "
                         f"to reshape to (N, {', '.join(map(str, shape))}), got shape {tuple(x.shape)}")
    out_shape = (x.shape[0],) + tuple(shape)
    return x.reshape(out_shape), (x, out_shape)


def reshape_backward(dy, cache, input_relu=False):
    """dx = dy reshaped back to the input shape; ``input_relu``: dx 1[x > 0]
    (module docstring)."""
    x, out_shape = cache
    check_shape("Reshape.backward", "upstream gradient", dy, out_shape)
    gate = None
    if input_relu:       # x laid out as dx is: C order (else one copy of x's values)
        gate = ascontiguous(x).reshape(out_shape)
    # a copy only for a dy not C-ordered or a ReLU to pass through
    return ascontiguous(dy, relu_output=gate).reshape(x.shape)


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

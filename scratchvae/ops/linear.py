"""Linear (fully connected) op: y = x W^T + b, PyTorch weight layout.

Shapes: x (N, in), W (out, in), b (out,), y (N, out).

The products run on :func:`kernels.gemm.matmul` (BLAS, one block per
thread of scratchvae's pool; ``a @ b`` for CuPy arrays).

Registry entry (gradient checks, generated tests, docs/derivations.md):
scratchvae/gradcheck/dense.py.
"""
from kernels.gemm import matmul
from kernels.relu import add_bias, relu_forward

from ..backend import check_float, check_shape


def linear_forward(x, W, b=None, relu=False):
    """y[n, o] = sum_i x[n, i] W[o, i] + b[o].  Returns ``(y, cache)``.

    ``relu=True`` returns max(y, 0) instead: the ReLU that follows the layer,
    applied with the bias in one pass over y (:func:`kernels.relu.add_bias`;
    ops.activations.relu_forward's values). The cache is the same, and the
    ReLU's backward stays the ReLU's.
    """
    out_features, in_features = W.shape
    check_shape("Linear", "input", x, (None, in_features))
    check_float("Linear", "input", x, W.dtype)
    y = matmul(x, W.T)                      # a new C-contiguous array
    if b is not None:
        add_bias(y, b, relu=relu)
    elif relu:
        relu_forward(y, out=y)
    return y, (x, W)


def linear_backward(dy, cache, need_dx=True, dW_out=None, db_out=None):
    """Gradients of a scalar loss L given dy = dL/dy, shape (N, out).

    From y[n, o] = sum_i x[n, i] W[o, i] + b[o]:

    - dL/dx[n, i] = sum_o dy[n, o] W[o, i]   ->  dx = dy W
    - dL/dW[o, i] = sum_n dy[n, o] x[n, i]   ->  dW = dy^T x
    - dL/db[o]    = sum_n dy[n, o]           ->  db = dy summed over rows

    Returns ``(dx, dW, db)``; ``dx`` is None when ``need_dx`` is False (the
    first layer of a network: nothing upstream wants dL/dx, and skipping it
    saves one matrix product as large as the forward's). ``dW_out``/``db_out``:
    arrays of W's/b's shape that receive dW/db (a parameter's gradient buffer:
    no new array), or None.
    """
    x, W = cache
    check_shape("Linear.backward", "upstream gradient", dy, (x.shape[0], W.shape[0]))
    check_float("Linear.backward", "upstream gradient", dy, W.dtype)
    dx = matmul(dy, W) if need_dx else None
    dW = matmul(dy.T, x, out=dW_out)
    db = dy.sum(axis=0, out=db_out)
    return dx, dW, db


def linear_init(rng, in_features, out_features, dtype, bias=True):
    """PyTorch's default ``nn.Linear`` initialisation.

    ``kaiming_uniform_(a=sqrt(5))`` on W reduces to U(-1/sqrt(in), 1/sqrt(in));
    the bias is drawn from the same interval. ``rng`` is a NumPy generator:
    parameters are created on the host and moved to a device afterwards, so
    the initial weights do not depend on the device.
    """
    bound = 1.0 / in_features ** 0.5
    W = rng.uniform(-bound, bound, size=(out_features, in_features)).astype(dtype)
    b = rng.uniform(-bound, bound, size=(out_features,)).astype(dtype) if bias else None
    return W, b

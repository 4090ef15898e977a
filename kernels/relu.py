"""ReLU's forward and backward, each in one parallel pass; a bias added with the ReLU.

Forward: y = max(x, 0), into a new array or in place (``out=x``). NumPy's
``maximum`` gives the same values but runs on one thread and, unless told
otherwise, allocates; in the conv VAE a ReLU follows every convolution and
linear layer, on arrays of up to 128x32x14x14 values. NaN stays NaN and
-0 becomes +0, as with ``np.maximum(x, 0)`` (and ``torch.relu``).

Backward: dx = dy where y > 0, else 0.

Math. y = max(x, 0) has derivative 1 for x > 0 and 0 for x < 0 (0 is
taken at the kink x = 0, as PyTorch does), and y > 0 exactly where x > 0,
so the forward output is all the backward needs:

    dx = dy * 1[y > 0].

Why a kernel. The NumPy expression ``dy * (y > 0)`` makes two passes (a
boolean mask, then a multiply that casts it) and allocates the mask; the
kernel reads dy and y once and writes dx once.

Layout. Elementwise work does not care about the order of the elements, only
that dy, y and dx agree on it. The conv ops return channels-last arrays
(NCHW shape, NHWC memory; see scratchvae/ops/conv.py), so the kernel is not
restricted to C-contiguous arrays: any *dense* layout works, provided dy and
y share it. Both are viewed in their memory order (axes sorted by
decreasing stride, a C-contiguous view for a dense array), flattened, and dx
is allocated with y's layout (``empty_like``). Arrays that are not dense, or
whose layouts differ, go to the reference.

Bias. :func:`add_bias` adds a linear layer's bias to its output and applies
the ReLU after it in one pass (y = max(y + b, 0)), where ``y += b`` and a
ReLU would make two, the first on one thread.

Three implementations of the forward and the backward
(:mod:`kernels._dispatch`): a Numba CPU kernel (parallel over elements), a
Numba CUDA kernel (grid-stride loop) and the plain ``xp`` reference; two of
:func:`add_bias` (for CuPy arrays: CuPy's add, then the ReLU's CUDA kernel).
The kernels call one function per element, :func:`_relu` and
:func:`_relu_grad`. The backward selects, never multiplies: dx = dy where
y > 0, else 0, so a NaN or infinite dy where y <= 0 gives 0 (as PyTorch's
``threshold_backward``). Kernels and references agree bit for bit.
"""
import functools

from numba import njit, prange
from numba.extending import register_jitable

from ._arrays import check_float, check_same, get_xp, memory_order
from ._dispatch import CUDA_THREADS, choose, cuda_grid, cuda_stream


@register_jitable
def _relu(v):
    """max(v, 0) of one number: NaN stays NaN; -0 and negatives give +0."""
    return v if (v > 0 or v != v) else 0


@register_jitable
def _relu_grad(dy, y):
    """dx of one element: dy where y > 0, else 0 (a selection, never a product)."""
    return dy if y > 0 else 0


def relu_forward_reference(x, out=None):
    """y = max(x, 0) in plain ``xp``, into ``out`` when given."""
    return get_xp(x).maximum(x, 0, out=out)


@njit(parallel=True, cache=True)
def _relu_forward_cpu(x, y):
    """x, y: 1-D C-contiguous of one dtype (possibly the same array)."""
    for i in prange(x.size):
        y[i] = _relu(x[i])


def relu_forward(x, out=None):
    """y = max(x, 0) with x's shape, dtype and memory layout.

    ``out``: None for a new array, or x itself to compute in place (then x
    must not be needed by anything else). Returns y.
    """
    check_float("relu_forward", "input", x)
    if out is not None and out is not x:
        raise ValueError("relu_forward: expected out=None or out=x (in place), "
                         "got another array")
    order = memory_order(x)
    x_view = x.transpose(order)
    impl = choose(x_view)                      # dense, in some memory order?
    if impl == "reference":
        return relu_forward_reference(x, out)
    y = x if out is not None else get_xp(x).empty_like(x)   # x is dense: y gets its layout
    y_view = y.transpose(order)
    if not y_view.flags.c_contiguous:          # pragma: no cover - an xp without order 'K'
        return relu_forward_reference(x, out)
    flat = [v.reshape(-1) for v in (x_view, y_view)]        # views, no copies
    if impl == "cpu":
        _relu_forward_cpu(*flat)
    else:
        _relu_forward_cuda(*flat)
    return y


def add_bias_reference(y, b, relu=False):
    """y += b (b (O,) along y's last axis), then y = max(y, 0) when ``relu``: in
    place, in plain ``xp``; returns y."""
    y += b
    return relu_forward_reference(y, out=y) if relu else y


@njit(parallel=True, cache=True)
def _add_bias_cpu(y, b, relu):
    """y (N, O) C-contiguous, b (O,): rows in parallel."""
    N, O = y.shape
    for n in prange(N):
        if relu:
            for o in range(O):
                y[n, o] = _relu(y[n, o] + b[o])
        else:
            for o in range(O):
                y[n, o] = y[n, o] + b[o]


def add_bias(y, b, relu=False):
    """y += b, then max(y, 0) when ``relu``, in place: a linear layer's bias and
    the ReLU after it in one pass over y (N, O); b (O,). Returns y.

    The same values as ``y += b`` followed by :func:`relu_forward` (one
    rounding of the sum, then the ReLU's rule). NumPy's ``+=`` runs on one
    thread; the kernel takes the rows in parallel.
    """
    check_float("add_bias", "output", y)
    if y.ndim != 2 or b.shape != (y.shape[1],):
        raise ValueError(f"add_bias: expected y (N, O) and a bias (O,), got shapes "
                         f"{tuple(y.shape)} and {tuple(b.shape)}")
    if b.dtype != y.dtype:
        raise ValueError(f"add_bias: expected a bias of dtype {y.dtype}, got {b.dtype}")
    impl = choose(y, b)
    if impl == "reference":
        return add_bias_reference(y, b, relu)
    if impl == "cuda":                         # CuPy's add, then the ReLU's CUDA kernel
        y += b
        return relu_forward(y, out=y) if relu else y
    _add_bias_cpu(y, b, relu)
    return y


def relu_backward_reference(dy, y):
    """dx = dy where y > 0, else 0, in plain ``xp`` (a selection: dy * (y > 0)
    would turn a NaN or infinite dy where y <= 0 into NaN, and -dy into -0)."""
    return get_xp(y).where(y > 0, dy, 0)


@njit(parallel=True, cache=True)
def _relu_backward_cpu(dy, y, dx):
    """dy, y, dx: 1-D C-contiguous of one dtype."""
    for i in prange(dy.size):
        dx[i] = _relu_grad(dy[i], y[i])


def relu_backward(dy, y):
    """dx = dy where y > 0, else 0; dx has y's shape, dtype and memory layout."""
    check_float("relu_backward", "output", y)
    check_same("relu_backward", "output", y, "upstream gradient", dy)
    order = memory_order(y)
    dy_view, y_view = dy.transpose(order), y.transpose(order)
    impl = choose(dy_view, y_view)             # both C-contiguous in y's memory order?
    if impl == "reference":
        return relu_backward_reference(dy, y)
    dx = get_xp(y).empty_like(y)               # y is dense: dx gets its layout
    dx_view = dx.transpose(order)
    if not dx_view.flags.c_contiguous:         # pragma: no cover - an xp without order 'K'
        return relu_backward_reference(dy, y)
    flat = [v.reshape(-1) for v in (dy_view, y_view, dx_view)]   # views, no copies
    if impl == "cpu":
        _relu_backward_cpu(*flat)
    else:
        _relu_backward_cuda(*flat)
    return dx


@functools.lru_cache(maxsize=None)
def _cuda_kernel():
    global cuda  # a module global, so that the CUDA simulator can replace it
    from numba import cuda

    @cuda.jit
    def relu_forward_kernel(x, y):
        start = cuda.grid(1)
        step = cuda.gridsize(1)
        for i in range(start, x.size, step):
            y[i] = _relu(x[i])

    @cuda.jit
    def relu_backward_kernel(dy, y, dx):
        start = cuda.grid(1)
        step = cuda.gridsize(1)
        for i in range(start, dy.size, step):
            dx[i] = _relu_grad(dy[i], y[i])

    return relu_forward_kernel, relu_backward_kernel


def _relu_forward_cuda(x, y):
    if x.size:
        kernel = _cuda_kernel()[0]
        kernel[cuda_grid(x.size), CUDA_THREADS, cuda_stream(x)](x, y)


def _relu_backward_cuda(dy, y, dx):
    if dy.size:
        kernel = _cuda_kernel()[1]
        kernel[cuda_grid(dy.size), CUDA_THREADS, cuda_stream(dy)](dy, y, dx)

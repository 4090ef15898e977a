"""The fused conv products (kernels/conv_gemm.py) against the unfused references
(im2col / col2im references and a plain product): the three column strategies
(index tables, runs, window classes), odd geometries, bias or not, both dtypes,
any chunk size, fewer images than threads, one thread; what takes the reference
instead; the ReLU epilogues against separate passes of kernels/relu.py; the
errors."""
import numba
import numpy as np
import pytest

import kernels.conv_gemm as G
from kernels._dispatch import ENV_VAR
from kernels.im2col import TABLE_CHANNELS, conv_output_size
from kernels.relu import relu_backward_reference, relu_forward_reference

#: (N, H, W, C, kernel, stride, padding): C <= 3 takes the index tables, C > 3
#: the window classes when padded, else the runs (C >= 16: col2im's vector
#: path); stride 1-3, padding 0-3, kernel 1-5
GEOMETRIES = [
    (3, 7, 6, 1, (4, 3), (2, 1), (1, 0)),
    (2, 5, 5, 3, (5, 5), (3, 3), (2, 2)),
    (4, 9, 8, 4, (3, 3), (1, 2), (2, 1)),
    (5, 14, 14, 32, (4, 4), (2, 2), (1, 1)),
    (1, 6, 7, 17, (2, 1), (1, 1), (0, 1)),
    (7, 4, 5, 2, (1, 3), (2, 1), (0, 1)),     # a 1-wide kernel that is not pointwise
    (3, 8, 7, 5, (3, 2), (2, 1), (0, 0)),     # no padding: the runs
    (2, 2, 3, 5, (2, 2), (1, 2), (3, 2)),     # windows wholly in the padding: empty classes
]


def _strategy(geometry):
    C, padding = geometry[3], geometry[6]
    return "tables" if C <= TABLE_CHANNELS else ("classes" if any(padding) else "runs")
D = 6                                         # the other side of every product


@pytest.fixture(autouse=True)
def _auto_dispatch(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


_PRODUCTS = {(True, True): "forward+weight", (True, False): "forward", (False, True): "weight"}


@pytest.fixture
def fused_calls(monkeypatch):
    """The products each fused CPU kernel call made, and its column strategy."""
    calls = []
    real = {name: getattr(G, name) for name in ("_columns_cpu", "_transposed_cpu",
                                                "_class_columns_cpu", "_class_transposed_cpu")}

    def columns(*args):       # use_table, forward and weight at 8, 14, 22
        calls.append((_PRODUCTS[(args[14], args[22])], "tables" if args[8] else "runs"))
        return real["_columns_cpu"](*args)

    def transposed(*args):    # use_table at 12
        calls.append(("transposed", "tables" if args[12] else "runs"))
        return real["_transposed_cpu"](*args)

    def class_columns(*args):  # forward and weight at 16, 26
        calls.append((_PRODUCTS[(args[16], args[26])], "classes"))
        return real["_class_columns_cpu"](*args)

    def class_transposed(*args):
        calls.append(("transposed", "classes"))
        return real["_class_transposed_cpu"](*args)
    for name, fake in (("_columns_cpu", columns), ("_transposed_cpu", transposed),
                       ("_class_columns_cpu", class_columns),
                       ("_class_transposed_cpu", class_transposed)):
        monkeypatch.setattr(G, name, fake)
    return calls


def _inputs(geometry, dtype, rng):
    N, H, W, C, k, s, p = geometry
    OH, OW = conv_output_size(H, k[0], s[0], p[0]), conv_output_size(W, k[1], s[1], p[1])
    x = rng.standard_normal((N, H, W, C)).astype(dtype)
    Wm = rng.standard_normal((D, k[0] * k[1] * C)).astype(dtype)    # forward: (O=D, width)
    Wt = rng.standard_normal((D, k[0] * k[1] * C)).astype(dtype)    # transposed: (C'=D, width)
    R = rng.standard_normal((N * OH * OW, D)).astype(dtype)         # a row per column row
    return x, Wm, Wt, R


def _assert_close(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype and got.flags.c_contiguous
    tol = 1e-12 if got.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max(initial=0)))


def _all_products(x, Wm, Wt, R, k, s, p, bias_fwd, bias_tr):
    """((fused, reference), ...) for the three products, and the two of
    conv_forward_and_weight_products."""
    both = G.conv_forward_and_weight_products(x, Wm, R, k, s, p)
    return [(G.conv_forward_product(x, Wm, k, s, p, bias_fwd),
             G.conv_forward_product_reference(x, Wm, k, s, p, bias_fwd)),
            (G.conv_transposed_product(R, Wt, x.shape, k, s, p, bias_tr),
             G.conv_transposed_product_reference(R, Wt, x.shape, k, s, p, bias_tr)),
            (G.conv_weight_product(x, R, k, s, p),
             G.conv_weight_product_reference(x, R, k, s, p)),
            (both[0], G.conv_forward_product_reference(x, Wm, k, s, p)),
            (both[1], G.conv_weight_product_reference(x, R, k, s, p))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_fused_products_match_the_unfused_references(geometry, with_bias, dtype, fused_calls):
    rng = np.random.default_rng(0)
    x, Wm, Wt, R = _inputs(geometry, dtype, rng)
    k, s, p = geometry[4:]
    b_fwd = rng.standard_normal(D).astype(dtype) if with_bias else None
    b_tr = rng.standard_normal(x.shape[3]).astype(dtype) if with_bias else None
    for fused, reference in _all_products(x, Wm, Wt, R, k, s, p, b_fwd, b_tr):
        _assert_close(fused, reference)
    way = _strategy(geometry)
    assert fused_calls == [("forward+weight", way), ("forward", way), ("transposed", way),
                           ("weight", way)]


@pytest.mark.parametrize("budget", [1, 40_000, 1 << 30])    # one image, a few, all at once
@pytest.mark.parametrize("images", [0, 1, 7])     # none; fewer than threads; uneven chunks
def test_any_chunk_size_and_share_of_images_gives_the_same_products(images, budget,
                                                                     monkeypatch):
    geometry = (images, 9, 8, 4, (3, 3), (1, 2), (2, 1))
    rng = np.random.default_rng(1)
    x, Wm, Wt, R = _inputs(geometry, np.float64, rng)
    k, s, p = geometry[4:]
    bias = rng.standard_normal(D), rng.standard_normal(4)
    monkeypatch.setattr(G, "CHUNK_BYTES", budget)
    monkeypatch.setattr(G, "WEIGHT_CHUNK_BYTES", budget)
    for fused, reference in _all_products(x, Wm, Wt, R, k, s, p, *bias):
        _assert_close(fused, reference)


def test_one_thread_gives_the_same_products():
    geometry = GEOMETRIES[3]
    x, Wm, Wt, R = _inputs(geometry, np.float64, np.random.default_rng(2))
    k, s, p = geometry[4:]
    two = [f for f, _ in _all_products(x, Wm, Wt, R, k, s, p, None, None)]
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one = [f for f, _ in _all_products(x, Wm, Wt, R, k, s, p, None, None)]
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(one, two):
        _assert_close(a, b)


def test_pointwise_products_are_plain_matrix_products(fused_calls):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4, 5))
    Wm, R, b = rng.standard_normal((6, 5)), rng.standard_normal((24, 6)), rng.standard_normal(6)
    one = ((1, 1), (1, 1), (0, 0))
    X = x.reshape(24, 5)
    _assert_close(G.conv_forward_product(x, Wm, *one, b), X @ Wm.T + b)
    _assert_close(G.conv_transposed_product(R, Wm, x.shape[:3] + (5,), *one, None),
                  (R @ Wm).reshape(2, 3, 4, 5))
    _assert_close(G.conv_weight_product(x, R, *one), R.T @ X)
    assert fused_calls == []


@pytest.mark.parametrize("case", ["strided input", "reference forced"])
def test_other_inputs_take_the_references(case, fused_calls, monkeypatch):
    geometry = GEOMETRIES[2]
    x, Wm, Wt, R = _inputs(geometry, np.float64, np.random.default_rng(4))
    k, s, p = geometry[4:]
    if case == "strided input":
        x = np.asfortranarray(x)          # same values, not C-contiguous
        R = np.asfortranarray(R)
    else:
        monkeypatch.setenv(ENV_VAR, "reference")
    for fused, reference in _all_products(x, Wm, Wt, R, k, s, p, None, None):
        _assert_close(fused, reference)
    assert fused_calls == []


def test_the_comparison_catches_a_missing_bias(monkeypatch):
    """The references have teeth: a forward kernel that forgets the bias fails."""
    geometry = GEOMETRIES[3]
    x, Wm, _, _ = _inputs(geometry, np.float64, np.random.default_rng(5))
    k, s, p = geometry[4:]
    bias = np.ones(D)
    real = G._class_columns_cpu
    monkeypatch.setattr(G, "_class_columns_cpu",            # has_bias is argument 21
                        lambda *args: real(*args[:21], False, *args[22:]))
    with pytest.raises(AssertionError):
        _assert_close(G.conv_forward_product(x, Wm, k, s, p, bias),
                      G.conv_forward_product_reference(x, Wm, k, s, p, bias))


def test_bad_shapes_are_refused():
    x = np.zeros((2, 6, 6, 3))
    k, s, p = (3, 3), (1, 1), (1, 1)
    with pytest.raises(ValueError, match=r"conv_forward_product: expected a weight matrix of "
                                         r"shape \(\*, 27\), got \(4, 26\)"):
        G.conv_forward_product(x, np.zeros((4, 26)), k, s, p)
    with pytest.raises(ValueError, match=r"expected a bias of shape \(4,\), got \(3,\)"):
        G.conv_forward_product(x, np.zeros((4, 27)), k, s, p, np.zeros(3))
    with pytest.raises(ValueError, match=r"conv_transposed_product: expected an input of "
                                         r"shape \(72, \*\), got \(70, 4\)"):
        G.conv_transposed_product(np.zeros((70, 4)), np.zeros((4, 27)), x.shape, k, s, p)
    with pytest.raises(ValueError, match=r"conv_weight_product: expected a matrix R of "
                                         r"shape \(72, \*\), got \(72,\)"):
        G.conv_weight_product(x, np.zeros(72), k, s, p)
    with pytest.raises(ValueError, match="expected a 4-D"):
        G.conv_forward_product(np.zeros((6, 6, 3)), np.zeros((4, 27)), k, s, p)
    with pytest.raises(ValueError, match=r"conv_forward_and_weight_products: expected a "
                                         r"matrix R of shape \(72, \*\), got \(71, 2\)"):
        G.conv_forward_and_weight_products(x, np.zeros((4, 27)), np.zeros((71, 2)), k, s, p)


def _relu_output_like(shape, dtype, rng):
    """A ReLU's output: exact zeros (about half), positives, and one NaN (a NaN
    input stays NaN through the ReLU; its gradient is 0)."""
    r = np.maximum(rng.standard_normal(shape), 0).astype(dtype)
    r.reshape(-1)[r.size // 2] = np.nan
    return r


def _same_bits(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got.view(np.uint8), np.ascontiguousarray(want).view(np.uint8))


@pytest.mark.parametrize("dispatch", ["auto", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES + [(2, 3, 4, 5, (1, 1), (1, 1), (0, 0))])
def test_relu_epilogues_equal_the_separate_passes_bit_for_bit(geometry, dtype, dispatch,
                                                              monkeypatch):
    """relu=True is max(., 0) of the product, relu_output r keeps the product where
    r > 0: kernels/relu.py's reference rules on the same product, bit for bit,
    fused (the CPU kernels, chunk by chunk), pointwise (last geometry) or unfused."""
    if dispatch == "reference":
        monkeypatch.setenv(ENV_VAR, "reference")
    rng = np.random.default_rng(6)
    x, Wm, Wt, R = _inputs(geometry, dtype, rng)
    k, s, p = geometry[4:]
    b_fwd = rng.standard_normal(D).astype(dtype)
    b_tr = rng.standard_normal(x.shape[3]).astype(dtype)

    Y = G.conv_forward_product(x, Wm, k, s, p, b_fwd)
    _same_bits(G.conv_forward_product(x, Wm, k, s, p, b_fwd, relu=True),
               relu_forward_reference(Y))
    gate = _relu_output_like(Y.shape, dtype, rng)
    _same_bits(G.conv_forward_product(x, Wm, k, s, p, b_fwd, relu_output=gate),
               relu_backward_reference(Y, gate))

    y = G.conv_transposed_product(R, Wt, x.shape, k, s, p, b_tr)
    _same_bits(G.conv_transposed_product(R, Wt, x.shape, k, s, p, b_tr, relu=True),
               relu_forward_reference(y))
    gate = _relu_output_like(y.shape, dtype, rng)
    _same_bits(G.conv_transposed_product(R, Wt, x.shape, k, s, p, b_tr, relu_output=gate),
               relu_backward_reference(y, gate))

    Y, dW = G.conv_forward_and_weight_products(x, Wm, R, k, s, p)
    gate = _relu_output_like(Y.shape, dtype, rng)
    Y_gated, dW_gated = G.conv_forward_and_weight_products(x, Wm, R, k, s, p,
                                                           relu_output=gate)
    _same_bits(Y_gated, relu_backward_reference(Y, gate))
    _same_bits(dW_gated, dW)


def test_the_epilogue_comparison_catches_a_kernel_without_it(monkeypatch):
    """The epilogue tests have teeth: a forward kernel that skips its ReLU fails."""
    geometry = GEOMETRIES[3]
    x, Wm, _, _ = _inputs(geometry, np.float64, np.random.default_rng(7))
    k, s, p = geometry[4:]
    real = G._class_columns_cpu
    monkeypatch.setattr(G, "_class_columns_cpu",            # relu is argument 23
                        lambda *args: real(*args[:23], False, *args[24:]))
    with pytest.raises(AssertionError):
        _same_bits(G.conv_forward_product(x, Wm, k, s, p, relu=True),
                   relu_forward_reference(G.conv_forward_product(x, Wm, k, s, p)))


def test_bad_relu_epilogues_are_refused():
    x = np.zeros((2, 6, 6, 3))
    Wm = np.zeros((4, 27))
    k, s, p = (3, 3), (1, 1), (1, 1)
    with pytest.raises(ValueError, match="conv_forward_product: expected relu=True or a "
                                         "relu_output, not both"):
        G.conv_forward_product(x, Wm, k, s, p, relu=True, relu_output=np.zeros((72, 4)))
    with pytest.raises(ValueError, match=r"conv_transposed_product: expected a relu_output "
                                         r"of shape \(2, 6, 6, 3\) and dtype float64 \(the "
                                         r"result's\), got \(2, 6, 6, 4\) and float64"):
        G.conv_transposed_product(np.zeros((72, 4)), np.zeros((4, 27)), x.shape, k, s, p,
                                  relu_output=np.zeros((2, 6, 6, 4)))
    with pytest.raises(ValueError, match=r"got \(72, 4\) and float32"):
        G.conv_forward_product(x, Wm, k, s, p, relu_output=np.zeros((72, 4), np.float32))
    with pytest.raises(ValueError, match="conv_forward_and_weight_products: expected a "
                                         "C-contiguous relu_output"):
        G.conv_forward_and_weight_products(x, Wm, np.zeros((72, 2)), k, s, p,
                                           relu_output=np.zeros((4, 72)).T)


def test_without_classes_padded_products_take_the_runs(fused_calls, monkeypatch):
    """BY_CLASSES off (benchmarks/bench_window_classes.py's other setting): the padded
    products of many channels run over the full columns, to the same values."""
    monkeypatch.setattr(G, "BY_CLASSES", False)
    geometry = GEOMETRIES[3]
    x, Wm, Wt, R = _inputs(geometry, np.float64, np.random.default_rng(8))
    k, s, p = geometry[4:]
    for fused, reference in _all_products(x, Wm, Wt, R, k, s, p, None, None):
        _assert_close(fused, reference)
    assert fused_calls == [("forward+weight", "runs"), ("forward", "runs"),
                           ("transposed", "runs"), ("weight", "runs")]

"""Conv2d / ConvTranspose2d: ops against direct loops and PyTorch, gradient checks,
adjointness, initialisation, modules and argument validation."""
import numpy as np
import pytest

import scratchvae.layers.conv as conv_layers
from kernels import conv_gemm
from kernels import im2col as K
from kernels._dispatch import ENV_VAR
from scratchvae.gradcheck import REGISTRY, check_names, check_op, checks, run_check
from scratchvae.gradcheck import conv as conv_family
from scratchvae.layers import Flatten, Linear, ReLU, Reshape, Sequential
from scratchvae.layers.conv import Conv2d, ConvTranspose2d
from scratchvae.models import build_model
from scratchvae.ops import activations as activation_ops
from scratchvae.ops.activations import relu_backward, relu_forward
from scratchvae.ops.conv import (conv2d_backward, conv2d_forward, conv2d_init,
                                 conv_transpose2d_backward, conv_transpose2d_forward,
                                 conv_transpose2d_init)

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is only a test/benchmark aid
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")


@pytest.fixture(autouse=True)
def _auto_dispatch(monkeypatch):
    """The default dispatch whatever $SCRATCHVAE_KERNELS the shell exports: with
    "reference" exported, kernel-vs-reference tests would compare the reference with
    itself. Tests that want the reference set it themselves."""
    monkeypatch.delenv(ENV_VAR, raising=False)


# --------------------------------------------------------------------------
# direct-loop definitions (obviously right, slow; tiny inputs only)
# --------------------------------------------------------------------------

def naive_conv2d(x, W, b, stride, padding):
    """y[n, o, p, q] = b[o] + sum_{c,i,j} W[o, c, i, j] x[n, c, p*sh + i - ph, q*sw + j - pw]."""
    (sh, sw), (ph, pw) = stride, padding
    N, C, H, Wd = x.shape
    O, _, KH, KW = W.shape
    OH, OW = (H + 2 * ph - KH) // sh + 1, (Wd + 2 * pw - KW) // sw + 1
    y = np.zeros((N, O, OH, OW))
    for n in range(N):
        for o in range(O):
            for p in range(OH):
                for q in range(OW):
                    s = 0.0 if b is None else b[o]
                    for c in range(C):
                        for i in range(KH):
                            for j in range(KW):
                                h, w = p * sh + i - ph, q * sw + j - pw
                                if 0 <= h < H and 0 <= w < Wd:
                                    s += W[o, c, i, j] * x[n, c, h, w]
                    y[n, o, p, q] = s
    return y


def naive_conv_transpose2d(x, W, b, stride, padding, output_padding):
    """Input pixel (p, q) adds x[n, c, p, q] W[c, o, i, j] to y[n, o, p*sh + i - ph, q*sw + j - pw]."""
    (sh, sw), (ph, pw), (oph, opw) = stride, padding, output_padding
    N, C, H, Wd = x.shape
    _, O, KH, KW = W.shape
    OH = (H - 1) * sh - 2 * ph + KH + oph
    OW = (Wd - 1) * sw - 2 * pw + KW + opw
    y = np.zeros((N, O, OH, OW))
    for n in range(N):
        for c in range(C):
            for p in range(H):
                for q in range(Wd):
                    for o in range(O):
                        for i in range(KH):
                            for j in range(KW):
                                h, w = p * sh + i - ph, q * sw + j - pw
                                if 0 <= h < OH and 0 <= w < OW:
                                    y[n, o, h, w] += x[n, c, p, q] * W[c, o, i, j]
    if b is not None:
        y += b.reshape(1, O, 1, 1)
    return y


def _pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


# (N, C, H, W, O, kernel, stride, padding)
CONV_CASES = [
    (2, 3, 7, 6, 4, (3, 2), (2, 1), (1, 0)),
    (1, 2, 5, 5, 3, 3, 1, 1),
    (3, 2, 8, 7, 2, 4, 2, 1),
    (2, 1, 6, 9, 2, (1, 3), (3, 2), (2, 1)),
    (2, 3, 4, 5, 2, 1, 1, 0),                # 1x1: no im2col
    (1, 2, 3, 3, 2, 3, 1, 0),                # output 1x1
]
# (N, C, H, W, O, kernel, stride, padding, output_padding)
CONVT_CASES = [
    (2, 3, 4, 3, 2, (3, 2), (2, 3), (1, 0), (1, 2)),
    (2, 2, 3, 3, 3, 4, 2, 1, 0),
    (1, 2, 3, 4, 2, 3, 3, 2, 1),
    (2, 2, 2, 3, 3, (2, 4), (1, 2), (0, 1), (0, 1)),
    (2, 3, 4, 5, 2, 1, 1, 0, 0),             # 1x1: no col2im
]


def _conv_inputs(case, rng, bias=True):
    N, C, H, W, O, k, s, p = case
    kh, kw = _pair(k)
    return (rng.standard_normal((N, C, H, W)), rng.standard_normal((O, C, kh, kw)),
            rng.standard_normal(O) if bias else None, _pair(s), _pair(p))


def _convt_inputs(case, rng, bias=True):
    N, C, H, W, O, k, s, p, op = case
    kh, kw = _pair(k)
    return (rng.standard_normal((N, C, H, W)), rng.standard_normal((C, O, kh, kw)),
            rng.standard_normal(O) if bias else None, _pair(s), _pair(p), _pair(op))


# --------------------------------------------------------------------------
# forward: direct loops and PyTorch
# --------------------------------------------------------------------------

@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_forward_matches_direct_loop(case, bias):
    x, W, b, s, p = _conv_inputs(case, np.random.default_rng(0), bias)
    y, _ = conv2d_forward(x, W, b, s, p)
    np.testing.assert_allclose(y, naive_conv2d(x, W, b, s, p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CONVT_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose2d_forward_matches_direct_loop(case, bias):
    x, W, b, s, p, op = _convt_inputs(case, np.random.default_rng(0), bias)
    y, _ = conv_transpose2d_forward(x, W, b, s, p, op)
    np.testing.assert_allclose(y, naive_conv_transpose2d(x, W, b, s, p, op),
                               rtol=1e-12, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_torch_forward_and_backward(case):
    rng = np.random.default_rng(1)
    x, W, b, s, p = _conv_inputs(case, rng)
    y, cache = conv2d_forward(x, W, b, s, p)
    dy = rng.standard_normal(y.shape)
    dx, dW, db = conv2d_backward(dy, cache)
    xt, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    yt = F.conv2d(xt, Wt, bt, stride=s, padding=p)
    yt.backward(torch.tensor(dy))
    for ours, theirs in [(y, yt), (dx, xt.grad), (dW, Wt.grad), (db, bt.grad)]:
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-10)


@needs_torch
@pytest.mark.parametrize("case", CONVT_CASES)
def test_conv_transpose2d_matches_torch_forward_and_backward(case):
    rng = np.random.default_rng(2)
    x, W, b, s, p, op = _convt_inputs(case, rng)
    y, cache = conv_transpose2d_forward(x, W, b, s, p, op)
    dy = rng.standard_normal(y.shape)
    dx, dW, db = conv_transpose2d_backward(dy, cache)
    xt, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    yt = F.conv_transpose2d(xt, Wt, bt, stride=s, padding=p, output_padding=op)
    yt.backward(torch.tensor(dy))
    for ours, theirs in [(y, yt), (dx, xt.grad), (dW, Wt.grad), (db, bt.grad)]:
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-10)


@needs_torch
def test_conv_vae_shapes_float32_match_torch():
    """The conv-VAE layers at float32: same outputs as PyTorch to float32 round-off."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    enc1 = Conv2d(1, 32, 4, 2, 1, rng=rng)
    enc2 = Conv2d(32, 64, 4, 2, 1, rng=rng)
    dec1 = ConvTranspose2d(64, 32, 4, 2, 1, rng=rng)
    dec2 = ConvTranspose2d(32, 1, 4, 2, 1, rng=rng)
    t = {name: torch.tensor(m.weight.data) for name, m in
         [("e1", enc1), ("e2", enc2), ("d1", dec1), ("d2", dec2)]}
    tb = {name: torch.tensor(m.bias.data) for name, m in
          [("e1", enc1), ("e2", enc2), ("d1", dec1), ("d2", dec2)]}
    h = enc2(enc1(x))
    out = dec2(dec1(h))
    ht = F.conv2d(F.conv2d(torch.tensor(x), t["e1"], tb["e1"], 2, 1), t["e2"], tb["e2"], 2, 1)
    outt = F.conv_transpose2d(F.conv_transpose2d(ht, t["d1"], tb["d1"], 2, 1),
                              t["d2"], tb["d2"], 2, 1)
    assert h.shape == (4, 64, 7, 7) and out.shape == (4, 1, 28, 28)
    assert h.dtype == np.float32 and out.dtype == np.float32
    np.testing.assert_allclose(h, ht.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, outt.numpy(), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------

#: the catalogue's convolution checks (scratchvae/gradcheck/conv.py), as (name, run) pairs
CONV_CHECKS = [check for spec in conv_family.SPECS for check in spec.catalogue()]


def test_conv_gradchecks_pass():
    results = [run(np.random.default_rng(0)) for _, run in CONV_CHECKS]
    assert len(results) >= 10
    for r in results:
        assert r.passed, str(r)
        assert r.max_error <= 1e-7


#: the fused CPU kernels of kernels/conv_gemm.py, and where their ``use_table``
#: argument is (True: im2col/col2im by index tables, False: by runs); None: the
#: kernels by window classes (padded images of more channels)
CPU_KERNELS = {"_columns_cpu": 8, "_transposed_cpu": 12, "_class_columns_cpu": None,
               "_class_transposed_cpu": None}
#: the conv op functions, as the gradient checks and the layers call them
PHASES = {"conv2d_forward": "Conv2d forward", "conv2d_backward": "Conv2d backward",
          "conv_transpose2d_forward": "ConvTranspose2d forward",
          "conv_transpose2d_backward": "ConvTranspose2d backward"}


def _kernels_run_by(monkeypatch, named_checks):
    """Run gradient checks; return {(phase, strategy, dtype)} of every fused
    CPU kernel call they made (strategy: how its im2col/col2im ran), the phase
    being the conv op function (forward or backward of which op) running."""
    phase, seen = [None], set()
    for fname, tag in PHASES.items():
        op, direction = fname.rsplit("_", 1)
        # the layers' calls, and the registry entry's (the catalogue's op checks)
        for owner, attr in ((conv_layers, fname), (REGISTRY[op], direction)):
            def tagged(*args, _f=getattr(owner, attr), _tag=tag, **kwargs):
                phase[0] = _tag
                try:
                    return _f(*args, **kwargs)
                finally:
                    phase[0] = None
            monkeypatch.setattr(owner, attr, tagged)
    for kname, where in CPU_KERNELS.items():
        def spy(*args, _f=getattr(conv_gemm, kname), _where=where):
            if _where is None:
                strategy = "classes"
            else:
                assert isinstance(args[_where], bool)
                strategy = "table" if args[_where] else "runs"
            seen.add((phase[0], strategy, args[1].dtype))
            return _f(*args)
        monkeypatch.setattr(conv_gemm, kname, spy)
    for name, fn in named_checks:
        result = fn(np.random.default_rng(0))
        assert result.passed, str(result)
    return seen


def test_conv_gradchecks_run_every_cpu_strategy(monkeypatch):
    """The float64 checks of scratchvae/gradcheck/conv.py send each op's forward and backward
    through the index-table kernels (images of <= TABLE_CHANNELS channels), the
    window classes (more channels, padded) and the run kernels (more channels,
    no padding): all three are checked, not only the one the small test shapes
    happen to pick."""
    assert K.TABLE_CHANNELS == 3
    seen = _kernels_run_by(monkeypatch, CONV_CHECKS)
    assert seen == {(phase, strategy, np.dtype(np.float64)) for phase in PHASES.values()
                    for strategy in ("runs", "table", "classes")}
    assert set(dict(CONV_CHECKS)) <= set(check_names())    # all in the catalogue


def test_conv_vae_gradcheck_runs_the_window_classes(monkeypatch):
    """The whole-model check with hidden layers of 4 and 5 channels reaches the
    kernels by window classes (its padded layers of more than TABLE_CHANNELS
    channels, as the full model's) in every conv phase (the (3, 4) instances
    only the tables)."""
    name = "conv-vae loss (Bernoulli, 4x4 images, channels (4, 5))"
    seen = _kernels_run_by(monkeypatch, [(name, dict(checks())[name])])
    assert {(phase, np.dtype(np.float64)) for phase, strategy, dtype in seen
            if strategy == "classes"} == {(phase, np.dtype(np.float64))
                                          for phase in PHASES.values()}


@pytest.mark.parametrize("op", ["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("channels", [3, 5])    # dy's side: index-table and run kernels
def test_backward_is_the_same_for_any_layout_of_dy(op, channels):
    """dx, dW, db do not depend on how the upstream gradient is laid out in memory."""
    rng = np.random.default_rng(17)
    if op == "conv2d":
        x, W = rng.standard_normal((2, channels, 7, 6)), rng.standard_normal((4, channels, 3, 2))
        y, cache = conv2d_forward(x, W, rng.standard_normal(4), 2, 1)
        backward = conv2d_backward
    else:
        x, W = rng.standard_normal((2, 4, 4, 3)), rng.standard_normal((4, channels, 3, 2))
        y, cache = conv_transpose2d_forward(x, W, rng.standard_normal(channels), 2, 1, 1)
        backward = conv_transpose2d_backward
    dy = rng.standard_normal(y.shape)                    # C-contiguous
    flipped = np.ascontiguousarray(dy[:, ::-1, ::-1, ::-1])
    nhwc = np.ascontiguousarray(dy.transpose(0, 2, 3, 1))
    layouts = {"Fortran order": np.asfortranarray(dy),
               "negative strides": flipped[:, ::-1, ::-1, ::-1],     # a view of flipped
               "channels-last": nhwc.transpose(0, 3, 1, 2)}          # what the ops return
    for need_dx in (True, False):
        expected = backward(dy, cache, need_dx=need_dx)
        for layout, d in layouts.items():
            assert not d.flags.c_contiguous and np.array_equal(d, dy)
            for name, got, want in zip(("dx", "dW", "db"), backward(d, cache, need_dx=need_dx),
                                       expected):
                if want is None:
                    assert got is None
                else:
                    np.testing.assert_array_equal(got, want, err_msg=f"{name}, dy in {layout}")


def _wrong_dx_conv2d_backward(dy, cache):
    """The classic flip mistake: dx from a transposed convolution with W flipped in space."""
    dx, dW, db = conv2d_backward(dy, cache)
    x_nhwc, Wm, (O, C, KH, KW), stride, padding = cache
    W = Wm.reshape(O, KH, KW, C).transpose(0, 3, 1, 2)      # the weight again
    H, Wd = x_nhwc.shape[1:3]
    op = ((H + 2 * padding[0] - KH) % stride[0], (Wd + 2 * padding[1] - KW) % stride[1])
    flipped = np.ascontiguousarray(W[:, :, ::-1, ::-1])
    dx_bad, _ = conv_transpose2d_forward(dy, flipped, None, stride, padding, op)
    return dx_bad, dW, db


def _double_dW_conv2d_backward(dy, cache):
    dx, dW, db = conv2d_backward(dy, cache)
    return dx, 2 * dW, db


def _transposed_dW_convt_backward(dy, cache):
    dx, dW, db = conv_transpose2d_backward(dy, cache)
    return dx, np.ascontiguousarray(dW[:, :, ::-1, ::-1]), db


@pytest.mark.parametrize("bad_backward, wrong", [
    (_wrong_dx_conv2d_backward, "x"), (_double_dW_conv2d_backward, "W")])
def test_gradcheck_catches_a_wrong_conv2d_backward(bad_backward, wrong):
    rng = np.random.default_rng(4)
    x, W, b, s, p = _conv_inputs((2, 2, 6, 5, 3, 3, (2, 1), 1), rng)
    inputs = {"x": x, "W": W, "b": b, "stride": s, "padding": p}
    result = check_op("bad conv2d", conv2d_forward, bad_backward, inputs, ("x", "W", "b"),
                      rng=rng)
    assert not result.passed
    assert result.worst() == wrong and result.errors[wrong] > 1e-2
    # the correct backward passes the same check
    good = check_op("conv2d", conv2d_forward, conv2d_backward, inputs, ("x", "W", "b"), rng=rng)
    assert good.passed, str(good)


def test_gradcheck_catches_a_wrong_conv_transpose2d_backward():
    rng = np.random.default_rng(5)
    x, W, b, s, p, op = _convt_inputs((2, 2, 3, 3, 2, 3, 2, 1, 1), rng)
    inputs = {"x": x, "W": W, "b": b, "stride": s, "padding": p, "output_padding": op}
    result = check_op("bad convT", conv_transpose2d_forward, _transposed_dW_convt_backward,
                      inputs, ("x", "W", "b"), rng=rng)
    assert not result.passed and result.worst() == "W" and result.errors["W"] > 1e-2


# --------------------------------------------------------------------------
# adjointness and the reuse of one op in the other's backward
# --------------------------------------------------------------------------

ADJOINT_CASES = [  # (N, A, B, H, W, kernel, stride, padding): conv maps A -> B channels
    (2, 3, 4, 9, 8, (3, 2), (2, 1), (1, 0)),
    (3, 2, 5, 14, 14, 4, 2, 1),
    (1, 2, 2, 7, 10, (2, 5), (3, 2), (2, 2)),
    (2, 3, 2, 5, 5, 1, 1, 0),
]


@pytest.mark.parametrize("case", ADJOINT_CASES)
def test_conv_transpose2d_is_the_adjoint_of_conv2d(case):
    """<conv2d(x; W), y> == <x, conv_transpose2d(y; W)> for W of shape (B, A, KH, KW)."""
    N, A, B, H, Wd, k, s, p = case
    kh, kw = _pair(k)
    s, p = _pair(s), _pair(p)
    rng = np.random.default_rng(6)
    W = rng.standard_normal((B, A, kh, kw))
    x = rng.standard_normal((N, A, H, Wd))
    cx, _ = conv2d_forward(x, W, None, s, p)
    y = rng.standard_normal(cx.shape)
    # output_padding recovers the input size lost to the floor in the conv output size
    op = ((H + 2 * p[0] - kh) % s[0], (Wd + 2 * p[1] - kw) % s[1])
    ty, _ = conv_transpose2d_forward(y, W, None, s, p, op)
    assert ty.shape == x.shape
    lhs, rhs = np.vdot(cx, y), np.vdot(x, ty)
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), np.vdot(np.abs(cx), np.abs(y)))
    # and each op's input gradient *is* the other op
    dx, _, _ = conv2d_backward(y, conv2d_forward(x, W, None, s, p)[1])
    np.testing.assert_array_equal(dx, ty)
    _, cache = conv_transpose2d_forward(y, W, None, s, p, op)
    dy, _, _ = conv_transpose2d_backward(x, cache)
    np.testing.assert_array_equal(dy, cx)


def test_need_dx_false_skips_only_dx():
    rng = np.random.default_rng(7)
    x, W, b, s, p = _conv_inputs((2, 3, 7, 6, 4, 3, 2, 1), rng)
    y, cache = conv2d_forward(x, W, b, s, p)
    dy = rng.standard_normal(y.shape)
    full, partial = conv2d_backward(dy, cache), conv2d_backward(dy, cache, need_dx=False)
    assert partial[0] is None
    np.testing.assert_array_equal(full[1], partial[1])
    np.testing.assert_array_equal(full[2], partial[2])
    x, W, b, s, p, op = _convt_inputs((2, 3, 4, 3, 2, 3, 2, 1, 1), rng)
    y, cache = conv_transpose2d_forward(x, W, b, s, p, op)
    dy = rng.standard_normal(y.shape)
    full, partial = conv_transpose2d_backward(dy, cache), conv_transpose2d_backward(
        dy, cache, need_dx=False)
    assert partial[0] is None
    np.testing.assert_array_equal(full[1], partial[1])
    np.testing.assert_array_equal(full[2], partial[2])


def test_relu_options_of_the_ops_are_the_relu_ops_bit_for_bit():
    """relu=True is relu_forward of the output; input_relu=True is relu_backward of
    the input gradient with the cached input (a ReLU's output) as y."""
    rng = np.random.default_rng(16)
    for dtype in (np.float32, np.float64):
        x, W, b, s, p = (a.astype(dtype) if isinstance(a, np.ndarray) else a
                         for a in _conv_inputs((2, 3, 7, 6, 4, 3, 2, 1), rng))
        x = np.maximum(x, 0)                                   # a ReLU's output
        y, cache = conv2d_forward(x, W, b, s, p)
        y_relu, cache_relu = conv2d_forward(x, W, b, s, p, relu=True)
        _same_bits(y_relu, relu_forward(y.copy())[0])
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx, dW, db = conv2d_backward(dy, cache)
        du, dW2, db2 = conv2d_backward(dy, cache_relu, input_relu=True)
        for got, want in ((du, relu_backward(dx, x)), (dW2, dW), (db2, db)):
            _same_bits(got, want)
        xt, Wt, bt, st, pt, opt = _convt_inputs((2, 5, 4, 3, 4, (3, 2), 2, 1, 1), rng)
        xt, Wt, bt = (np.maximum(xt, 0).astype(dtype), Wt.astype(dtype), bt.astype(dtype))
        z, cache = conv_transpose2d_forward(xt, Wt, bt, st, pt, opt)
        _same_bits(conv_transpose2d_forward(xt, Wt, bt, st, pt, opt, relu=True)[0],
                   relu_forward(z.copy())[0])
        dz = rng.standard_normal(z.shape).astype(dtype)
        dx, dW, db = conv_transpose2d_backward(dz, cache)
        du, dW2, db2 = conv_transpose2d_backward(dz, cache, input_relu=True)
        for got, want in ((du, relu_backward(dx, xt)), (dW2, dW), (db2, db)):
            _same_bits(got, want)


def _same_bits(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(np.ascontiguousarray(got).view(np.uint8),
                                  np.ascontiguousarray(want).view(np.uint8))


def _relu_stack(dtype, fuse_relu, inplace=True):
    """A stack with a ReLU at every place Sequential fuses one (next to a
    convolution: tables and runs, Conv2d and ConvTranspose2d, a 1x1 convolution;
    after a Linear; before Flatten and Reshape, their gradients channels-last)
    and one whose backward it does not (a ReLU before a Linear)."""
    kw = dict(rng=np.random.default_rng(17), dtype=dtype)
    return Sequential(Conv2d(1, 3, 4, 2, 1, **kw), ReLU(inplace),
                      Conv2d(3, 8, 3, 1, 1, **kw), ReLU(inplace),
                      ConvTranspose2d(8, 5, 4, 2, 1, **kw), ReLU(inplace),
                      Conv2d(5, 4, 1, **kw), ReLU(inplace), Flatten(),
                      Linear(320, 24, **kw), ReLU(inplace), Reshape(6, 2, 2),
                      ConvTranspose2d(6, 2, 4, 2, 1, **kw), Flatten(),
                      Linear(32, 6, **kw), ReLU(inplace), Linear(6, 5, **kw),
                      fuse_relu=fuse_relu)


@pytest.mark.parametrize("inplace", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequential_fuses_the_relus_next_to_layers_bit_for_bit(dtype, inplace,
                                                                      monkeypatch):
    rng = np.random.default_rng(18)
    x = rng.standard_normal((3, 1, 10, 8)).astype(dtype)
    results, calls = [], {"forward": 0, "backward": 0}
    real_forward, real_backward = activation_ops.relu_forward, activation_ops.relu_backward

    def counted(kind, real):
        def run(*args, **kwargs):
            calls[kind] += 1
            return real(*args, **kwargs)
        return run
    monkeypatch.setattr(activation_ops, "relu_forward", counted("forward", real_forward))
    monkeypatch.setattr(activation_ops, "relu_backward", counted("backward", real_backward))
    for fuse in (True, False):
        net = _relu_stack(dtype, fuse, inplace)
        y = net.forward(x.copy())
        g = rng.standard_normal(y.shape).astype(dtype) if fuse else g
        dx = net.backward(g)
        results.append([y, dx] + [p.grad for p in net.parameters()])
        if fuse:   # only the ReLU before the last Linear runs its own backward
            assert calls == {"forward": 0, "backward": 1}
    assert calls == {"forward": 6, "backward": 7}
    for fused, separate in zip(*results):
        _same_bits(fused, separate)


def test_a_fusion_that_drops_the_relu_gradient_fails_the_gradient_check(monkeypatch):
    """The catalogue's fused-ReLU check has teeth: a Conv2d backward that ignores
    input_relu (the ReLU's backward skipped, nothing in its place) fails it."""
    name = ("Sequential(Conv2d, ReLU, Conv2d, ReLU, ConvTranspose2d, ReLU, Conv2d 1x1), "
            "ReLUs fused")
    assert run_check(name).passed
    real = Conv2d.backward
    monkeypatch.setattr(Conv2d, "backward", lambda self, dy, input_relu=False: real(self, dy))
    assert not run_check(name).passed


@pytest.mark.parametrize("layer", [Flatten, Reshape])
def test_a_shape_layer_that_drops_the_relu_gradient_fails_the_gradient_check(layer,
                                                                              monkeypatch):
    """The fused check of the dense and shape layers has teeth: a Flatten or Reshape
    backward that ignores input_relu (the ReLU's backward skipped) fails it."""
    name = "Sequential(Linear, ReLU, Reshape, Conv2d 1x1, ReLU, Flatten, Linear), ReLUs fused"
    assert run_check(name).passed
    real = layer.backward
    monkeypatch.setattr(layer, "backward", lambda self, dy, input_relu=False: real(self, dy))
    assert not run_check(name).passed


def test_modules_walks_every_module_below_parents_first():
    """Module.modules(): the model, its Sequentials and their layers, lists included
    (the conv CVAE's encoder holds two Sequentials and a Concat)."""
    model = build_model("conv-cvae")
    found = list(model.modules())
    assert found[0] is model and len(found) == len({id(m) for m in found})
    stacks = [m for m in found if isinstance(m, Sequential)]
    assert stacks == [model.encoder.features, model.encoder.head, model.decoder.net]
    for stack in stacks:
        assert all(layer in found for layer in stack.layers)
        assert found.index(stack) < min(found.index(layer) for layer in stack.layers)
    assert sum(isinstance(m, Conv2d) for m in found) == 2


def test_reference_kernels_agree(monkeypatch):
    """The fused kernels and the unfused references (SCRATCHVAE_KERNELS=reference)
    give the same passes to float64 rounding (BLAS blocks the products differently)."""
    rng = np.random.default_rng(8)
    x, W, b, s, p = _conv_inputs((2, 3, 9, 8, 4, (3, 2), (2, 1), (1, 0)), rng)
    xt, Wt, bt, st, pt, opt = _convt_inputs((2, 3, 4, 3, 2, (3, 2), (2, 3), (1, 0), (1, 2)), rng)

    def run():
        y, c = conv2d_forward(x, W, b, s, p)
        z, ct = conv_transpose2d_forward(xt, Wt, bt, st, pt, opt)
        return (y, *conv2d_backward(np.ones_like(y), c), z,
                *conv_transpose2d_backward(np.ones_like(z), ct))

    fast = run()
    monkeypatch.setenv("SCRATCHVAE_KERNELS", "reference")
    slow = run()
    for a, b_ in zip(fast, slow):
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-12)


def test_non_contiguous_input():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 6, 3, 2)).transpose(3, 2, 0, 1)    # (2, 3, 5, 6), a view
    W = rng.standard_normal((4, 3, 3, 3))
    y, _ = conv2d_forward(x, W, None, 2, 1)
    np.testing.assert_array_equal(y, conv2d_forward(np.ascontiguousarray(x), W, None, 2, 1)[0])
    z, _ = conv_transpose2d_forward(x, W.transpose(1, 0, 2, 3), None, 2, 1, 1)
    np.testing.assert_allclose(z, naive_conv_transpose2d(x, W.transpose(1, 0, 2, 3), None,
                                                         (2, 2), (1, 1), (1, 1)), atol=1e-12)


def test_outputs_are_channels_last():
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, 8, 7))
    W1, W2 = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((5, 4, 2, 2))
    y, _ = conv2d_forward(x, W1, None, 1, 1)
    assert y.shape == (2, 4, 8, 7) and y.transpose(0, 2, 3, 1).flags.c_contiguous
    z, cache = conv2d_forward(np.maximum(y, 0), W2, None, 2, 0)   # layout kept by numpy
    np.testing.assert_allclose(z, naive_conv2d(np.maximum(y, 0), W2, None, (2, 2), (0, 0)),
                               atol=1e-12)
    dx, _, _ = conv2d_backward(np.ones_like(z), cache)
    assert dx.transpose(0, 2, 3, 1).flags.c_contiguous
    t, _ = conv_transpose2d_forward(y, W2.transpose(1, 0, 2, 3), None, 2, 0)
    assert t.transpose(0, 2, 3, 1).flags.c_contiguous


def test_pointwise_conv_skips_im2col(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("im2col/col2im called for a 1x1 convolution")

    for name in ("_columns_cpu", "_transposed_cpu", "im2col_reference",
                 "col2im_reference"):
        monkeypatch.setattr(conv_gemm, name, boom)
    rng = np.random.default_rng(15)
    x, W = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((6, 3, 1, 1))
    y, cache = conv2d_forward(x, W)
    np.testing.assert_allclose(y, np.einsum("oc,nchw->nohw", W[:, :, 0, 0], x), atol=1e-12)
    conv2d_backward(np.ones_like(y), cache)
    z, cache = conv_transpose2d_forward(y, W)
    conv_transpose2d_backward(np.ones_like(z), cache)
    conv_transpose2d_backward(np.ones_like(z), cache, need_dx=False)


def test_float32_stays_float32():
    rng = np.random.default_rng(10)
    x, W, b, s, p = (a.astype(np.float32) if isinstance(a, np.ndarray) else a
                     for a in _conv_inputs((2, 3, 7, 6, 4, 3, 2, 1), rng))
    y, cache = conv2d_forward(x, W, b, s, p)
    grads = conv2d_backward(np.ones_like(y), cache)
    assert y.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    y64, _ = conv2d_forward(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64),
                            s, p)
    np.testing.assert_allclose(y, y64, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------

@pytest.mark.parametrize("make, fan_in", [
    (lambda rng: Conv2d(16, 48, (3, 5), rng=rng), 16 * 3 * 5),
    (lambda rng: ConvTranspose2d(16, 48, (3, 5), rng=rng), 48 * 3 * 5),   # fan-in from dim 1
    (lambda rng: ConvTranspose2d(64, 32, 4, 2, 1, rng=rng), 32 * 16),
])
def test_init_bounds(make, fan_in):
    layer = make(np.random.default_rng(11))
    bound = 1 / np.sqrt(fan_in)
    for arr in (layer.weight.data, layer.bias.data):
        assert arr.dtype == np.float32
        assert np.abs(arr).max() <= bound
        assert np.abs(arr).max() > 0.9 * bound           # the interval is used, not a smaller one
    w = layer.weight.data.astype(np.float64)
    assert abs(w.mean()) < 0.05 * bound
    assert abs(w.var() / (bound ** 2 / 3) - 1) < 0.1     # U(-B, B) has variance B^2 / 3


@needs_torch
@pytest.mark.parametrize("kind, args", [
    ("conv", (16, 48, (3, 5))), ("convT", (16, 48, (3, 5))), ("convT", (64, 32, 4, 2, 1)),
    ("conv", (1, 32, 4, 2, 1))])
def test_init_bounds_match_torch(kind, args):
    torch.manual_seed(0)
    ours_cls, torch_cls = ((Conv2d, torch.nn.Conv2d) if kind == "conv"
                           else (ConvTranspose2d, torch.nn.ConvTranspose2d))
    theirs = torch_cls(*args)
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(theirs.weight)
    bound = 1 / np.sqrt(fan_in)
    ours = ours_cls(*args, rng=np.random.default_rng(12))
    assert ours.weight.shape == tuple(theirs.weight.shape)
    assert ours.bias.shape == tuple(theirs.bias.shape)
    for arr, t in [(ours.weight.data, theirs.weight), (ours.bias.data, theirs.bias)]:
        t = t.detach().numpy()
        # both are drawn from U(-bound, bound): same support, both fill it
        assert np.abs(arr).max() <= bound and np.abs(t).max() <= bound * (1 + 1e-6)
        if arr.size >= 32:
            assert np.abs(arr).max() > 0.8 * bound and np.abs(t).max() > 0.8 * bound


def test_init_is_reproducible():
    a = conv2d_init(np.random.default_rng(5), 3, 4, (3, 2), np.float64)
    b = conv2d_init(np.random.default_rng(5), 3, 4, (3, 2), np.float64)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    W, bias = conv_transpose2d_init(np.random.default_rng(5), 3, 4, 2, np.float32, bias=False)
    assert W.shape == (3, 4, 2, 2) and bias is None and W.dtype == np.float32


# --------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------

def test_modules_parameters_and_backward():
    rng = np.random.default_rng(13)
    conv = Conv2d(3, 4, 3, stride=2, padding=1, rng=rng, dtype=np.float64)
    assert [n for n, _ in conv.named_parameters()] == ["weight", "bias"]
    assert conv.weight.shape == (4, 3, 3, 3) and conv.bias.shape == (4,)
    x = rng.standard_normal((2, 3, 7, 6))
    y = conv(x)
    dy = rng.standard_normal(y.shape)
    dx = conv.backward(dy)
    ref = conv2d_backward(dy, conv2d_forward(x, conv.weight.data, conv.bias.data, 2, 1)[1])
    np.testing.assert_array_equal(dx, ref[0])
    np.testing.assert_array_equal(conv.weight.grad, ref[1])
    conv.forward(x)
    conv.backward(dy)                       # gradients accumulate
    np.testing.assert_allclose(conv.weight.grad, 2 * ref[1])
    conv.zero_grad()
    conv.input_grad = False                 # a first layer: no input gradient
    conv.forward(x)
    assert conv.backward(dy) is None
    np.testing.assert_array_equal(conv.bias.grad, ref[2])

    nobias = ConvTranspose2d(3, 2, 4, 2, 1, output_padding=1, bias=False, rng=rng)
    assert [n for n, _ in nobias.named_parameters()] == ["weight"]
    assert nobias.weight.shape == (3, 2, 4, 4) and nobias.weight.data.dtype == np.float32
    out = nobias(rng.standard_normal((2, 3, 5, 4)).astype(np.float32))
    assert out.shape == (2, 2, 11, 9)
    assert "ConvTranspose2d(3, 2" in repr(nobias) and "Conv2d(3, 4" in repr(conv)


def test_conv_vae_default_parameter_count():
    """The default conv VAE (Z = 10): 876,757 parameters, as its docstring and
    the README state; layer by layer, weights then biases."""
    model = build_model("conv-vae", rng=np.random.default_rng(0))
    shapes = {n: p.shape for n, p in model.named_parameters()}
    assert shapes["encoder.layers.0.weight"] == (32, 1, 4, 4)
    assert shapes["encoder.layers.2.weight"] == (64, 32, 4, 4)
    assert shapes["decoder.layers.5.weight"] == (64, 32, 4, 4)       # ConvT: (in, out, KH, KW)
    assert shapes["decoder.layers.7.weight"] == (32, 1, 4, 4)
    encoder = (32 * 16 + 32) + (64 * 32 * 16 + 64) + (3136 * 128 + 128) + (128 * 20 + 20)
    decoder = (10 * 128 + 128) + (128 * 3136 + 3136) + (64 * 32 * 16 + 32) + (32 * 16 + 1)
    assert encoder + decoder == 876_757
    assert model.num_parameters() == 876_757


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: Conv2d(0, 4, 3), "Conv2d: expected in_channels to be an int >= 1, got 0"),
    (lambda: Conv2d(-1, 4, 3), "Conv2d: expected in_channels to be an int >= 1, got -1"),
    (lambda: Conv2d(3, 0, 3), "Conv2d: expected out_channels to be an int >= 1, got 0"),
    (lambda: Conv2d(True, 4, 3), "Conv2d: expected in_channels to be an int >= 1, got True"),
    (lambda: Conv2d(3, 4.0, 3), "Conv2d: expected out_channels to be an int >= 1, got 4.0"),
    (lambda: ConvTranspose2d(3.5, 2, 3),
     "ConvTranspose2d: expected in_channels to be an int >= 1, got 3.5"),
    (lambda: ConvTranspose2d(0, 2, 3),
     "ConvTranspose2d: expected in_channels to be an int >= 1, got 0"),
    (lambda: ConvTranspose2d(3, -2, 3),
     "ConvTranspose2d: expected out_channels to be an int >= 1, got -2"),
    (lambda: ConvTranspose2d(3, "2", 3),
     "ConvTranspose2d: expected out_channels to be an int >= 1, got '2'"),
])
def test_modules_reject_bad_channel_counts(make, message):
    with pytest.raises(ValueError) as e:
        make()
    assert str(e.value) == message


def test_modules_accept_numpy_channel_counts():
    conv = Conv2d(np.int64(3), np.int32(4), 3, rng=np.random.default_rng(0))
    assert conv.weight.shape == (4, 3, 3, 3) and type(conv.in_channels) is int
    deconv = ConvTranspose2d(np.int64(3), np.int64(2), 3, rng=np.random.default_rng(0))
    assert deconv.weight.shape == (3, 2, 3, 3) and repr(deconv).startswith("ConvTranspose2d(3, 2,")


def test_bad_inputs_raise_clear_errors():
    x = np.zeros((2, 3, 5, 5), np.float32)
    W = np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"Conv2d: expected input of shape \(\*, 3, \*, \*\), got \(3, 5, 5\)"):
        conv2d_forward(x[0], W)
    with pytest.raises(ValueError, match=r"Conv2d: expected input of shape \(\*, 3, \*, \*\), got \(2, 2, 5, 5\)"):
        conv2d_forward(x[:, :2], W)
    with pytest.raises(ValueError, match=r"Conv2d: expected input of dtype float32 .* got float64"):
        conv2d_forward(x.astype(np.float64), W)
    with pytest.raises(ValueError, match=r"Conv2d: expected input of dtype float32 or float64, got int64"):
        conv2d_forward(x.astype(np.int64), W)
    with pytest.raises(ValueError, match=r"Conv2d: expected a positive output size, got \(0, 0\)"):
        conv2d_forward(x, np.zeros((4, 3, 6, 6), np.float32))
    with pytest.raises(ValueError, match=r"Conv2d: expected bias of shape \(4,?\), got \(3,\)"):
        conv2d_forward(x, W, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"Conv2d: expected stride to be an int >= 1"):
        conv2d_forward(x, W, stride=0)
    with pytest.raises(ValueError, match=r"Conv2d: expected padding to be an int >= 0"):
        conv2d_forward(x, W, padding=(1, 2, 3))
    with pytest.raises(ValueError, match=r"Conv2d: expected weight of shape"):
        conv2d_forward(x, W[0])
    _, cache = conv2d_forward(x, W, None, 1, 1)
    with pytest.raises(ValueError, match=r"Conv2d.backward: expected upstream gradient of shape \(2, 4, 5, 5\)"):
        conv2d_backward(np.zeros((2, 4, 5, 4), np.float32), cache)

    Wt = np.zeros((3, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"ConvTranspose2d: expected input of shape \(\*, 3, \*, \*\), got \(2, 4, 5, 5\)"):
        conv_transpose2d_forward(np.zeros((2, 4, 5, 5), np.float32), Wt)
    with pytest.raises(ValueError, match=r"ConvTranspose2d: expected output_padding smaller than stride"):
        conv_transpose2d_forward(x, Wt, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"ConvTranspose2d: expected a positive output size"):
        conv_transpose2d_forward(np.zeros((1, 3, 1, 1), np.float32), Wt, padding=2)
    with pytest.raises(ValueError, match=r"ConvTranspose2d: expected input of dtype float32"):
        conv_transpose2d_forward(x.astype(np.float64), Wt)
    _, cache = conv_transpose2d_forward(x, Wt, None, 2, 1, 1)
    with pytest.raises(ValueError, match=r"ConvTranspose2d.backward: expected upstream gradient of shape \(2, 4, 10, 10\)"):
        conv_transpose2d_backward(np.zeros((2, 4, 9, 9), np.float32), cache)
    with pytest.raises(ValueError, match=r"Conv2d: expected kernel_size"):
        Conv2d(3, 4, 0)

"""Fused kernels (kernels.adam, kernels.bce) against their references and PyTorch.

The Numba CPU kernels are compared with the plain-xp references on odd shapes
and both float dtypes; the optimizer steps are also compared with
``torch.optim`` over several steps, the BCE with hand-computed values and
``torch.nn.functional.binary_cross_entropy_with_logits``. The CUDA kernels run
in a subprocess on the GPU tests' backend (tests/gpu_backend.py: real CuPy,
or ``NUMBA_ENABLE_CUDASIM=1``, which must be set before numba is imported).
"""
import textwrap

import numba
import numpy as np
import pytest

import kernels
import kernels.adam as kadam
import kernels.bce as kbce
from kernels._dispatch import ENV_VAR, choose, is_cupy
from gpu_backend import run_on_gpu

DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (3, 7), (129, 785), (5,)]
# relative tolerance kernel vs reference / torch, per dtype
RTOL = {np.float32: 1e-6, np.float64: 1e-12}


@pytest.fixture(autouse=True)
def _auto_dispatch(monkeypatch):
    """Every test starts with the default dispatch rule."""
    monkeypatch.delenv(ENV_VAR, raising=False)


def assert_close(got, want, dtype, scale=1.0):
    """|got - want| <= rtol * (|want| + scale): relative, with a floor at ``scale``."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


def adam_state(rng, shape, dtype):
    p = rng.standard_normal(shape).astype(dtype)
    m = (0.1 * rng.standard_normal(shape)).astype(dtype)
    v = (0.01 * rng.random(shape)).astype(dtype)
    return p, m, v


# --------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------

def test_dispatch_rule(monkeypatch):
    a = np.zeros((4, 6), np.float32)
    assert choose(a, a) == "cpu"
    assert choose(a[:, ::2], np.zeros((4, 3), np.float32)) == "reference"  # strided
    assert choose(a, a.astype(np.float64)) == "reference"                  # mixed dtypes
    assert choose(a.astype(np.int32)) == "reference"                       # not float
    assert choose(a, None) == "cpu"                                        # None skipped
    monkeypatch.setenv(ENV_VAR, "reference")
    assert choose(a, a) == "reference"
    monkeypatch.setenv(ENV_VAR, "refrence")
    with pytest.raises(ValueError, match=ENV_VAR):
        choose(a, a)

    class FakeCupyArray:  # recognised by module name, cupy never imported
        __module__ = "cupy._core.core"
    assert is_cupy(FakeCupyArray()) and not is_cupy(a)


def test_small_parameters_run_on_one_thread_with_the_same_bits(monkeypatch):
    """A parameter of SMALL_UPDATE elements runs the loop on one thread, one of
    more on all of the pool's; the thread count is restored; on the same
    elements both give the same bits."""
    threads = numba.get_num_threads()
    seen = []
    real = kadam._adam_loop

    def loop(*args):
        seen.append(numba.get_num_threads())
        real(*args)
    monkeypatch.setattr(kadam, "_adam_loop", loop)
    rng = np.random.default_rng(0)
    n = kadam.SMALL_UPDATE
    large = adam_state(rng, (n + 1,), np.float32)
    g = rng.standard_normal(n + 1).astype(np.float32)
    small = [a[:n].copy() for a in large]
    for step in (1, 2, 3):
        kernels.adam_step(*large[:1], g, *large[1:], step, 1e-3, 0.9, 0.999, 1e-8)
        kernels.adam_step(*small[:1], g[:n].copy(), *small[1:], step, 1e-3, 0.9, 0.999, 1e-8)
        assert numba.get_num_threads() == threads
    assert seen == [threads, 1] * 3
    for a, b in zip(large, small):
        assert np.array_equal(a[:n], b)


def test_env_var_really_bypasses_the_kernels(monkeypatch):
    """Replace the CPU kernels by a bomb: only the forced reference survives."""
    def bomb(*args):
        raise RuntimeError("kernel called")
    monkeypatch.setattr(kadam, "_adam_cpu", bomb)
    monkeypatch.setattr(kbce, "_bce_cpu", bomb)
    rng = np.random.default_rng(0)
    p, m, v = adam_state(rng, (3, 4), np.float32)
    g = rng.standard_normal((3, 4)).astype(np.float32)
    with pytest.raises(RuntimeError, match="kernel called"):
        kernels.adam_step(p, g, m, v, 1, 1e-3, 0.9, 0.999, 1e-8)
    with pytest.raises(RuntimeError, match="kernel called"):
        kernels.bce_with_logits(p, g, 1.0)
    monkeypatch.setenv(ENV_VAR, "reference")
    kernels.adam_step(p, g, m, v, 1, 1e-3, 0.9, 0.999, 1e-8)
    kernels.bce_with_logits(p, g, 1.0)


# --------------------------------------------------------------------------
# Adam / SGD: kernel vs reference
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adam_kernel_matches_reference(shape, dtype, weight_decay):
    rng = np.random.default_rng(1)
    p, m, v = adam_state(rng, shape, dtype)
    a = [p, m, v]
    b = [x.copy() for x in a]
    assert choose(p, p, m, v) == "cpu"
    for step in range(1, 4):
        g = rng.standard_normal(shape).astype(dtype)
        kernels.adam_step(a[0], g, a[1], a[2], step, 1e-2, 0.9, 0.999, 1e-8, weight_decay)
        kernels.adam_step_reference(b[0], g, b[1], b[2], step, 1e-2, 0.9, 0.999, 1e-8,
                                    weight_decay)
    for got, want in zip(a, b):  # exp_avg = b1 m + (1 - b1) g can cancel: floor at |g| ~ 1
        assert got.dtype == dtype
        assert_close(got, want, dtype)


def test_adam_comparison_detects_a_perturbation():
    rng = np.random.default_rng(2)
    p, m, v = adam_state(rng, (3, 7), np.float32)
    g = rng.standard_normal((3, 7)).astype(np.float32)
    q, m2, v2 = p.copy(), m.copy(), v.copy()
    kernels.adam_step(p, g, m, v, 1, 1e-2, 0.9, 0.999, 1e-8)
    kernels.adam_step_reference(q, g, m2, v2, 1, 1e-2, 0.9, 0.999, 1e-8)
    assert_close(p, q, np.float32)
    p[1, 2] += 1e-5 * (abs(p[1, 2]) + 1)  # 10x the tolerance
    with pytest.raises(AssertionError):
        assert_close(p, q, np.float32)


def test_adam_non_contiguous_falls_back_and_updates_in_place():
    rng = np.random.default_rng(3)
    big = rng.standard_normal((6, 10))
    p = big[:, ::2]  # strided view: the reference path, still in place
    g = rng.standard_normal(p.shape)
    m, v = np.zeros(p.shape), np.zeros(p.shape)
    q, m2, v2 = np.ascontiguousarray(p), m.copy(), v.copy()
    untouched, before = big[:, 1::2].copy(), p.copy()
    assert choose(p, g, m, v) == "reference"
    kernels.adam_step(p, g, m, v, 1, 0.1, 0.9, 0.999, 1e-8)
    kernels.adam_step(q, g, m2, v2, 1, 0.1, 0.9, 0.999, 1e-8)  # kernel
    assert_close(big[:, ::2], q, np.float64)
    assert np.array_equal(big[:, 1::2], untouched)
    assert np.all(big[:, ::2] != before)  # really updated, through the view


def test_adam_validates_inputs():
    p = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="adam_step"):
        kernels.adam_step(p, np.zeros((3, 2), np.float32), p.copy(), p.copy(),
                          1, 1e-3, 0.9, 0.999, 1e-8)
    with pytest.raises(ValueError, match="exp_avg"):
        kernels.adam_step(p, p.copy(), p.astype(np.float64), p.copy(),
                          1, 1e-3, 0.9, 0.999, 1e-8)
    with pytest.raises(ValueError, match="step"):
        kernels.adam_step(p, p.copy(), p.copy(), p.copy(), 0, 1e-3, 0.9, 0.999, 1e-8)


SGD_CASES = [
    dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False),
    dict(momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=False),
    dict(momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SGD_CASES)
def test_sgd_kernel_matches_reference(case, dtype):
    rng = np.random.default_rng(4)
    shape = (129, 785)
    p = rng.standard_normal(shape).astype(dtype)
    buf = np.full(shape, 123.0, dtype)  # garbage: must be ignored on the first step
    q, buf2 = p.copy(), buf.copy()
    for step in range(1, 4):
        g = rng.standard_normal(shape).astype(dtype)
        kernels.sgd_step(p, g, buf, 0.1, first_step=step == 1, **case)
        kernels.sgd_step_reference(q, g, buf2, 0.1, first_step=step == 1, **case)
    assert_close(p, q, dtype)
    if case["momentum"]:
        assert_close(buf, buf2, dtype)


# --------------------------------------------------------------------------
def test_adam_kernel_computes_in_float32():
    """The float32 kernel equals the same formula in NumPy float32 arithmetic bit for
    bit: no step is promoted to float64 (a literal 0 in the kernel once did that)."""
    from kernels.adam import _adam_scalars
    rng = np.random.default_rng(12)
    p, g = rng.standard_normal((2, 1000)).astype(np.float32)
    m = (0.1 * rng.standard_normal(1000)).astype(np.float32)
    v = (0.01 * rng.random(1000)).astype(np.float32)
    m[:3] = 1e-39                                          # subnormal moments too
    want_p, want_m, want_v = p.copy(), m.copy(), v.copy()
    kernels.adam_step(p, g, m, v, 3, 1e-3, 0.9, 0.999, 1e-8)
    w1, beta2, w2, step_size, bc2_sqrt, eps, _, tiny, _ = _adam_scalars(
        3, 1e-3, 0.9, 0.999, 1e-8, 0.0, np.float32)
    want_m = want_m + w1 * (g - want_m)
    want_v = want_v * beta2 + w2 * g * g
    want_m[np.abs(want_m) < tiny] = 0
    want_v[want_v < tiny] = 0
    want_p = want_p - step_size * (want_m / (np.sqrt(want_v) / bc2_sqrt + eps))
    for got, want in ((p, want_p), (m, want_m), (v, want_v)):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_moments_of_a_gradient_that_stays_zero_become_zero_not_subnormal(optimizer, impl,
                                                                          monkeypatch):
    """A dead unit's moments decay geometrically; below finfo.tiny they are stored
    as 0 (subnormal arithmetic is ~100x slower on x86), and the parameters are
    what they would have been, the updates involved being far below rounding."""
    if impl == "reference":
        monkeypatch.setenv("SCRATCHVAE_KERNELS", "reference")
    rng = np.random.default_rng(11)
    p = rng.standard_normal(64).astype(np.float32)
    p0 = p.copy()
    grads = [rng.standard_normal(64).astype(np.float32)] + [np.zeros(64, np.float32)] * 1200
    m, v = np.zeros_like(p), np.zeros_like(p)
    for step, g in enumerate(grads, 1):
        if optimizer == "adam":
            kernels.adam_step(p, g, m, v, step, 1e-3, 0.9, 0.999, 1e-8)
        else:
            kernels.sgd_step(p, g, m, 1e-3, momentum=0.9, first_step=step == 1)
        if step == 2:
            p_after_two = p.copy()
    tiny = np.finfo(np.float32).tiny
    assert not ((np.abs(m) < tiny) & (m != 0)).any() and not ((v < tiny) & (v != 0)).any()
    assert (m == 0).all()                       # 0.9**1200 is far below tiny
    # float64 moments, never flushed: the float32 parameters come out the same
    q, m64, v64 = p0.astype(np.float64), np.zeros(64), np.zeros(64)
    for step, g in enumerate(grads, 1):
        g = g.astype(np.float64)
        if optimizer == "adam":
            m64 = 0.9 * m64 + 0.1 * g
            v64 = 0.999 * v64 + 0.001 * g * g
            q = q - 1e-3 / (1 - 0.9 ** step) * m64 / (np.sqrt(v64 / (1 - 0.999 ** step)) + 1e-8)
        else:
            m64 = g if step == 1 else 0.9 * m64 + g
            q = q - 1e-3 * m64
    np.testing.assert_allclose(p, q, rtol=2e-6)
    assert not np.array_equal(p, p_after_two)     # the moments did move p for a while


# Adam / SGD vs torch.optim
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("step_fn", [kernels.adam_step, kernels.adam_step_reference],
                         ids=["kernel", "reference"])
def test_adam_matches_torch(step_fn, weight_decay, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    shape = (37, 53)
    p = rng.standard_normal(shape).astype(dtype)
    m, v = np.zeros(shape, dtype), np.zeros(shape, dtype)
    tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
    opt = torch.optim.Adam([tp], lr=1e-2, betas=(0.8, 0.99), eps=1e-8,
                           weight_decay=weight_decay)
    for step in range(1, 6):
        g = rng.standard_normal(shape).astype(dtype)
        step_fn(p, g, m, v, step, 1e-2, 0.8, 0.99, 1e-8, weight_decay)
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
    state = opt.state[tp]
    assert int(state["step"]) == 5
    assert_close(p, tp.detach().numpy(), dtype)
    assert_close(m, state["exp_avg"].numpy(), dtype)  # floor at |g| ~ 1 (cancellation)
    assert_close(v, state["exp_avg_sq"].numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SGD_CASES)
def test_sgd_matches_torch(case, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    shape = (11, 13)
    p = rng.standard_normal(shape).astype(dtype)
    buf = np.zeros(shape, dtype) if case["momentum"] else None
    tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
    opt = torch.optim.SGD([tp], lr=0.1, **case)
    for step in range(1, 5):
        g = rng.standard_normal(shape).astype(dtype)
        kernels.sgd_step(p, g, buf, 0.1, first_step=step == 1, **case)
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
    assert_close(p, tp.detach().numpy(), dtype)
    if case["momentum"]:
        assert_close(buf, opt.state[tp]["momentum_buffer"].numpy(), dtype)


# --------------------------------------------------------------------------
# BCE with logits
# --------------------------------------------------------------------------

def bce_inputs(rng, shape, dtype):
    logits = (4 * rng.standard_normal(shape)).astype(dtype)
    targets = rng.random(shape).astype(dtype)
    targets[..., ::3] = np.round(targets[..., ::3])  # some exact 0/1 pixels
    return logits, targets


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (129, 785), (4, 2, 3), (2, 1100)])
def test_bce_kernel_matches_reference(shape, dtype):
    rng = np.random.default_rng(7)
    logits, targets = bce_inputs(rng, shape, dtype)
    assert choose(logits, targets) == "cpu"
    row, dl = kernels.bce_with_logits(logits, targets, 0.25)
    row_ref, dl_ref = kernels.bce_with_logits_reference(logits, targets, 0.25)
    fwd = kernels.bce_with_logits_forward(logits, targets)
    fwd_ref = kernels.bce_with_logits_forward_reference(logits, targets)
    assert row.shape == (shape[0],) and dl.shape == shape
    assert row.dtype == dl.dtype == fwd.dtype == dtype
    width = np.prod(shape[1:])  # row sums: error grows with the row length
    assert_close(row, row_ref, dtype, scale=width)
    assert_close(fwd, fwd_ref, dtype, scale=width)
    assert np.array_equal(fwd, row)  # the same arithmetic
    assert_close(dl, dl_ref, dtype, scale=0.25)


def test_bce_comparison_detects_a_perturbation():
    rng = np.random.default_rng(8)
    logits, targets = bce_inputs(rng, (3, 7), np.float32)
    row, dl = kernels.bce_with_logits(logits, targets, 1.0)
    row_ref, dl_ref = kernels.bce_with_logits_reference(logits, targets, 1.0)
    assert_close(dl, dl_ref, np.float32)
    dl[2, 5] += 1e-4
    with pytest.raises(AssertionError):
        assert_close(dl, dl_ref, np.float32)
    row[0] *= 1 + 1e-5
    with pytest.raises(AssertionError):
        assert_close(row, row_ref, np.float32, scale=7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_non_contiguous_and_empty(dtype):
    rng = np.random.default_rng(9)
    logits, targets = bce_inputs(rng, (5, 12), dtype)
    lv, xv = logits[:, ::2], targets[:, ::2]
    assert choose(lv, xv) == "reference"
    row, dl = kernels.bce_with_logits(lv, xv, 0.5)
    row_k, dl_k = kernels.bce_with_logits(np.ascontiguousarray(lv), np.ascontiguousarray(xv), 0.5)
    assert_close(row, row_k, dtype, scale=6)
    assert_close(dl, dl_k, dtype)
    row0, dl0 = kernels.bce_with_logits(np.zeros((0, 4), dtype), np.zeros((0, 4), dtype), 1.0)
    assert row0.shape == (0,) and dl0.shape == (0, 4)
    with pytest.raises(ValueError, match="targets"):
        kernels.bce_with_logits(logits, targets.astype(np.float64 if dtype == np.float32
                                                       else np.float32), 1.0)


def extreme_inputs(dtype):
    """Every logit in {+-1e4, +-50, +-1, 0} against targets 0, 0.3, 1: (3, 7) arrays."""
    vals = np.array([1e4, -1e4, 50.0, -50.0, 1.0, -1.0, 0.0])
    logits = np.tile(vals, (3, 1)).astype(dtype)
    targets = np.repeat([[0.0], [0.3], [1.0]], 7, axis=1).astype(dtype)
    return logits, targets


def exact_bce(logits, targets):
    """Per element, float64, written independently: softplus via logaddexp."""
    l, x = logits.astype(np.float64), targets.astype(np.float64)
    loss = np.logaddexp(0.0, l) - l * x
    sig = 0.5 * (1.0 + np.tanh(0.5 * l))
    return loss, sig - x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [kernels.bce_with_logits, kernels.bce_with_logits_reference],
                         ids=["kernel", "reference"])
def test_bce_extreme_logits(fn, dtype):
    logits, targets = extreme_inputs(dtype)
    row, dl = fn(logits, targets, 2.0)
    assert np.all(np.isfinite(row)) and np.all(np.isfinite(dl))
    loss, grad = exact_bce(logits, targets)
    assert_close(row, loss.sum(axis=1), dtype, scale=1.0)
    assert_close(dl, 2.0 * grad, dtype, scale=1.0)
    # hand-checked entries: target 0 with logit 1e4 costs 1e4; logit 0 costs log 2
    assert 1e4 + 50 < row[0] < 1e4 + 53 and abs(dl[0, 0] - 2.0) < 1e-6 and abs(dl[2, 1] + 2.0) < 1e-6
    np.testing.assert_allclose(dl[:, 6], 2.0 * (0.5 - targets[:, 6]), rtol=1e-6)
    assert abs(loss[1, 6] - np.log(2.0)) < 1e-15


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    logits, targets = bce_inputs(rng, (9, 33), dtype)
    ext_l, ext_x = extreme_inputs(dtype)
    logits[:3, :7], targets[:3, :7] = ext_l, ext_x
    tl = torch.from_numpy(logits.copy()).requires_grad_(True)
    tloss = torch.nn.functional.binary_cross_entropy_with_logits(
        tl, torch.from_numpy(targets), reduction="none").sum(dim=1)
    tloss.sum().mul(0.5).backward()  # scale 0.5 on every row
    row, dl = kernels.bce_with_logits(logits, targets, 0.5)
    assert_close(row, tloss.detach().numpy(), dtype, scale=33)
    assert_close(dl, tl.grad.numpy(), dtype, scale=0.5)
    assert_close(kernels.bce_with_logits_forward(logits, targets), tloss.detach().numpy(),
                 dtype, scale=33)


# --------------------------------------------------------------------------
# CUDA kernels on the GPU tests' backend (a subprocess: tests/gpu_backend.py)
# --------------------------------------------------------------------------

GPU_SCRIPT = textwrap.dedent("""
    import numpy as np
    import gpu_backend
    gpu_backend.check_child()   # the simulator on the stand-in, or a real GPU
    import kernels
    from kernels.adam import _adam_cuda, _adam_scalars, _sgd_cuda
    from kernels.bce import _bce_cuda, _bce_forward_cuda
    from kernels._dispatch import scalar

    def close(got, want, rtol):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)

    rng = np.random.default_rng(0)
    for dtype, rtol in ((np.float32, 1e-6), (np.float64, 1e-12)):
        # Adam: 2 steps on 150 elements (2 blocks of 128 threads)
        p = rng.standard_normal((10, 15)).astype(dtype)
        m = np.zeros_like(p); v = np.zeros_like(p)
        q, m2, v2 = p.copy(), m.copy(), v.copy()
        for step in (1, 2):
            g = rng.standard_normal(p.shape).astype(dtype)
            s = _adam_scalars(step, 1e-2, 0.9, 0.999, 1e-8, 0.1, dtype)
            _adam_cuda(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), *s)
            kernels.adam_step_reference(q, g, m2, v2, step, 1e-2, 0.9, 0.999, 1e-8, 0.1)
        close(p, q, rtol); close(m, m2, rtol); close(v, v2, rtol)

        # SGD with Nesterov momentum: 2 steps
        p = rng.standard_normal(20).astype(dtype); b = np.zeros_like(p)
        q, b2 = p.copy(), b.copy()
        for step in (1, 2):
            g = rng.standard_normal(p.shape).astype(dtype)
            _sgd_cuda(p, g, b, scalar(0.1, dtype), scalar(0.9, dtype), scalar(1.0, dtype),
                      scalar(0.01, dtype), True, step == 1, True,
                      scalar(np.finfo(dtype).tiny, dtype), scalar(0, dtype))
            kernels.sgd_step_reference(q, g, b2, 0.1, 0.9, 0.0, 0.01, True, step == 1)
        close(p, q, rtol); close(b, b2, rtol)

        # BCE: 2 rows of 130 (> 128 threads: exercises the stride loop and the reduction)
        l = (4 * rng.standard_normal((2, 130))).astype(dtype)
        l[0, :4] = [1e4, -1e4, 50, -50]
        x = rng.random((2, 130)).astype(dtype)
        row = np.empty(2, dtype); dl = np.empty_like(l); fwd = np.empty(2, dtype)
        _bce_cuda(l, x, 0.5, row, dl)
        _bce_forward_cuda(l, x, fwd)
        row_ref, dl_ref = kernels.bce_with_logits_reference(l, x, 0.5)
        np.testing.assert_allclose(row, row_ref, rtol=rtol, atol=rtol * 130)
        np.testing.assert_allclose(fwd, row_ref, rtol=rtol, atol=rtol * 130)
        close(dl, dl_ref, rtol)
    print("GPU OK")
""")


@pytest.mark.gpu
def test_cuda_kernels_on_the_gpu_backend():
    run_on_gpu(GPU_SCRIPT)

"""The vector quantiser and the VQ-VAE.

- kernels/vq.py: the nearest-code kernel against its xp reference (bit for
  bit, on random shapes, K larger than the batch, exact ties), against brute
  force, its memory footprint, dispatch, and the CUDA kernel on the
  GPU tests' backend (in a subprocess, tests/gpu_backend.py);
- scratchvae/ops/vq.py: values, the straight-through backward, the EMA
  update against the formula worked by hand on a tiny case;
- gradients: the codebook and commitment terms and the whole model against
  float64 central differences (scratchvae/ops/vq.py derives the
  straight-through surrogate), and deliberately wrong backwards that must
  fail;
- the model: parameter count, dead-code restarts, state with buffers,
  test metrics, training/resume/CLI on the bundled sample.
"""
import importlib
import json
import textwrap
import tracemalloc

import numpy as np
import pytest

import kernels.codes as kcodes
import kernels.vq as kvq
from kernels._dispatch import ENV_VAR, choose
from scratchvae import checkpoints as ckpt
from scratchvae.gradcheck import check_names, problems
from scratchvae.gradcheck import vq as vq_checks
from scratchvae.cli import main
from scratchvae.models import build_model
from scratchvae.models.vq_vae import VectorQuantizer, vq_vae
from scratchvae.ops import vq as ops
from scratchvae.config import TrainConfig
from scratchvae.rundir import evaluate_run
from scratchvae.train import train
from gpu_backend import run_on_gpu

# the module (the package attribute of the same name is the builder function)
vq_module = importlib.import_module("scratchvae.models.vq_vae")


@pytest.fixture(autouse=True)
def _auto_dispatch(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def _quiet(*args, **kwargs):
    pass


def brute_force_nearest(z, codebook):
    """Exact-ish distances from the differences, in float64: the argmin and its distance."""
    d = ((z.astype(np.float64)[:, None, :] - codebook.astype(np.float64)[None]) ** 2).sum(-1)
    return d.argmin(axis=1), d


# --------------------------------------------------------------------------
# the nearest-code kernel
# --------------------------------------------------------------------------

SHAPES = [(1, 1, 1), (3, 16, 128), (7, 2, 300), (200, 5, 7), (1000, 16, 128), (0, 4, 3)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,D,K", SHAPES)
def test_kernel_matches_reference_bit_for_bit(M, D, K, dtype):
    rng = np.random.default_rng(M + 10 * D + K)
    z = rng.standard_normal((M, D)).astype(dtype)
    codebook = rng.standard_normal((K, D)).astype(dtype)
    assert choose(z, codebook) == "cpu"
    idx, sq = kvq.nearest_code(z, codebook)
    ridx, rsq = kvq.nearest_code_reference(z, codebook)
    assert idx.dtype == np.int64 and idx.shape == (M,) and sq.dtype == np.float64
    assert np.array_equal(idx, ridx)
    assert np.array_equal(sq, rsq)          # same operations in the same order
    if M:
        want, d = brute_force_nearest(z, codebook)
        # the nearest code up to float64 rounding of the expanded distance
        got_d = d[np.arange(M), idx]
        assert np.all(got_d <= d.min(axis=1) + 1e-12 * (1 + d.max(axis=1)))
        np.testing.assert_allclose(sq, got_d, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_ties_go_to_the_lowest_index(impl):
    find = kvq.nearest_code if impl == "kernel" else kvq.nearest_code_reference
    # duplicated codes: every vector near code 1 must pick 1, never its copies 3 and 5
    codebook = np.array([[5.0, 5], [0, 0], [-5, 5], [0, 0], [9, 9], [0, 0]], np.float32)
    z = np.array([[0.1, -0.2], [0, 0], [5, 5], [-0.3, 0.1]], np.float32)
    idx, _ = find(z, codebook)
    assert idx.tolist() == [1, 1, 0, 1]
    # exact tie between different codes: z = 0 is equidistant from +-e
    codebook = np.array([[3.0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]])
    idx, sq = find(np.zeros((2, 2)), codebook)
    assert idx.tolist() == [1, 1] and sq.tolist() == [1.0, 1.0]
    # z = (1/2, 1/2) is exactly equidistant from (1, 0) and (0, 1), at indices 1 and 3;
    # with the codebook reversed they sit at 3 and 1: the lower index wins both times
    z = np.array([[0.5, 0.5]])
    idx, sq = find(z, codebook)
    assert idx.tolist() == [1] and sq.tolist() == [0.5]
    idx, sq = find(z, codebook[::-1].copy())
    assert idx.tolist() == [1] and sq.tolist() == [0.5]


@pytest.mark.parametrize("K", [2, 5, 8, 11])
def test_ties_at_every_pair_of_positions_go_to_the_lower(K):
    """The kernel keeps four running minima (k mod 4) and the last K mod 4 codes
    in the first: a tie between any two positions still goes to the lower index."""
    far = np.float32(50) * (1 + np.arange(K, dtype=np.float32))[:, None] * np.ones(2, np.float32)
    z = np.array([[0.25, -0.5]], np.float32)
    for i in range(K):
        for j in range(i + 1, K):
            codebook = far.copy()
            codebook[i] = codebook[j] = [0.0, 0.0]
            idx, sq = kvq.nearest_code(z, codebook)
            assert idx.tolist() == [i] and sq.tolist() == [0.3125]


def test_codes_with_nan_never_win():
    """A NaN distance fails every ``<``: the nearest finite code is chosen, and a row
    whose every distance is NaN gets code 0 at distance inf."""
    codebook = np.array([[np.nan, 0], [3, 0], [1, 0], [np.nan, 1], [2, 0]], np.float32)
    idx, sq = kvq.nearest_code(np.zeros((1, 2), np.float32), codebook)
    assert idx.tolist() == [2] and sq.tolist() == [1.0]
    idx, sq = kvq.nearest_code(np.full((1, 2), np.nan, np.float32), codebook)
    assert idx.tolist() == [0] and sq.tolist() == [np.inf]


def test_near_ties_agree_between_kernel_and_reference():
    """Codes at distances differing in the last bits: both paths pick the same one."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((64, 8)).astype(np.float32)
    codebook = np.concatenate([base, base + np.float32(1e-7) * rng.standard_normal((64, 8))
                               .astype(np.float32)])
    z = (base + np.float32(0.3) * rng.standard_normal((64, 8)).astype(np.float32))
    z = np.repeat(z, 50, axis=0)
    a = kvq.nearest_code(z, codebook)
    b = kvq.nearest_code_reference(z, codebook)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_kernel_never_builds_the_distance_matrix():
    """Peak traced memory of the kernel call is far below M x K float64 values
    (the reference, the control, does allocate them)."""
    rng = np.random.default_rng(0)
    M, D, K = 20000, 4, 256
    z = rng.standard_normal((M, D)).astype(np.float32)
    codebook = rng.standard_normal((K, D)).astype(np.float32)
    kvq.nearest_code(z[:10], codebook)                 # compile outside the measurement
    matrix_bytes = M * K * 8
    peaks = {}
    for name, fn in (("kernel", kvq.nearest_code), ("reference", kvq.nearest_code_reference)):
        tracemalloc.start()
        fn(z, codebook)
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks["reference"] > matrix_bytes
    assert peaks["kernel"] < matrix_bytes / 50         # outputs: 2 x M x 8 bytes


def test_dispatch_and_fallbacks(monkeypatch):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((40, 6)).astype(np.float32)
    codebook = rng.standard_normal((9, 6)).astype(np.float32)
    want = kvq.nearest_code_reference(z, codebook)[0]

    def bomb(*args):
        raise RuntimeError("kernel called")
    monkeypatch.setattr(kvq, "_nearest_cpu", bomb)
    with pytest.raises(RuntimeError, match="kernel called"):
        kvq.nearest_code(z, codebook)
    big = np.zeros((40, 12), np.float32)
    big[:, ::2] = z
    assert np.array_equal(kvq.nearest_code(big[:, ::2], codebook)[0], want)   # strided: reference
    monkeypatch.setenv(ENV_VAR, "reference")
    assert np.array_equal(kvq.nearest_code(z, codebook)[0], want)


def test_kernel_validates_inputs():
    z = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="nearest_code.*vectors"):
        kvq.nearest_code(z, np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="nearest_code.*vectors.*float32"):
        kvq.nearest_code(z.astype(np.float64), np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="at least one code"):
        kvq.nearest_code(z, np.zeros((0, 3), np.float32))


GPU_SCRIPT = textwrap.dedent("""
    import numpy as np
    import gpu_backend
    gpu_backend.check_child()   # the simulator on the stand-in, or a real GPU
    from kernels.vq import _nearest_cuda, code_sq_norms, nearest_code_reference

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        # 130 rows (> 128 threads: two blocks), K > M, M = 1, and ties
        for M, D, K in ((130, 3, 5), (2, 4, 9), (1, 1, 1)):
            z = rng.standard_normal((M, D)).astype(dtype)
            e = rng.standard_normal((K, D)).astype(dtype)
            if K > 3:
                e[3] = e[1]                       # duplicated code: 1 must win
                z[0] = e[1]
            eT = np.ascontiguousarray(e.astype(np.float64).T)
            idx = np.empty(M, np.int64); sq = np.empty(M, np.float64)
            _nearest_cuda(z, eT, code_sq_norms(e), idx, sq)
            ridx, rsq = nearest_code_reference(z, e)
            assert np.array_equal(idx, ridx), (idx, ridx)
            if gpu_backend.on_real_cupy():    # NVVM may fuse a multiply and an add (FMA)
                np.testing.assert_allclose(sq, rsq, rtol=1e-12, atol=1e-12)
            else:
                assert np.array_equal(sq, rsq)
            if K > 3:
                assert idx[0] == 1
    print("GPU OK")
""")


@pytest.mark.gpu
def test_cuda_kernel_on_the_gpu_backend():
    run_on_gpu(GPU_SCRIPT)


# --------------------------------------------------------------------------
# ops: values, layout, straight-through, EMA
# --------------------------------------------------------------------------

def _latent(rng, N=2, D=3, H=2, W=3, K=5):
    return rng.standard_normal((N, D, H, W)), rng.standard_normal((K, D))


def test_assign_and_quantize_values_and_layout():
    rng = np.random.default_rng(0)
    z_e, E = _latent(rng)
    k = ops.vq_assign(z_e, E)
    assert k.shape == (2, 2, 3) and k.dtype == np.int64
    for n in range(2):
        for h in range(2):
            for w in range(3):
                d = ((z_e[n, :, h, w] - E) ** 2).sum(axis=1)
                assert k[n, h, w] == d.argmin()
    z_q, cache = ops.vq_quantize_forward(z_e, E, k)
    assert z_q.shape == z_e.shape
    assert z_q.transpose(0, 2, 3, 1).flags.c_contiguous           # channels-last memory
    for n in range(2):
        for h in range(2):
            for w in range(3):
                assert np.array_equal(z_q[n, :, h, w], E[k[n, h, w]])
    dz_q = rng.standard_normal(z_e.shape)
    assert ops.vq_quantize_backward(dz_q, cache) is dz_q           # straight-through copy
    with pytest.raises(ValueError, match="VectorQuantizer.backward"):
        ops.vq_quantize_backward(dz_q[:1], cache)


def test_losses_values_and_gradients_by_hand():
    rng = np.random.default_rng(1)
    z_e, E = _latent(rng)
    E[4] = 100.0                                  # a code nobody chooses
    k = ops.vq_assign(z_e, E)
    z_q, _ = ops.vq_quantize_forward(z_e, E, k)
    per_image = ((z_e - z_q) ** 2).sum(axis=(1, 2, 3))
    cb, cb_cache = ops.codebook_loss_forward(z_e, E, k)
    cm, cm_cache = ops.commitment_loss_forward(z_e, E, k)
    np.testing.assert_allclose(cb, per_image, rtol=1e-14)
    np.testing.assert_allclose(cm, per_image, rtol=1e-14)
    dloss = np.array([0.5, -2.0])
    dE = ops.codebook_loss_backward(dloss, cb_cache)
    want = np.zeros_like(E)
    for n in range(2):
        for h in range(2):
            for w in range(3):
                want[k[n, h, w]] += 2 * dloss[n] * (E[k[n, h, w]] - z_e[n, :, h, w])
    np.testing.assert_allclose(dE, want, rtol=1e-13, atol=1e-14)
    assert np.all(dE[4] == 0)
    dz = ops.commitment_loss_backward(dloss, cm_cache)
    np.testing.assert_allclose(dz, 2 * dloss[:, None, None, None] * (z_e - z_q), rtol=1e-14)


def test_ops_validate_inputs():
    z_e, E = _latent(np.random.default_rng(2))
    k = ops.vq_assign(z_e, E)
    with pytest.raises(ValueError, match="VectorQuantizer: expected encoder output"):
        ops.vq_assign(z_e[:, :2], E)
    with pytest.raises(ValueError, match="CodebookLoss: expected indices"):
        ops.codebook_loss_forward(z_e, E, k[:, :1])
    with pytest.raises(ValueError, match="integer indices"):
        ops.commitment_loss_forward(z_e, E, k.astype(np.float64))
    with pytest.raises(ValueError, match="float64"):
        ops.vq_assign(z_e.astype(np.float32), E)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_latent_losses_at_once_are_the_two_losses(dtype):
    """One residual for both terms: the values and both backwards' results are the
    separate ops' bit for bit (z_e channels-last, as the encoder returns it)."""
    rng = np.random.default_rng(5)
    z_e = rng.standard_normal((3, 5, 4, 6)).astype(dtype).transpose(0, 3, 1, 2)
    E = rng.standard_normal((7, 6)).astype(dtype)
    k = ops.vq_assign(z_e, E)
    sq, commit_cache, cb_cache = ops.latent_losses_forward(z_e, E, k)
    sq_c, commit_alone = ops.commitment_loss_forward(z_e, E, k)
    sq_b, cb_alone = ops.codebook_loss_forward(z_e, E, k)
    np.testing.assert_array_equal(sq, sq_c)
    np.testing.assert_array_equal(sq, sq_b)
    dloss = rng.standard_normal(3).astype(dtype)
    np.testing.assert_array_equal(ops.commitment_loss_backward(dloss, commit_cache),
                                  ops.commitment_loss_backward(dloss, commit_alone))
    np.testing.assert_array_equal(ops.codebook_loss_backward(dloss, cb_cache),
                                  ops.codebook_loss_backward(dloss, cb_alone))
    with pytest.raises(ValueError, match="VQ latent losses: expected indices"):
        ops.latent_losses_forward(z_e, E, k[:, :1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, K, D", [(6272, 128, 16), (37, 7, 3), (0, 5, 2), (4, 1, 1)])
def test_segment_sum_kernel_is_bincount_bit_for_bit(M, K, D, dtype, monkeypatch):
    """The CPU kernel adds in bincount's order in float64: the reference's bits,
    codes no row chose included (the last two of K > 2 are never drawn)."""
    rng = np.random.default_rng(M)
    idx = rng.integers(0, max(K - 2, 1), M)
    values = (rng.standard_normal((M, D)) * 10.0 ** rng.integers(-3, 4, (M, D))).astype(dtype)
    calls = []
    real = kcodes._segment_sum_cpu
    monkeypatch.setattr(kcodes, "_segment_sum_cpu", lambda *a: calls.append(1) or real(*a))
    got = kcodes.segment_sum(idx, values, K)
    assert calls and got.dtype == dtype and got.shape == (K, D)
    monkeypatch.setenv(ENV_VAR, "reference")
    np.testing.assert_array_equal(got, kcodes.segment_sum(idx, values, K))
    assert len(calls) == 1


@pytest.mark.parametrize("bad", [-1, 5])
def test_segment_sum_refuses_indices_outside_the_codebook(bad):
    idx = np.array([0, 2, bad, 1])
    with pytest.raises(ValueError, match=rf"indices in \[0, 5\), got {bad} at position 2"):
        kcodes.segment_sum(idx, np.ones((4, 3), np.float32), 5)


def test_segment_sum_matches_add_at():
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 7, size=50)
    values = rng.standard_normal((50, 4))
    want = np.zeros((9, 4))
    np.add.at(want, idx, values)
    np.testing.assert_allclose(ops.segment_sum(idx, values, 9), want, rtol=1e-13, atol=1e-15)
    assert ops.code_counts(idx, 9).tolist() == np.bincount(idx, minlength=9).tolist()


def test_ema_update_against_the_formula_by_hand():
    """K = 3 codes in 2-D, decay 0.9, epsilon 0.1 (large, so smoothing shows)."""
    decay, eps, K = 0.9, 0.1, 3
    c, S, t = np.zeros(K), np.zeros((K, 2)), 0
    # step 1: codes 0, 0, 2 chosen by (1,2), (3,4), (5,6)
    z1 = np.array([[1.0, 2], [3, 4], [5, 6]])
    c, S, t, E = ops.ema_update(c, S, t, z1, np.array([0, 0, 2]), decay, eps)
    # by hand: c = 0.1 [2, 0, 1], S = 0.1 [[4, 6], [0, 0], [5, 6]], t = 1;
    # debiased: N = [2, 0, 1], m = [[4, 6], [0, 0], [5, 6]], n = 3;
    # smoothed: N~ = (N + 0.1) / 3.3 * 3 = [21/11, 1/11, 1]
    assert t == 1
    np.testing.assert_allclose(c, [0.2, 0.0, 0.1], rtol=1e-15)
    np.testing.assert_allclose(S, [[0.4, 0.6], [0, 0], [0.5, 0.6]], rtol=1e-15)
    np.testing.assert_allclose(E, [[4 * 11 / 21, 6 * 11 / 21], [0, 0], [5, 6]], rtol=1e-14)
    # step 2: code 1 chosen by (0, 0), code 2 by (2, 2)
    z2 = np.array([[0.0, 0], [2, 2]])
    c, S, t, E = ops.ema_update(c, S, t, z2, np.array([1, 2]), decay, eps)
    # by hand: c = 0.9 c + 0.1 [0, 1, 1] = [0.18, 0.1, 0.19];
    #          S = 0.9 S + 0.1 [[0, 0], [0, 0], [2, 2]] = [[.36, .54], [0, 0], [.65, .74]];
    # debias 1 - 0.81 = 0.19
    assert t == 2
    np.testing.assert_allclose(c, [0.18, 0.1, 0.19], rtol=1e-14)
    np.testing.assert_allclose(S, [[0.36, 0.54], [0, 0], [0.65, 0.74]], rtol=1e-14)
    N = [0.18 / 0.19, 0.1 / 0.19, 1.0]
    m = [[0.36 / 0.19, 0.54 / 0.19], [0.0, 0.0], [0.65 / 0.19, 0.74 / 0.19]]
    n = sum(N)
    for j in range(K):
        smoothed = (N[j] + eps) / (n + K * eps) * n
        np.testing.assert_allclose(E[j], [m[j][0] / smoothed, m[j][1] / smoothed], rtol=1e-13)


def test_ema_first_step_is_the_exact_mean():
    """Zero-debiasing: after one step each code is the mean of its vectors."""
    rng = np.random.default_rng(4)
    z = rng.standard_normal((40, 3))
    idx = np.arange(40) % 4
    _, _, _, E = ops.ema_update(np.zeros(5), np.zeros((5, 3)), 0, z, idx, 0.99, 1e-12)
    for j in range(4):
        np.testing.assert_allclose(E[j], z[idx == j].mean(axis=0), rtol=1e-9)
    assert np.all(E[4] == 0)                       # never chosen: collapses to 0


# --------------------------------------------------------------------------
# gradient checks
# --------------------------------------------------------------------------

VQ_CHECKS = [check for spec in vq_checks.SPECS for check in spec.catalogue()]


@pytest.mark.parametrize("name,fn", VQ_CHECKS, ids=[n for n, _ in VQ_CHECKS])
def test_vq_gradchecks_pass(name, fn):
    result = fn(np.random.default_rng(0))
    assert result.errors and result.passed, str(result) + f" {result.errors}"


def test_vq_checks_are_in_the_catalogue():
    names = check_names()
    for name, _ in VQ_CHECKS:
        assert name in names


def test_assignment_gap_and_rejected_draws():
    E = np.array([[0.0, 0], [1, 0]])
    z_e = np.array([[0.4, 0.0]]).reshape(1, 2, 1, 1)
    # distances 0.16 and 0.36: gap 0.2
    assert problems.assignment_gap(z_e, E) == pytest.approx(0.2)
    model, x = problems.draw_vq_model(np.random.default_rng(5))
    gap = problems.assignment_gap(model.encode(x), model.quantizer.codebook.data)
    assert gap > problems.MIN_GAP


class _QueuedNormals:
    """A generator whose standard_normal returns queued arrays first."""

    def __init__(self, queued, rng):
        self.queued, self.rng = list(queued), rng

    def standard_normal(self, shape):
        return self.queued.pop(0) if self.queued else self.rng.standard_normal(shape)


def test_near_ties_are_redrawn():
    # first draw: every vector of z_e = 0 is equally far (1) from codes 0 and 1
    tied_z = np.zeros((2, 3, 2, 2))
    tied_E = np.full((5, 3), 10.0)
    tied_E[0], tied_E[1] = [1, 0, 0], [-1, 0, 0]
    assert problems.assignment_gap(tied_z, tied_E) == 0
    rng = _QueuedNormals([tied_z, tied_E], np.random.default_rng(0))
    z_e, E = problems.latent_problem(rng)
    assert not rng.queued and E.shape == tied_E.shape
    assert not np.array_equal(z_e, tied_z) and problems.assignment_gap(z_e, E) > problems.MIN_GAP


def test_draws_fail_loudly_when_no_gap_is_wide_enough(monkeypatch):
    monkeypatch.setattr(problems, "MIN_GAP", np.inf)
    with pytest.raises(RuntimeError, match="near ties"):
        problems.latent_problem(np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="ties"):
        problems.draw_vq_model(np.random.default_rng(0))


def test_straight_through_gradient_and_unpatched_codebook_loss():
    """dL/dz_e = (decoder's gradient at z_q) + 2 beta/N (z_e - z_q), and the codebook
    gradient is that of ||sg(z_e) - z_q||^2 with z_q = e_k itself."""
    model, x = problems.draw_vq_model(np.random.default_rng(6))
    N, beta = x.shape[0], model.commitment
    seen = {}
    real_backward = model.encoder.backward

    def recording(dz):
        seen["dz_e"] = dz.copy()
        return real_backward(dz)
    model.encoder.backward = recording
    model.zero_grad()
    loss, parts = model.loss(x, training=False)
    model.backward()
    d_codebook = model.quantizer.codebook.grad.copy()

    z_e, E, k = model.encode(x), model.quantizer.codebook.data, model.codes(x)
    z_q = np.empty_like(z_e)
    for n, h, w in np.ndindex(*k.shape):
        z_q[n, :, h, w] = E[k[n, h, w]]
    logits = model.decoder.forward(z_q)
    dz_q = model.decoder.backward((1 / (1 + np.exp(-logits)) - x) / N)
    np.testing.assert_allclose(seen["dz_e"], dz_q + 2 * beta / N * (z_e - z_q),
                               rtol=1e-12, atol=1e-15)
    want = np.zeros_like(E)
    for n, h, w in np.ndindex(*k.shape):
        want[k[n, h, w]] += 2 / N * (E[k[n, h, w]] - z_e[n, :, h, w])
    np.testing.assert_allclose(d_codebook, want, rtol=1e-12, atol=1e-15)
    assert np.abs(d_codebook).max() > 1e-3
    sq = ((z_e - z_q) ** 2).sum() / N
    assert float(parts["vq"]) == pytest.approx((1 + beta) * sq, rel=1e-12)


WRONG_BACKWARDS = {
    "no straight-through (decoder gradient dropped)":
        ("vq_quantize_backward", lambda dz_q, cache: np.zeros_like(dz_q)),
    "codebook loss on the patched z_q (no codebook gradient)":
        ("codebook_loss_backward", lambda dloss, cache: np.zeros((cache[2], cache[0].shape[1]))),
    "codebook gradient with the wrong sign":
        ("codebook_loss_backward", lambda dloss, cache: -ops.codebook_loss_backward(dloss, cache)),
    "commitment term missing":
        ("commitment_loss_backward", lambda dloss, cache: np.zeros(cache[1])),
    "commitment gradient without the factor 2":
        ("commitment_loss_backward", lambda dloss, cache: 0.5 * ops.commitment_loss_backward(
            dloss, cache)),
}


@pytest.mark.parametrize("case", sorted(WRONG_BACKWARDS))
def test_wrong_model_backward_is_caught(case, monkeypatch):
    model, x = problems.draw_vq_model(np.random.default_rng(7))   # passes: test_vq_gradchecks_pass
    attr, wrong = WRONG_BACKWARDS[case]
    monkeypatch.setattr(vq_module, attr, wrong)
    bad = vq_checks.model_gradcheck(case, model, x, np.random.default_rng(0))
    assert not bad.passed and bad.max_error > 1e-3, str(bad)


def test_wrong_op_backward_is_caught(monkeypatch):
    real = ops.codebook_loss_backward
    monkeypatch.setattr(ops, "codebook_loss_backward",
                        lambda dloss, cache: 0.5 * real(dloss, cache))  # d/de of ||z - e||^2 / 2
    from scratchvae.gradcheck import check_op
    z_e, E = problems.latent_problem(np.random.default_rng(8))
    bad = check_op("halved", lambda codebook: ops.codebook_loss_forward(
        z_e, codebook, ops.vq_assign(z_e, codebook)), ops.codebook_loss_backward,
        {"codebook": E}, ["codebook"], rng=np.random.default_rng(0))
    assert not bad.passed


# --------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------

def test_architecture_and_parameter_count():
    model = build_model("vq-vae", latent_dim=16, rng=np.random.default_rng(0))
    # enc 544 + 32,832 + 1,040; codebook 2,048; dec 9,280 + 32,800 + 513
    assert model.num_parameters() == 79057
    assert model.quantizer.codebook.shape == (128, 16)
    x = np.random.default_rng(1).random((3, 1, 28, 28)).astype(np.float32)
    assert model.encode(x).shape == (3, 16, 7, 7)
    assert model.codes(x).shape == (3, 7, 7)
    assert model.reconstruct(x).shape == x.shape
    loss, parts = model.loss(x, rng=np.random.default_rng(2))
    assert np.isfinite(float(loss)) and parts["recon_per_image"].shape == (3,)
    assert float(loss) == pytest.approx(float(parts["recon"] + parts["vq"]), rel=1e-6)
    with pytest.raises(NotImplementedError, match="prior"):
        model.sample(4, np.random.default_rng(0))


def test_codebook_inits():
    rng = np.random.default_rng(0)
    u = vq_vae(codebook_init="uniform", rng=rng).quantizer.codebook.data
    n = vq_vae(codebook_init="normal", rng=rng).quantizer.codebook.data
    assert np.abs(u).max() <= 1 / 128 and np.abs(u).max() > 0.9 / 128
    assert 0.9 < n.std() < 1.1 and np.abs(n).max() > 2
    with pytest.raises(ValueError, match="codebook_init"):
        vq_vae(codebook_init="zeros")


def test_vae_options_are_refused():
    vq_vae(likelihood="bernoulli", beta=1.0, n_samples=1, gaussian_variance=3.0,
           kl_warmup_steps=0, capacity_gamma=0.0)          # neutral: accepted
    for bad in ({"beta": 4.0}, {"likelihood": "gaussian"}, {"n_samples": 2},
                {"kl_warmup_steps": 100}):
        with pytest.raises(ValueError, match="does not apply to a VQ-VAE"):
            vq_vae(**bad)


def _quantizer(ema, restart_after, codes):
    q = VectorQuantizer(len(codes), 2, ema=ema, restart_after=restart_after,
                        rng=np.random.default_rng(0), dtype=np.float64)
    q.codebook.data[...] = codes
    return q


@pytest.mark.parametrize("ema", [False, True])
def test_dead_codes_restart_from_batch_vectors(ema):
    codes = np.array([[0.0, 0], [100, 100], [1, 1], [-100, 50]])  # codes 1 and 3 never chosen
    q = _quantizer(ema, restart_after=2, codes=codes)
    z_e = np.random.default_rng(1).random((2, 2, 3, 3))             # near codes 0 and 2
    rows = ops.as_rows(z_e)
    rng = np.random.default_rng(9)
    twin = np.random.default_rng(9)
    q.update(z_e, q.assign(z_e), rng)                               # 1 step unused: kept
    # (under EMA an unchosen code is m_j / N~_j = 0 / epsilon-ish = 0: it collapses to the
    # origin, the reason restarts matter with zero-debiased averages)
    assert np.array_equal(q.codebook.data[[1, 3]], 0 * codes[[1, 3]] if ema else codes[[1, 3]])
    assert q.unused_steps.tolist() == [0, 1, 0, 1]
    q.update(z_e, q.assign(z_e), rng)                               # 2 steps: restarted
    picks = twin.choice(rows.shape[0], size=2, replace=False)
    np.testing.assert_array_equal(q.codebook.data[[1, 3]], rows[picks])
    assert picks[0] != picks[1]
    assert q.unused_steps.tolist() == [0, 0, 0, 0]
    if ema:   # statistics restart as if each had been chosen once by its vector
        debias = 1 - q.decay ** int(q.ema_steps)
        np.testing.assert_allclose(q.ema_count[[1, 3]] / debias, [1, 1])
        np.testing.assert_allclose(q.ema_sum[[1, 3]] / debias, rows[picks])
    else:     # codes 0 and 2 untouched without EMA
        assert np.array_equal(q.codebook.data[[0, 2]], codes[[0, 2]])


def test_restarts_from_counter_draws_pick_the_shuffles_rows():
    """With a CounterDraws key (a captured step) the dead codes take the rows of
    kernels/codes.py's shuffle: distinct rows, another set for another counter."""
    from kernels.codes import fisher_yates_picks
    from kernels.counter_rng import CounterDraws

    codes = np.array([[0.0, 0], [100, 100], [1, 1], [-100, 50]])   # codes 1 and 3 never chosen
    z_e = np.random.default_rng(1).random((2, 2, 3, 3))
    rows = ops.as_rows(z_e)
    picked = []
    for counter in (7, 8):
        q = _quantizer(False, restart_after=1, codes=codes)
        q.update(z_e, q.assign(z_e), CounterDraws(5, 2, np.array([counter])))
        picks = fisher_yates_picks(2, rows.shape[0], 5, 2, counter)
        np.testing.assert_array_equal(q.codebook.data[[1, 3]], rows[picks])
        assert np.array_equal(q.codebook.data[[0, 2]], codes[[0, 2]])
        assert q.unused_steps.tolist() == [0, 0, 0, 0] and picks[0] != picks[1]
        picked.append(picks.tolist())
    assert picked[0] != picked[1]
    q = _quantizer(True, restart_after=1, codes=codes)
    with pytest.raises(ValueError, match="EMA"):
        q.update(z_e, q.assign(z_e), CounterDraws(5, 2, np.array([7])))


def test_the_restart_shuffle_draws_rows_uniformly_without_replacement():
    """Over 3,000 counters, 3 picks of 8 rows: always distinct, and each row as
    often first, second or third (chi-square, 8 bins per position)."""
    from scipy.stats import chisquare

    from kernels.codes import fisher_yates_picks

    picks = np.array([fisher_yates_picks(3, 8, 11, 2, c) for c in range(3000)])
    assert all(len(set(p)) == 3 for p in picks)
    for position in range(3):
        observed = np.bincount(picks[:, position], minlength=8)
        assert chisquare(observed).pvalue > 1e-3, (position, observed)


def test_restarts_need_an_rng():
    model = vq_vae(restart_after=1, rng=np.random.default_rng(0))
    x = np.zeros((2, 1, 28, 28), np.float32)
    with pytest.raises(ValueError, match="rng"):
        model.loss(x)
    model.loss(x, training=False)                  # evaluation needs none


def test_ema_codebook_is_not_trained_by_gradient_and_only_updates_in_training():
    model = vq_vae(ema=True, restart_after=0, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).random((4, 1, 28, 28)).astype(np.float32)
    before = model.quantizer.codebook.data.copy()
    model.loss(x, training=False)
    assert np.array_equal(model.quantizer.codebook.data, before)
    model.loss(x)
    model.backward()
    assert model.quantizer.codebook.grad is None
    assert not np.array_equal(model.quantizer.codebook.data, before)
    assert int(model.quantizer.ema_steps) == 1


def test_state_dict_carries_the_buffers():
    rng = np.random.default_rng(0)
    a = vq_vae(ema=True, restart_after=3, image_shape=(1, 8, 8), rng=rng)
    x = rng.random((4, 1, 8, 8)).astype(np.float32)
    for _ in range(3):
        a.loss(x, rng=rng)
    state = a.state_dict()
    for name in VectorQuantizer.BUFFERS:
        assert "quantizer." + name in state
    b = vq_vae(ema=True, restart_after=3, image_shape=(1, 8, 8), rng=np.random.default_rng(5))
    b.load_state_dict(state)
    for name in VectorQuantizer.BUFFERS:
        assert np.array_equal(getattr(a.quantizer, name), getattr(b.quantizer, name))
    ra, rb = np.random.default_rng(3), np.random.default_rng(3)
    a.loss(x, rng=ra)
    b.loss(x, rng=rb)
    assert np.array_equal(a.quantizer.codebook.data, b.quantizer.codebook.data)
    del state["quantizer.ema_sum"]
    with pytest.raises(ValueError, match="ema_sum"):
        b.load_state_dict(state)


def test_test_metrics_by_hand():
    model = vq_vae(rng=np.random.default_rng(0))
    x = np.random.default_rng(1).random((30, 1, 28, 28)).astype(np.float32)
    m = model.test_metrics(x, batch_size=7)
    k = model.codes(x).reshape(-1)
    counts = np.bincount(k, minlength=128)
    p = counts[counts > 0] / k.size
    assert m["codes_used"] == (counts > 0).sum()
    assert m["perplexity"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-12)
    _, parts = model.loss(x, training=False)
    assert m["test_recon"] == pytest.approx(float(parts["recon"]), rel=1e-5)
    mse = ((model.reconstruct(x).astype(np.float64) - x) ** 2).mean()
    assert m["test_mse"] == pytest.approx(mse, rel=1e-5)
    assert m["test_loss"] == pytest.approx(m["test_recon"] + m["test_vq_loss"], rel=1e-12)


# --------------------------------------------------------------------------
# training, resume, CLI (bundled sample, tiny)
# --------------------------------------------------------------------------

TINY = dict(model="vq-vae", epochs=2, batch_size=32, train_limit=128, test_limit=64,
            use_sample=True, eval_batch_size=64, vq_ema=True, vq_restart=1)  # all the state


def test_train_and_resume_exactly_with_ema_and_restarts(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    history = train(TrainConfig(**TINY), str(straight), progress=False, log=_quiet)
    for key in ("test_recon", "test_mse", "perplexity", "codes_used"):
        assert key in history[-1]
    train(TrainConfig(**{**TINY, "epochs": 1}), str(split), progress=False, log=_quiet)
    train(TrainConfig(**TINY), str(split), resume=True, progress=False, log=_quiet)
    a, _, _ = ckpt.load_checkpoint(str(straight / "checkpoint.npz"))
    b, _, _ = ckpt.load_checkpoint(str(split / "checkpoint.npz"))
    assert "quantizer.ema_sum" in a
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    ev = evaluate_run(str(straight), log=_quiet)
    assert ev["test_recon"] == pytest.approx(history[-1]["test_recon"], rel=1e-12)


def test_config_validates_vq_fields():
    for bad in ({"vq_codes": 0}, {"vq_init": "zeros"}, {"vq_decay": 1.0}, {"vq_restart": -1}):
        with pytest.raises(ValueError, match="vq_"):
            TrainConfig(model="vq-vae", **bad)


def test_cli_train_and_evaluate_json(tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = ["train", "--model", "vq-vae", "--sample", "--epochs", "1", "--batch-size", "32",
            "--train-limit", "64", "--test-limit", "32", "--out", out, "--no-progress",
            "--no-vq-ema", "--vq-init", "normal", "--vq-restart", "0", "--vq-codes", "16"]
    assert main(argv) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["vq_ema"], config["vq_init"], config["vq_restart"], config["vq_codes"]) == \
        (False, "normal", 0, 16)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", out, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("test_recon", "test_mse", "perplexity", "codes_used", "test_vq_loss"):
        assert key in result
    assert 1 <= result["codes_used"] <= 16


def test_quantizer_rejects_bad_sizes():
    for kwargs, message in [(dict(num_codes=0, code_dim=2), "num_codes to be an int >= 1, got 0"),
                            (dict(num_codes=4, code_dim=1.5), "code_dim to be an int >= 1, got 1.5")]:
        with pytest.raises(ValueError, match=f"^VectorQuantizer: expected {message}$"):
            VectorQuantizer(rng=np.random.default_rng(0), **kwargs)

"""im2col / col2im (channels-last images): Numba CPU and CUDA kernels against the
plain xp reference."""
import textwrap

import numpy as np
import pytest

from kernels import im2col as K
from kernels._dispatch import ENV_VAR
from kernels.im2col import col2im, col2im_reference, im2col, im2col_reference
from gpu_backend import run_on_gpu


@pytest.fixture(autouse=True)
def _auto_dispatch(monkeypatch):
    """The default dispatch whatever $SCRATCHVAE_KERNELS the shell exports: with
    "reference" exported, kernel-vs-reference tests would compare the reference with
    itself. Tests that want the reference set it themselves."""
    monkeypatch.delenv(ENV_VAR, raising=False)


def _random_configs(rng, count):
    """Random (x_shape, kernel, stride, padding) with a positive output size."""
    configs = []
    while len(configs) < count:
        N = int(rng.choice([1, 2, 3]))
        C = int(rng.integers(1, 4))
        H, W = (int(v) for v in rng.integers(1, 10, size=2))
        kernel = tuple(int(v) for v in rng.integers(1, 6, size=2))
        stride = tuple(int(v) for v in rng.integers(1, 4, size=2))
        padding = tuple(int(v) for v in rng.integers(0, 3, size=2))
        if (H + 2 * padding[0] - kernel[0]) < 0 or (W + 2 * padding[1] - kernel[1]) < 0:
            continue
        configs.append(((N, H, W, C), kernel, stride, padding))
    return configs


CONFIGS = _random_configs(np.random.default_rng(1234), 60) + [
    ((2, 28, 28, 1), (4, 4), (2, 2), (1, 1)),   # conv-VAE shapes (N, H, W, C)
    ((2, 14, 14, 5), (4, 4), (2, 2), (1, 1)),
    ((2, 9, 8, 16), (3, 3), (2, 1), (1, 2)),    # C >= 16: col2im's vector path
    ((1, 7, 7, 33), (4, 4), (2, 2), (1, 1)),
    ((2, 5, 6, 17), (2, 3), (3, 1), (0, 2)),
    ((1, 5, 7, 1), (5, 7), (1, 1), (0, 0)),     # kernel covers the image: OH = OW = 1
    ((1, 1, 1, 2), (3, 3), (1, 1), (1, 1)),     # 1x1 image, all but the centre padding
    ((2, 6, 5, 2), (1, 1), (3, 2), (2, 2)),     # 1x1 kernel with stride and padding
]


def _ids(config):
    shape, k, s, p = config
    return f"x{shape}-k{k}-s{s}-p{p}"


@pytest.mark.parametrize("config", CONFIGS, ids=[_ids(c) for c in CONFIGS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_match_reference_exactly(config, dtype):
    shape, k, s, p = config
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    cols = im2col(x, k, s, p)
    ref = im2col_reference(x, k, s, p)
    assert cols.dtype == dtype and cols.flags.c_contiguous
    assert np.array_equal(cols, ref)
    # col2im: both add each pixel's contributions in increasing (i, j) order
    # starting from 0, so even float32 sums agree bit for bit
    g = rng.standard_normal(cols.shape).astype(dtype)
    img = col2im(g, shape, k, s, p)
    assert img.shape == shape and img.dtype == dtype and img.flags.c_contiguous
    assert np.array_equal(img, col2im_reference(g, shape, k, s, p))


@pytest.mark.parametrize("config", CONFIGS, ids=[_ids(c) for c in CONFIGS])
def test_both_cpu_strategies_match_reference_exactly(config):
    """The run kernels and the index-table kernels, each on every shape (the
    public functions pick one of them by the number of channels)."""
    shape, k, s, p = config
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    ref = im2col_reference(x, k, s, p)
    g = rng.standard_normal(ref.shape).astype(np.float32)
    img_ref = col2im_reference(g, shape, k, s, p)
    geometry = (*shape[1:], *k, *s, *p)
    for name, fill in [("runs", lambda c: K._im2col_cpu(x, c, *k, *s, *p)),
                       ("table", lambda c: K._im2col_table_cpu(x, c, K.window_offsets(*geometry)))]:
        cols = np.full_like(ref, np.nan)
        fill(cols)
        assert np.array_equal(cols, ref), name
    for name, gather in [("runs", lambda im: K._col2im_cpu(g, im, *k, *s, *p)),
                         ("table", lambda im: K._col2im_table_cpu(g, im, *K.contributions(*geometry),
                                                                 np.float32(0)))]:
        img = np.full(shape, np.nan, np.float32)
        gather(img)
        assert np.array_equal(img, img_ref), name


def test_contribution_lists_are_in_kernel_offset_order():
    """col2im's table: each pixel's entries sorted by (i, j), and each entry read once."""
    geometry = (6, 5, 2, 4, 3, 2, 1, 1, 2)                 # H, W, C, kernel, stride, padding
    offsets = K.window_offsets(*geometry)
    starts, entries = K.contributions(*geometry)
    assert sorted(entries) == list(np.flatnonzero(offsets >= 0))
    K_cols = 4 * 3 * 2
    for q in range(6 * 5 * 2):
        mine = entries[starts[q]:starts[q + 1]]
        assert (offsets[mine] == q).all()
        kernel_offsets = (mine % K_cols) // 2
        assert (np.diff(kernel_offsets) > 0).all()


@pytest.mark.parametrize("channels, kernels", [(3, ("_im2col_table_cpu", "_col2im_table_cpu")),
                                               (4, ("_im2col_cpu", "_col2im_cpu"))])
def test_dispatch_uses_the_numba_kernels(monkeypatch, channels, kernels):
    """The public functions really run the CPU kernels (else the test above is
    vacuous): the index tables up to TABLE_CHANNELS channels, the runs above."""
    assert K.TABLE_CHANNELS == 3
    calls = []
    for name in kernels:
        real = getattr(K, name)
        monkeypatch.setattr(K, name, lambda *a, _n=name, _f=real: calls.append(_n) or _f(*a))
    x = np.ones((2, 5, 5, channels), np.float32)
    cols = im2col(x, (3, 3), (1, 1), (1, 1))
    col2im(cols, x.shape, (3, 3), (1, 1), (1, 1))
    assert calls == list(kernels)


def test_env_forces_reference(monkeypatch):
    def boom(*args):
        raise AssertionError("kernel called although SCRATCHVAE_KERNELS=reference")

    for name in ("_im2col_cpu", "_col2im_cpu", "_im2col_table_cpu", "_col2im_table_cpu"):
        monkeypatch.setattr(K, name, boom)
    monkeypatch.setenv("SCRATCHVAE_KERNELS", "reference")
    x = np.random.default_rng(0).standard_normal((2, 6, 5, 3))
    cols = im2col(x, (3, 2), (2, 1), (1, 0))
    assert np.array_equal(cols, im2col_reference(x, (3, 2), (2, 1), (1, 0)))
    img = col2im(cols, x.shape, (3, 2), (2, 1), (1, 0))
    assert np.array_equal(img, col2im_reference(cols, x.shape, (3, 2), (2, 1), (1, 0)))


def test_small_example_by_hand():
    """A 3x3 image, 2x2 kernel, stride 1, padding 0: the rows are the four windows."""
    x = np.arange(9, dtype=np.float64).reshape(1, 3, 3, 1)
    cols = im2col(x, (2, 2), (1, 1), (0, 0))
    # rows: windows at (0,0), (0,1), (1,0), (1,1); columns: offsets (0,0), (0,1), (1,0), (1,1)
    expected = np.array([[0, 1, 3, 4],
                         [1, 2, 4, 5],
                         [3, 4, 6, 7],
                         [4, 5, 7, 8]], dtype=np.float64)
    assert np.array_equal(cols, expected)
    # col2im of all ones counts how many windows cover each pixel
    counts = col2im(np.ones_like(cols), x.shape, (2, 2), (1, 1), (0, 0))
    assert np.array_equal(counts[0, :, :, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


def test_channels_are_innermost():
    """Two channels: columns interleave them as (i, j, c)."""
    x = np.stack([np.arange(4.0), 10 + np.arange(4.0)], axis=-1).reshape(1, 2, 2, 2)
    cols = im2col(x, (2, 2), (1, 1), (0, 0))                # one window: the whole image
    assert np.array_equal(cols, [[0, 10, 1, 11, 2, 12, 3, 13]])


def test_padding_reads_zeros():
    x = np.ones((1, 2, 2, 1), np.float32)
    cols = im2col(x, (3, 3), (1, 1), (1, 1))            # OH = OW = 2
    # the window of output (0, 0) covers rows/cols -1..1: 4 of its 9 reads are inside
    assert cols[0].sum() == 4 and set(np.unique(cols)) == {0.0, 1.0}
    assert np.array_equal(cols[0].reshape(3, 3), [[0, 0, 0], [0, 1, 1], [0, 1, 1]])


@pytest.mark.parametrize("config", CONFIGS[:20] + CONFIGS[-5:], ids=_ids)
def test_col2im_is_the_adjoint_of_im2col(config):
    """<im2col(x), G> == <x, col2im(G)> for all x, G (float64, 1e-12 relative)."""
    shape, k, s, p = config
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape)
    g = rng.standard_normal(im2col(x, k, s, p).shape)
    cols = im2col(x, k, s, p)
    lhs = np.vdot(cols, g)
    rhs = np.vdot(x, col2im(g, shape, k, s, p))
    assert abs(lhs - rhs) <= 1e-12 * np.vdot(np.abs(cols), np.abs(g))


def _compiled_im2col(x, k, s, p):
    """im2col by both Numba CPU kernels (x C-contiguous); they must agree."""
    cols = [np.full(im2col_reference(x, k, s, p).shape, np.nan, x.dtype) for _ in range(2)]
    K._im2col_cpu(x, cols[0], *k, *s, *p)
    K._im2col_table_cpu(x, cols[1], K.window_offsets(*x.shape[1:], *k, *s, *p))
    assert np.array_equal(cols[0], cols[1])
    return cols[0]


def _compiled_col2im(g, shape, k, s, p):
    """col2im by both Numba CPU kernels (g C-contiguous); they must agree."""
    imgs = [np.full(shape, np.nan, g.dtype) for _ in range(2)]
    K._col2im_cpu(g, imgs[0], *k, *s, *p)
    K._col2im_table_cpu(g, imgs[1], *K.contributions(*shape[1:], *k, *s, *p), g.dtype.type(0))
    assert np.array_equal(imgs[0], imgs[1])
    return imgs[0]


def test_non_contiguous_inputs(monkeypatch):
    """Strided views go to the reference (the Numba kernels need C-contiguous
    arrays), and the result equals the compiled kernels' on a contiguous copy."""
    picked, real_choose = [], K.choose

    def choose(*arrays):                              # the dispatcher, recording its answers
        picked.append(real_choose(*arrays))
        return picked[-1]
    monkeypatch.setattr(K, "choose", choose)
    rng = np.random.default_rng(3)
    base = rng.standard_normal((4, 7, 9, 3)).astype(np.float32)
    views = [base.transpose(0, 2, 1, 3),              # (4, 9, 7, 3), transposed
             base[::2, 1:6, ::2],                     # sliced
             base[:, :, :, :2].transpose(3, 2, 1, 0)]  # (2, 9, 7, 4): 4 channels
    for x in views:
        assert not x.flags.c_contiguous
        xc = np.ascontiguousarray(x)
        for k, s, p in [((3, 2), (2, 1), (1, 0)), ((2, 2), (1, 1), (0, 1))]:
            picked.clear()
            cols = im2col(x, k, s, p)
            assert picked == ["reference"]
            assert np.array_equal(cols, _compiled_im2col(xc, k, s, p))
            assert np.array_equal(cols, im2col_reference(xc, k, s, p))
            g = np.asfortranarray(rng.standard_normal(cols.shape).astype(np.float32))
            assert not g.flags.c_contiguous
            img = col2im(g, x.shape, k, s, p)
            assert picked == ["reference", "reference"]
            gc = np.ascontiguousarray(g)
            assert np.array_equal(img, _compiled_col2im(gc, x.shape, k, s, p))
            assert np.array_equal(img, col2im_reference(gc, x.shape, k, s, p))
            # and the contiguous copies do take the compiled kernels
            picked.clear()
            im2col(xc, k, s, p)
            col2im(gc, x.shape, k, s, p)
            assert picked == ["cpu", "cpu"]


def test_bad_arguments_raise():
    x = np.zeros((2, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match=r"im2col: expected a 4-D"):
        im2col(x[0], (2, 2))
    with pytest.raises(ValueError, match=r"im2col: expected a positive output size, got \(0, "):
        im2col(x, (5, 2))
    with pytest.raises(ValueError, match=r"im2col: expected kernel_size >= 1"):
        im2col(x, (0, 2))
    with pytest.raises(ValueError, match=r"col2im: expected columns of shape \(18, 12\), got \(17, 12\)"):
        col2im(np.zeros((17, 12), np.float32), (2, 4, 4, 3), (2, 2), (1, 1), (0, 0))


GPU_SCRIPT = textwrap.dedent("""
    import numpy as np
    import gpu_backend
    gpu_backend.check_child()   # the simulator on the stand-in, or a real GPU
    from kernels import im2col as K

    rng = np.random.default_rng(0)
    cases = [((2, 5, 4, 2), (3, 2), (2, 1), (1, 0)),     # (N, H, W, C)
             ((1, 4, 4, 1), (4, 4), (2, 2), (1, 1)),
             ((2, 3, 5, 3), (1, 1), (1, 1), (0, 0)),
             ((1, 3, 3, 2), (3, 3), (3, 1), (2, 1))]
    for shape, k, s, p in cases:
        for dtype in (np.float32, np.float64):
            x = rng.standard_normal(shape).astype(dtype)
            ref = K.im2col_reference(x, k, s, p)
            cols = np.full(ref.shape, np.nan, dtype)
            K._im2col_cuda(x, cols, k, s, p)
            assert np.array_equal(cols, ref), ("im2col", shape, k, s, p)
            g = rng.standard_normal(ref.shape).astype(dtype)
            img = np.full(shape, np.nan, dtype)
            K._col2im_cuda(g, img, k, s, p)
            assert np.array_equal(img, K.col2im_reference(g, shape, k, s, p)), ("col2im", shape)
    print("GPU OK")
""")


@pytest.mark.gpu
def test_cuda_kernels_on_the_gpu_backend():
    run_on_gpu(GPU_SCRIPT)

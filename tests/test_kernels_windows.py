"""Window classes (kernels/windows.py): the classes of a geometry against a window-
by-window count of in-image taps; one class's columns against im2col_reference,
its rows of a matrix against NumPy's indexing, its col2im against the adjoint
identity and col2im_reference; the weight columns packed in kernels/conv_gemm.py
against pack_columns; the plans' read-only arrays."""
import numpy as np
import pytest

import kernels.conv_gemm as G
from kernels.im2col import col2im_reference, conv_output_size
from kernels.windows import (class_col2im_add, class_im2col, class_rows,
                             classes_im2col_reference, pack_columns, window_classes)

#: (H, W, C, kernel, stride, padding): the conv VAE's middle layer, a 3x3 layer
#: over 7x7, uneven and asymmetric ones, one without padding, and one whose
#: first and last windows lie wholly in the padding (empty classes)
GEOMETRIES = [
    (14, 14, 32, (4, 4), (2, 2), (1, 1)),
    (7, 7, 16, (3, 3), (1, 1), (1, 1)),
    (9, 8, 4, (3, 3), (1, 2), (2, 1)),
    (6, 7, 5, (2, 1), (1, 1), (0, 1)),
    (5, 6, 4, (5, 3), (3, 2), (2, 0)),
    (8, 7, 5, (3, 2), (2, 1), (0, 0)),
    (2, 3, 5, (2, 2), (1, 2), (3, 2)),
]


def _in_image_taps(H, W, kh, kw, sh, sw, ph, pw, oh, ow):
    """The kernel offsets (i, j) of window (oh, ow) that read the image, counted one by one."""
    return {(i, j) for i in range(kh) for j in range(kw)
            if 0 <= oh * sh - ph + i < H and 0 <= ow * sw - pw + j < W}


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_classes_hold_every_window_once_with_its_in_image_taps(geometry):
    H, W, C, (kh, kw), (sh, sw), (ph, pw) = geometry
    cls = window_classes(H, W, C, kh, kw, sh, sw, ph, pw)
    OH, OW = conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw)
    assert sorted(cls.pixels.tolist()) == list(range(OH * OW))
    assert cls.starts[0] == 0 and cls.starts[-1] == OH * OW
    assert len(set(map(tuple, cls.bounds.tolist()))) == cls.bounds.shape[0]
    for k, (ilo, ihi, jlo, jhi) in enumerate(cls.bounds.tolist()):
        pix = cls.pixels[cls.starts[k]:cls.starts[k + 1]]
        assert pix.size and list(pix) == sorted(pix)
        rect = {(i, j) for i in range(ilo, ihi) for j in range(jlo, jhi)}
        for p in pix.tolist():
            assert _in_image_taps(H, W, kh, kw, sh, sw, ph, pw, p // OW, p % OW) == rect
        want = [(i * kw + j) * C + c for i in range(ilo, ihi) for j in range(jlo, jhi)
                for c in range(C)]
        assert cls.columns[cls.col_starts[k]:cls.col_starts[k + 1]].tolist() == want


def test_the_conv_vae_middle_layer_has_nine_classes_and_a_seventh_of_padding():
    cls = window_classes(14, 14, 32, 4, 4, 2, 2, 1, 1)
    assert cls.bounds.tolist()[4] == [0, 4, 0, 4]             # the interior
    assert np.diff(cls.starts).tolist() == [1, 5, 1, 5, 25, 5, 1, 5, 1]
    used = (np.diff(cls.starts) * np.diff(cls.col_starts)).sum()
    assert used / (49 * 512) == pytest.approx(1 - 0.138, abs=1e-3)


def test_the_arrays_are_read_only_and_cached():
    cls = window_classes(7, 7, 16, 3, 3, 1, 1, 1, 1)
    assert cls is window_classes(7, 7, 16, 3, 3, 1, 1, 1, 1)
    for a in cls:
        with pytest.raises(ValueError):
            a[...] = 0


def _class_columns(x, cls, geometry, k, n0, n1):
    H, W, C, (kh, kw), (sh, sw), (ph, pw) = geometry
    ilo, ihi, jlo, jhi = cls.bounds[k]
    p0, p1 = cls.starts[k], cls.starts[k + 1]
    OW = conv_output_size(W, kw, sw, pw)
    cols = np.full((n1 - n0) * (p1 - p0) * (ihi - ilo) * (jhi - jlo) * C, np.nan, x.dtype)
    class_im2col(x, n0, n1, cols, cls.pixels, p0, p1, OW, ilo, ihi, jlo, jhi, sh, sw, ph, pw)
    return cols


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_class_columns_are_the_reference_rows_and_columns(geometry, dtype):
    H, W, C, kernel, stride, padding = geometry
    x = np.random.default_rng(0).standard_normal((3, H, W, C)).astype(dtype)
    cls = window_classes(H, W, C, *kernel, *stride, *padding)
    want = classes_im2col_reference(x, kernel, stride, padding)
    per_image = [w.reshape(3, -1) for w in want]
    for k in range(cls.bounds.shape[0]):
        np.testing.assert_array_equal(_class_columns(x, cls, geometry, k, 0, 3),
                                      want[k].reshape(-1))
        np.testing.assert_array_equal(_class_columns(x, cls, geometry, k, 1, 3),   # some images
                                      per_image[k][1:].reshape(-1))


@pytest.mark.parametrize("geometry", GEOMETRIES[:3])
def test_class_rows_are_the_rows_of_the_class_windows(geometry):
    """class_rows gathers, image by image, the rows of a matrix (one per window)
    of one class's windows: the rows that meet the class's columns."""
    H, W, C, kernel, stride, padding = geometry
    cls = window_classes(H, W, C, *kernel, *stride, *padding)
    P = cls.pixels.shape[0]
    R = np.random.default_rng(3).standard_normal((4 * P, 3))
    for k in range(cls.bounds.shape[0]):
        pix = cls.pixels[cls.starts[k]:cls.starts[k + 1]]
        out = np.full(3 * pix.size * 3, np.nan)
        assert class_rows(R, 1, 4, P, cls.pixels, cls.starts[k], cls.starts[k + 1], out) \
            == 3 * pix.size
        want = R.reshape(4, P, 3)[1:4][:, pix].reshape(-1)
        np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_class_col2im_is_the_adjoint_and_the_reference(geometry):
    """<im2col_k(x), c> = <x, col2im_k(c)> for each class, and the classes' col2im
    together equal col2im_reference of the whole column matrix."""
    H, W, C, kernel, stride, padding = geometry
    rng = np.random.default_rng(1)
    N = 2
    x = rng.standard_normal((N, H, W, C))
    cls = window_classes(H, W, C, *kernel, *stride, *padding)
    OH, OW = (conv_output_size(H, kernel[0], stride[0], padding[0]),
              conv_output_size(W, kernel[1], stride[1], padding[1]))
    full = np.zeros((N, OH * OW, kernel[0] * kernel[1] * C))
    total = np.zeros_like(x)
    for k, (ilo, ihi, jlo, jhi) in enumerate(cls.bounds.tolist()):
        p0, p1 = cls.starts[k], cls.starts[k + 1]
        width = cls.col_starts[k + 1] - cls.col_starts[k]
        c = rng.standard_normal(N * (p1 - p0) * width)
        y = np.zeros_like(x)
        class_col2im_add(c, 0, N, y, cls.pixels, p0, p1, OW, ilo, ihi, jlo, jhi, *stride,
                         *padding)
        cols_x = _class_columns(x, cls, geometry, k, 0, N)
        assert np.dot(cols_x, c) == pytest.approx(np.sum(x * y), rel=1e-12, abs=1e-12)
        total += y
        taps = cls.columns[cls.col_starts[k]:cls.col_starts[k + 1]]
        block = c.reshape(N, p1 - p0, width)
        for n in range(N):
            full[n][np.ix_(cls.pixels[p0:p1], taps)] = block[n]
    want = col2im_reference(full.reshape(N * OH * OW, -1), x.shape, kernel, stride, padding)
    np.testing.assert_allclose(total, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_packed_weight_columns_equal_pack_columns(geometry):
    """conv_gemm's plan packs the classes whose columns are not one block of Wm and
    addresses the others in place: both give pack_columns' columns."""
    H, W, C, kernel, stride, padding = geometry
    kh, kw = kernel
    cls = window_classes(H, W, C, *kernel, *stride, *padding)
    M = np.random.default_rng(2).standard_normal((5, kh * kw * C)).astype(np.float32)
    want, offsets = pack_columns(M, cls)
    plan = G._class_plan(H, W, C, *kernel, *stride, *padding, 4, G.CHUNK_BYTES, 4, (6,))
    packed, got_offsets = G._packed(M, plan, kw, C)
    for k, (ilo, ihi, jlo, jhi) in enumerate(cls.bounds.tolist()):
        width = cls.col_starts[k + 1] - cls.col_starts[k]
        if width == 0:                          # windows wholly in the padding
            continue
        mine = want[offsets[k]:offsets[k] + 5 * width].reshape(5, width)
        if got_offsets[k] < 0:                  # in place: a block of kernel rows
            assert (jlo, jhi) == (0, kw)
            np.testing.assert_array_equal(M[:, ilo * kw * C:ihi * kw * C], mine)
        else:
            np.testing.assert_array_equal(
                packed[got_offsets[k]:got_offsets[k] + 5 * width].reshape(5, width), mine)
    for a in (plan.chunks, plan.sizes, plan.w_offsets):
        assert not a.flags.writeable

"""Arrays for training: images as floats, mini-batches, augmentation.

:class:`BatchIterator` walks a data set in a random order drawn from an
explicit ``numpy.random.Generator``, optionally with dynamic binarization
(each pixel intensity p in [0, 1] is replaced by a fresh Bernoulli(p) draw) and
random translations (:func:`random_shift`).
"""
import numpy as np

from ..backend import check_float, get_xp, to_device


def images_to_float(images, dtype=np.float32):
    """uint8 images (N, H, W) -> float (N, 1, H, W) in [0, 1]: x / 255.

    Works on NumPy or CuPy arrays (the result lives where the input does).
    """
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (
            images.ndim == 4 and images.shape[1] != 1):
        raise ValueError(f"images_to_float: expected uint8 images of shape (N, H, W) or "
                         f"(N, 1, H, W), got {images.dtype} {tuple(images.shape)}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"images_to_float: expected dtype float32 or float64, got {dtype}")
    x = images.reshape(images.shape[0], 1, images.shape[-2], images.shape[-1])
    return x.astype(dtype) / dtype.type(255)


class BatchIterator:
    """Mini-batches of ``(x, y)``; each ``iter()`` is one epoch.

    ``x``: float (N, 1, H, W) in [0, 1] (NumPy or CuPy); ``y``: (N,) or None.
    With ``shuffle`` the epoch's order is ``rng.permutation(N)``, so a seeded
    generator gives the same batches every run; every index appears exactly
    once per epoch. With ``binarize`` (dynamic binarization) each batch is
    replaced by ``(rng.random(xb.shape) < xb).astype(xb.dtype)``: pixel value
    p becomes 1 with probability p, drawn fresh for every batch from the same
    ``rng``. With ``shift`` = s > 0 (data augmentation, for a classifier)
    each image is translated by its own (dy, dx), both drawn uniformly from
    {-s, ..., s}, the uncovered border filled with 0 (see :func:`random_shift`).
    The last, smaller batch is kept unless ``drop_last``.
    ``len()`` is ceil(N / batch_size), or floor(N / batch_size) with ``drop_last``.
    """

    def __init__(self, x, y, batch_size, rng=None, shuffle=True, binarize=False,
                 drop_last=False, shift=0):
        n = x.shape[0]
        if y is not None and y.shape[:1] != (n,):
            raise ValueError(f"BatchIterator: expected y with {n} rows (one per x), "
                             f"got shape {tuple(y.shape)}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"BatchIterator: expected a positive integer batch_size, "
                             f"got {batch_size!r}")
        if not isinstance(shift, (int, np.integer)) or shift < 0:
            raise ValueError(f"BatchIterator: expected an integer shift >= 0, got {shift!r}")
        if rng is None and (shuffle or binarize or shift):
            raise ValueError("BatchIterator: shuffle/binarize/shift need an explicit random "
                             "generator, e.g. rng=backend.new_rng(seed)")
        if binarize:
            check_float("BatchIterator", "x (to binarize)", x)
        self.x, self.y, self.batch_size = x, y, int(batch_size)
        self.rng, self.shuffle, self.binarize, self.drop_last = rng, shuffle, binarize, drop_last
        self.shift = int(shift)

    def __len__(self):
        n, b = self.x.shape[0], self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        xp = get_xp(self.x)
        n = self.x.shape[0]
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]   # host indices
            xb = self.x[idx if xp is np else xp.asarray(idx)]
            # labels stay where they are, indexed with the host indices (a device
            # index would need an implicit device-to-host copy for host labels)
            yb = None if self.y is None else self.y[idx]
            if self.shift:
                xb = random_shift(xb, self.shift, self.rng)
            if self.binarize:
                u = to_device(self.rng.random(xb.shape), xp)
                xb = (u < xb).astype(xb.dtype)
            yield xb, yb


def random_shift(x, s, rng):
    """Translate each image of x (N, C, H, W) by its own random (dy, dx).

    dy and dx are drawn uniformly from {-s, ..., s} (two integers per image,
    from ``rng``): out[n, :, h, w] = x[n, :, h - dy_n, w - dx_n], 0 where that
    pixel lies outside the image. Done on a zero-padded copy, one slice per
    distinct offset (at most (2s+1)^2 of them).
    """
    if x.ndim != 4:
        raise ValueError(f"random_shift: expected images (N, C, H, W), got shape {tuple(x.shape)}")
    xp = get_xp(x)
    n, _, H, W = x.shape
    offsets = rng.integers(-s, s + 1, size=(n, 2))
    padded = xp.zeros(x.shape[:2] + (H + 2 * s, W + 2 * s), dtype=x.dtype)
    padded[:, :, s:s + H, s:s + W] = x
    out = xp.empty_like(x)
    for dy, dx in np.unique(offsets, axis=0):
        rows = np.flatnonzero((offsets[:, 0] == dy) & (offsets[:, 1] == dx))
        if xp is not np:
            rows = xp.asarray(rows)
        top, left = s - dy, s - dx          # out[h] = x[h - dy] = padded[h - dy + s]
        out[rows] = padded[rows, :, top:top + H, left:left + W]
    return out


def iterate_batches(x, y, batch_size, rng=None, shuffle=True, binarize=False, drop_last=False,
                    shift=0):
    """A :class:`BatchIterator` over ``(x, y)``; see there."""
    return BatchIterator(x, y, batch_size, rng=rng, shuffle=shuffle, binarize=binarize,
                         drop_last=drop_last, shift=shift)

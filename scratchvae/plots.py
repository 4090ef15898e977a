"""Figures: image grids saved as PNG.

matplotlib is imported inside the functions that draw, and only its Agg
canvas is used (no pyplot, no display), so the engine itself never needs
matplotlib and figures can be written on a machine without a screen.
"""
import math

import numpy as np


def image_grid(images, ncol=None, padding=2, pad_value=1.0):
    """Tile images (N, C, H, W) with values in [0, 1] into one array.

    Returns (R (H + p) + p, ncol (W + p) + p) for C = 1, or the same with a
    trailing axis of 3 for C = 3; R = ceil(N / ncol) rows, filled row by row;
    ncol defaults to ceil(sqrt(N)). Cells without an image and the padding
    have the value ``pad_value``.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] < 1:
        raise ValueError(f"image_grid: expected images of shape (N, 1 or 3, H, W) with N >= 1, "
                         f"got {images.shape}")
    n, c, h, w = images.shape
    ncol = math.ceil(math.sqrt(n)) if ncol is None else int(ncol)
    if ncol < 1:
        raise ValueError(f"image_grid: expected ncol >= 1, got {ncol}")
    nrow = math.ceil(n / ncol)
    p = padding
    grid = np.full((c, nrow * (h + p) + p, ncol * (w + p) + p), pad_value)
    for i in range(n):
        r, k = divmod(i, ncol)
        top, left = p + r * (h + p), p + k * (w + p)
        grid[:, top:top + h, left:left + w] = images[i]
    grid = np.clip(grid, 0.0, 1.0)
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_image_grid(images, path, ncol=None, row_labels=None, title=None, scale=3, padding=2):
    """Save images (N, C, H, W) in [0, 1] as a PNG grid at ``path``.

    ``row_labels``: one text per grid row, written at its left (e.g. the class
    of a conditional VAE's samples). ``scale``: screen pixels per image pixel.
    Returns ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(images)
    ncol = math.ceil(math.sqrt(n)) if ncol is None else int(ncol)
    nrow = math.ceil(n / ncol)
    grid = image_grid(images, ncol=ncol, padding=padding)
    h, w = grid.shape[:2]
    if row_labels is not None and len(row_labels) != nrow:
        raise ValueError(f"save_image_grid: expected {nrow} row labels, got {len(row_labels)}")
    dpi = 100
    margin_left = 0.3 if row_labels is not None else 0.0  # inches
    margin_top = 0.35 if title else 0.0
    width, height = scale * w / dpi, scale * h / dpi
    fig = Figure(figsize=(width + margin_left, height + margin_top), dpi=dpi)
    FigureCanvasAgg(fig)
    W, H = width + margin_left, height + margin_top
    ax = fig.add_axes((margin_left / W, 0, width / W, height / H))
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    if row_labels is not None:
        cell = (h - padding) / nrow
        ax.set_yticks([padding + cell * (r + 0.5) - padding / 2 for r in range(nrow)])
        ax.set_yticklabels(row_labels)
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(title, y=1 - 0.5 * margin_top / H, va="center")
    fig.savefig(path, format="png", dpi=dpi, facecolor="white")
    return path

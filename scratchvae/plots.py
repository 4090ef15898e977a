"""Figures: image grids and the project's plots, saved as PNG.

matplotlib is imported inside the functions that draw, and only its Agg
canvas is used (no pyplot, no display), so the engine itself never needs
matplotlib and figures can be written on a machine without a screen.

    image_grid, save_image_grid        tiles of images (N, C, H, W) in [0, 1]
    plot_training_curves               1. train / test loss per epoch of runs
    plot_latent_dim                    2. test -ELBO and its terms against Z
    plot_prior_samples                 3. decoded means at z ~ N(0, I)
    plot_cvae_samples, plot_cvae_label 4. class-conditional samples
    plot_reconstructions               5. test images through several models
    plot_ring                          6. Doersch's ring: data, samples, f(z)

The figures of the latent space (2-D latent space, traversals) are in
:mod:`scratchvae.latent_plots`; figures by name from run directories (the
``plot`` command) in :mod:`scratchvae.figures`. The examples/fig_*.py
scripts train the models and write docs/figures/.
"""
import math
import os

import numpy as np

from .files import FileError
from .rundir import read_run

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
    margin_left = 0.0  # inches: room for the row labels, ~0.075 in per character
    if row_labels is not None:
        margin_left = max(0.3, 0.1 + 0.075 * max(len(str(t)) for t in row_labels))
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
    _makedirs_for(path)  # "tight": the saved image grows to hold long row labels
    fig.savefig(path, format="png", dpi=dpi, facecolor="white", bbox_inches="tight",
                pad_inches=0.05)
    return path


# --------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------

def _makedirs_for(path):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)


def agg_figure(width, height):
    """A matplotlib Figure (inches) on an Agg canvas: no pyplot, no display."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path):
    _makedirs_for(path)
    fig.savefig(path, format="png", dpi=100, facecolor="white", bbox_inches="tight")
    return path


def show_grid(ax, grid):
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)


def cell_centres(count, size, padding=2):
    """Pixel coordinates of the centres of ``count`` cells of an image_grid axis."""
    return [padding + k * (size + padding) + (size - 1) / 2 for k in range(count)]


def host_array(a):
    from .backend import to_numpy

    return np.asarray(to_numpy(a))


def is_conditional(model):
    return hasattr(model, "n_classes")


def describe_config(config, epochs=None):
    """A short caption of a run's config dict: 'conv-vae, Z=10, β=4, 5 epochs'."""
    from .models import DEFAULT_LATENT_DIM

    model = config["model"]
    parts = [model]
    if model != "classifier":
        z = config.get("latent_dim") or DEFAULT_LATENT_DIM.get(model, 0)
        parts.append(f"D={z}" if model == "vq-vae" else f"Z={z}")
    if model != "vq-vae" and config.get("beta", 1.0) != 1.0:
        parts.append(f"β={config['beta']:g}")
    epochs = config.get("epochs") if epochs is None else epochs
    parts.append(f"{epochs} epoch{'s' if epochs != 1 else ''}")
    return ", ".join(parts)


def eval_loss_key(record):
    """The test loss of a metrics record: -ELBO (VAEs), the VQ-VAE loss, or the
    classifier's cross-entropy; returns (key, label)."""
    for key, label in (("test_nelbo", "test −ELBO"), ("test_loss", "test loss"),
                       ("test_nll", "test cross-entropy")):
        if key in record:
            return key, label
    raise ValueError(f"test_key: no test loss among {sorted(record)}")


def run_caption(config, meta):
    """describe_config with the number of epochs the checkpoint has seen."""
    import dataclasses

    return describe_config(dataclasses.asdict(config), epochs=int(meta["epoch"]))


# --------------------------------------------------------------------------
# 1. training curves
# --------------------------------------------------------------------------

def plot_training_curves(runs, path, labels=None, title=None):
    """Train and test loss per epoch of one or more runs (``metrics.jsonl``).

    One panel per model (their losses are not comparable), one colour per
    run: the training loss dashed (beta-weighted for a beta-VAE: it is the
    objective), the test loss solid (the negative ELBO for the VAE family,
    the VQ-VAE loss, the classifier's cross-entropy), in nats per image.
    ``labels``: one legend text per run (default: the run directory's name).
    """
    runs = list(runs)
    if not runs:
        raise ValueError("plot_training_curves: expected at least one run directory")
    labels = [os.path.basename(os.path.normpath(r)) for r in runs] if labels is None else labels
    groups = {}  # model -> [(label, config, records, run)]
    for run, label in zip(runs, labels):
        config, records = read_run(run)
        if not records:
            raise ValueError(f"plot_training_curves: {run} has no epoch in its metrics.jsonl")
        groups.setdefault(config["model"], []).append((label, config, records, run))
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    ncol = min(3, len(groups))
    nrow = math.ceil(len(groups) / ncol)
    fig = agg_figure(5.2 * ncol, 3.8 * nrow)
    for p, (model, items) in enumerate(groups.items()):
        ax = fig.add_subplot(nrow, ncol, p + 1)
        max_epoch = 1
        for i, (label, config, records, run) in enumerate(items):
            epochs = [r["epoch"] for r in records]
            max_epoch = max(max_epoch, epochs[-1])
            key, key_label = eval_loss_key(records[0])
            for r in records:
                if not all(isinstance(r.get(k), (int, float)) for k in ("train_loss", key)):
                    raise FileError(f"{os.path.join(run, 'metrics.jsonl')}: the "
                                    f"record of epoch {r['epoch']} lacks a number for "
                                    f"train_loss or {key}; the file is damaged")
            colour = cmap(i % 10)
            ax.plot(epochs, [r["train_loss"] for r in records], "--o", color=colour, ms=3,
                    label=f"{label}: train loss")
            ax.plot(epochs, [r[key] for r in records], "-o", color=colour, ms=3,
                    label=f"{label}: {key_label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per image")
        ax.set_title(model)
        ax.set_xticks(range(1, max_epoch + 1, max(1, math.ceil(max_epoch / 10))))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, handlelength=3.5)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


# --------------------------------------------------------------------------
# 2. the latent dimension
# --------------------------------------------------------------------------

def latent_sweep_results(runs):
    """The last epoch's test metrics of runs that differ in Z, sorted by Z:
    a list of dicts with latent_dim, epoch, test_nelbo, test_recon, test_kl
    (and active_units where recorded)."""
    from .models import DEFAULT_LATENT_DIM

    rows = []
    for run in runs:
        config, records = read_run(run)
        if not records or "test_nelbo" not in records[-1]:
            raise ValueError(f"latent_sweep_results: {run} has no test -ELBO record")
        last = records[-1]
        row = {"latent_dim": config.get("latent_dim") or DEFAULT_LATENT_DIM[config["model"]],
               "epoch": last["epoch"], "model": config["model"], "run": run}
        for key in ("test_nelbo", "test_recon", "test_kl", "active_units"):
            if key in last:
                row[key] = last[key]
        rows.append(row)
    return sorted(rows, key=lambda r: r["latent_dim"])


def plot_latent_dim(results, path, title=None):
    """Test -ELBO (left) and its two terms (right) against the latent size Z.

    results: dicts with latent_dim, test_nelbo, test_recon, test_kl and
    optionally active_units (written beside the KL points as 'AU a/Z').
    """
    results = sorted(results, key=lambda r: r["latent_dim"])
    if not results:
        raise ValueError("plot_latent_dim: expected at least one result")
    zs = [r["latent_dim"] for r in results]
    fig = agg_figure(10, 3.8)
    ax = fig.add_subplot(1, 2, 1)
    nelbo = [r["test_nelbo"] for r in results]
    ax.plot(zs, nelbo, "-o", color="C0")
    for z, v in zip(zs, nelbo):
        ax.annotate(f"{v:.1f}", (z, v), textcoords="offset points", xytext=(0, 7),
                    ha="center", fontsize=8)
    ax.set_ylabel("test −ELBO (nats per image)")
    ax.set_title("test negative ELBO")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(zs, [r["test_recon"] for r in results], "-o", color="C1",
             label="reconstruction −E[log p(x|z)]")
    kl = [r["test_kl"] for r in results]
    ax2.plot(zs, kl, "-s", color="C2", label="KL(q(z|x) ‖ p(z))")
    for r, v in zip(results, kl):
        if "active_units" in r:
            ax2.annotate(f"AU {r['active_units']}/{r['latent_dim']}", (r["latent_dim"], v),
                         textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7)
    ax2.set_ylabel("nats per image")
    ax2.set_title("its two terms (AU: active units)")
    ax2.legend(fontsize=8)
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xticks(zs)
        a.set_xticklabels([str(z) for z in zs])
        a.minorticks_off()
        a.set_xlabel("latent dimension Z")
        a.grid(alpha=0.3)
        a.margins(y=0.15)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


# --------------------------------------------------------------------------
# 3. samples from the prior
# --------------------------------------------------------------------------

def plot_prior_samples(model, path, n=64, seed=0, title=None):
    """Mean images of the decoder at z ~ N(0, I): a grid of n samples.
    A conditional model draws one row per class instead (see plot_cvae_samples)."""
    if is_conditional(model):
        return plot_cvae_samples(model, path, per_class=math.ceil(n / model.n_classes),
                                 seed=seed, title=title)
    images = host_array(model.sample(n, np.random.default_rng(seed)))
    return save_image_grid(images, path, ncol=math.ceil(math.sqrt(n)), title=title)


# --------------------------------------------------------------------------
# 4. conditional VAE
# --------------------------------------------------------------------------

def plot_cvae_samples(model, path, per_class=10, seed=0, title=None):
    """One row per class k: ``per_class`` decoded means at z ~ N(0, I) given k."""
    K = model.n_classes
    labels = np.repeat(np.arange(K), per_class)
    images = host_array(model.sample(labels.size, np.random.default_rng(seed), labels=labels))
    return save_image_grid(images, path, ncol=per_class, row_labels=[str(k) for k in range(K)],
                           title=title)


def plot_cvae_label(model, label, path, n=64, seed=0, title=None):
    """n decoded means at z ~ N(0, I), all given the class ``label``."""
    if not 0 <= int(label) < model.n_classes:
        raise ValueError(f"plot_cvae_label: expected a label in 0..{model.n_classes - 1}, "
                         f"got {label}")
    images = host_array(model.sample(n, np.random.default_rng(seed), labels=int(label)))
    return save_image_grid(images, path, ncol=math.ceil(math.sqrt(n)), title=title)


# --------------------------------------------------------------------------
# 5. reconstructions
# --------------------------------------------------------------------------

def reconstruct(model, x, labels=None):
    """Host reconstructions of host images x: the decoded posterior mean
    (VAE, beta-VAE), given the label too (CVAE), or through the codes (VQ-VAE)."""
    xb = model.xp.asarray(x)
    if is_conditional(model):
        return host_array(model.reconstruct(xb, np.asarray(labels)))
    return host_array(model.reconstruct(xb))


def plot_reconstructions(models, x, labels, path, title=None):
    """The images x (first row) and their reconstructions by each of
    ``models`` (a list of (name, model)), one row per model."""
    rows = [np.asarray(x, dtype=np.float64)]
    names = ["original"]
    for name, model in models:
        rows.append(reconstruct(model, x, labels))
        names.append(name)
    return save_image_grid(np.concatenate(rows), path, ncol=len(x), row_labels=names,
                           title=title)


# --------------------------------------------------------------------------
# 6. the ring (Doersch 2016, fig. 2; the data: scratchvae.toy)
# --------------------------------------------------------------------------

def plot_ring(data, samples, means, z, path, title=None):
    """Left: the data (grey) and the model's samples f(z) + noise (orange).
    Right: the noise-free decoder means f(z), coloured by the angle of z, to
    show how the decoder wraps the Gaussian around the ring."""
    fig = agg_figure(10.5, 5)
    ax = fig.add_subplot(1, 2, 1)
    ax.scatter(data[:, 0], data[:, 1], s=4, color="0.6", alpha=0.6, linewidths=0,
               label=f"data x = g(z) ({len(data)})")
    ax.scatter(samples[:, 0], samples[:, 1], s=4, color="C1", alpha=0.6, linewidths=0,
               label=f"VAE samples f(z) + σε ({len(samples)})")
    ax.set_title("data and samples")
    ax.legend(fontsize=8, markerscale=3, loc="upper right")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.scatter(data[:, 0], data[:, 1], s=4, color="0.85", linewidths=0)
    sc = ax2.scatter(means[:, 0], means[:, 1], s=4, c=np.arctan2(z[:, 1], z[:, 0]),
                     cmap="hsv", linewidths=0)
    fig.colorbar(sc, ax=ax2, label="angle of z (rad)", shrink=0.8)
    ax2.set_title("decoder means f(z), z ~ N(0, I)")
    lim = 1.1 * float(np.abs(data).max())
    for a in (ax, ax2):
        a.set_xlim(-lim, lim)
        a.set_ylim(-lim, lim)
        a.set_aspect("equal")
        a.set_xlabel("x₁")
        a.set_ylabel("x₂")
        a.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)

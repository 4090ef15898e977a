"""Figures: image grids and the project's plots, saved as PNG.

matplotlib is imported inside the functions that draw, and only its Agg
canvas is used (no pyplot, no display), so the engine itself never needs
matplotlib and figures can be written on a machine without a screen.

    image_grid, save_image_grid        tiles of images (N, C, H, W) in [0, 1]
    plot_training_curves               1. train / test loss per epoch of runs
    plot_latent_dim                    2. test -ELBO and its terms against Z
    plot_prior_samples                 3. decoded means at z ~ N(0, I)
    plot_latent_space                  4. a 2-D latent space and its manifold
    plot_traversals                    5. one latent dimension at a time
    plot_cvae_samples, plot_cvae_label 6. class-conditional samples
    plot_reconstructions               7. test images through several models
    plot_ring                          8. Doersch's ring: data, samples, f(z)
    plot_runs                          any of 1-7 from run directories (the CLI)

The examples/fig_*.py scripts train the models and write docs/figures/.
"""
import math
import os

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


def _figure(width, height):
    """A matplotlib Figure (inches) on an Agg canvas: no pyplot, no display."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    _makedirs_for(path)
    fig.savefig(path, format="png", dpi=100, facecolor="white", bbox_inches="tight")
    return path


def _show_grid(ax, grid):
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)


def _cell_centres(count, size, padding=2):
    """Pixel coordinates of the centres of ``count`` cells of an image_grid axis."""
    return [padding + k * (size + padding) + (size - 1) / 2 for k in range(count)]


def _host(a):
    from .backend import to_numpy

    return np.asarray(to_numpy(a))


def _is_conditional(model):
    return hasattr(model, "n_classes")


def read_run(run_dir):
    """(config dict, list of per-epoch records) of a run directory."""
    from . import checkpoints as ckpt

    config = ckpt.read_json(os.path.join(run_dir, ckpt.CONFIG))
    return config, ckpt.read_jsonl(os.path.join(run_dir, ckpt.METRICS))


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
    groups = {}  # model -> [(label, config, records)]
    for run, label in zip(runs, labels):
        config, records = read_run(run)
        if not records:
            raise ValueError(f"plot_training_curves: {run} has no epoch in its metrics.jsonl")
        groups.setdefault(config["model"], []).append((label, config, records))
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    ncol = min(3, len(groups))
    nrow = math.ceil(len(groups) / ncol)
    fig = _figure(5.2 * ncol, 3.8 * nrow)
    for p, (model, items) in enumerate(groups.items()):
        ax = fig.add_subplot(nrow, ncol, p + 1)
        max_epoch = 1
        for i, (label, config, records) in enumerate(items):
            epochs = [r["epoch"] for r in records]
            max_epoch = max(max_epoch, epochs[-1])
            key, key_label = eval_loss_key(records[0])
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
    return _save(fig, path)


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
    fig = _figure(10, 3.8)
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
    return _save(fig, path)


# --------------------------------------------------------------------------
# 3. samples from the prior
# --------------------------------------------------------------------------

def plot_prior_samples(model, path, n=64, seed=0, title=None):
    """Mean images of the decoder at z ~ N(0, I): a grid of n samples.
    A conditional model draws one row per class instead (see plot_cvae_samples)."""
    if _is_conditional(model):
        return plot_cvae_samples(model, path, per_class=math.ceil(n / model.n_classes),
                                 seed=seed, title=title)
    images = _host(model.sample(n, np.random.default_rng(seed)))
    return save_image_grid(images, path, ncol=math.ceil(math.sqrt(n)), title=title)


# --------------------------------------------------------------------------
# 4. the 2-D latent space
# --------------------------------------------------------------------------

def latent_means(model, x, labels=None, batch_size=500):
    """Posterior means mu(x) (N, Z) of host images x, in batches (host array)."""
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = model.xp.asarray(x[start:start + batch_size])
        c = None
        if _is_conditional(model):
            c = model.condition(labels[start:start + batch_size], xb.shape[0])
        out.append(_host(model.encode(xb, c)[0]))
    return np.concatenate(out)


def normal_lattice(n, low=0.05, high=0.95):
    """n values z_k = Phi^-1(p_k), p_k evenly spaced in [low, high] (Kingma &
    Welling 2014, fig. 4): equal steps of probability mass under N(0, 1)."""
    from statistics import NormalDist

    inv = NormalDist().inv_cdf
    return np.array([inv(p) for p in np.linspace(low, high, n)])


def manifold_images(model, n=20, low=0.05, high=0.95):
    """Decoded means on the n x n lattice of a 2-D latent space: (n n, C, H, W),
    row r (top to bottom) at z_2 = v[n-1-r], column k at z_1 = v[k]."""
    if model.latent_dim != 2:
        raise ValueError(f"manifold_images: expected a model with Z = 2, "
                         f"got Z = {model.latent_dim}")
    v = normal_lattice(n, low, high)
    z1, z2 = np.meshgrid(v, v[::-1])
    z = np.stack([z1.ravel(), z2.ravel()], axis=1).astype(model.dtype)
    return _host(model.mean_image(model.decode(model.xp.asarray(z)))), v


def plot_latent_space(model, x, labels, path, n_grid=20, title=None, max_points=5000):
    """The 2-D latent space of a Z = 2 VAE, two panels:

    left:  posterior means mu(x) of the test images, coloured by digit (at
           most ``max_points`` of them), the lattice of the right panel dashed;
    right: the decoded means over a regular n_grid x n_grid lattice of z
           through the inverse normal CDF (the learned manifold).
    """
    if model.latent_dim != 2:
        raise ValueError(f"plot_latent_space: expected a model with Z = 2, "
                         f"got Z = {model.latent_dim}")
    from matplotlib import colormaps
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    x, labels = x[:max_points], np.asarray(labels)[:max_points]
    mu = latent_means(model, x, labels)
    images, v = manifold_images(model, n_grid)
    cmap = colormaps["tab10"]
    fig = _figure(13, 6.2)
    ax = fig.add_subplot(1, 2, 1)
    ax.scatter(mu[:, 0], mu[:, 1], c=[cmap(int(k) % 10) for k in labels], s=3, alpha=0.6,
               linewidths=0)
    ax.add_patch(Rectangle((v[0], v[0]), v[-1] - v[0], v[-1] - v[0], fill=False, ls="--",
                           color="k", lw=1))
    handles = [Line2D([], [], ls="", marker="o", color=cmap(k), label=str(k))
               for k in sorted(set(int(k) for k in labels))]
    handles.append(Line2D([], [], ls="--", color="k", label="lattice"))
    ax.legend(handles=handles, title="digit", fontsize=8, loc="upper right",
              bbox_to_anchor=(1.0, 1.0), framealpha=0.9)
    ax.set_xlabel("μ₁")
    ax.set_ylabel("μ₂")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.set_title(f"posterior means of {len(x)} test images")
    ax2 = fig.add_subplot(1, 2, 2)
    grid = image_grid(images, ncol=n_grid)
    _show_grid(ax2, grid)
    h = images.shape[-1]
    centres = _cell_centres(n_grid, h)
    every = max(1, n_grid // 5)
    picks = list(range(0, n_grid, every))
    if picks[-1] != n_grid - 1:
        picks.append(n_grid - 1)
    ax2.set_xticks([centres[k] for k in picks])
    ax2.set_xticklabels([f"{v[k]:.2f}" for k in picks], fontsize=8)
    ax2.set_yticks([centres[k] for k in picks])
    ax2.set_yticklabels([f"{v[n_grid - 1 - k]:.2f}" for k in picks], fontsize=8)
    ax2.set_xlabel("z₁ = Φ⁻¹(p)")
    ax2.set_ylabel("z₂ = Φ⁻¹(p)")
    ax2.set_title(f"decoded means on a {n_grid}×{n_grid} lattice, p ∈ [0.05, 0.95]")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------
# 5. latent traversals
# --------------------------------------------------------------------------

def latent_traversal(model, x0, values, dims=None, label=None):
    """Decoded means while one latent dimension at a time sweeps ``values``
    and the others stay at the posterior mean mu(x0) of one image x0
    (1, C, H, W). Returns (len(dims), len(values), C, H, W) on the host."""
    values = np.asarray(values, dtype=np.float64)
    dims = list(range(model.latent_dim)) if dims is None else list(dims)
    xp = model.xp
    x0 = xp.asarray(x0)
    c = model.condition(None if label is None else np.array([label]), 1)
    mu = _host(model.encode(x0, c)[0])[0]                     # (Z,)
    z = np.repeat(mu[None, None, :], len(dims), axis=0).repeat(len(values), axis=1)
    for i, d in enumerate(dims):
        z[i, :, d] = values
    z = z.reshape(-1, model.latent_dim).astype(model.dtype)
    if c is not None:
        c = xp.concatenate([c] * z.shape[0], axis=0)
    out = _host(model.mean_image(model.decode(xp.asarray(z), c)))
    return out.reshape((len(dims), len(values)) + out.shape[1:])


def plot_traversals(panels, x0, path, values=None, title=None):
    """Latent traversals of several models side by side.

    panels: list of (title, model, kl_per_dim or None); each row of a panel
    is one latent dimension z_d swept over ``values`` (default 9 values in
    [-3, 3]) with the others at mu(x0); the row label gives d and, when
    known, the test KL of that dimension (a dimension with KL ~ 0 is unused:
    its row does not change). x0: one image (1, C, H, W), drawn on the left.
    """
    values = np.linspace(-3, 3, 9) if values is None else np.asarray(values)
    if not panels:
        raise ValueError("plot_traversals: expected at least one (title, model, kl) panel")
    grids = [(name, latent_traversal(model, x0, values), kl) for name, model, kl in panels]
    # layout in inches: [x0] then, per panel, [row labels | image grid]
    scale = 1.5 / 100                              # inches per image pixel (1.5 px at 100 dpi)
    h, w = grids[0][1].shape[-2:]
    V = len(values)
    zmax = max(g.shape[0] for _, g, _ in grids)
    panel_w = scale * (V * (w + 2) + 2)
    panel_h = scale * (zmax * (h + 2) + 2)
    label_w, x0_w, top, bottom = 1.0, 0.7, 0.75, 0.55
    W = x0_w + len(grids) * (label_w + panel_w) + 0.1
    H = top + panel_h + bottom
    fig = _figure(W, H)
    cell = scale * (h + 4)
    ax0 = fig.add_axes((0.05 / W, (bottom + panel_h - cell) / H, cell / W, cell / H))
    _show_grid(ax0, image_grid(_host(x0)[:1], ncol=1))
    ax0.set_xticks([])
    ax0.set_yticks([])
    ax0.set_title("x₀", fontsize=9)
    for p, (name, imgs, kl) in enumerate(grids):
        Z = imgs.shape[0]
        left = x0_w + p * (label_w + panel_w) + label_w
        ph = scale * (Z * (h + 2) + 2)
        ax = fig.add_axes((left / W, (bottom + panel_h - ph) / H, panel_w / W, ph / H))
        _show_grid(ax, image_grid(imgs.reshape((Z * V,) + imgs.shape[2:]), ncol=V))
        ax.set_xticks(_cell_centres(V, w))
        ax.set_xticklabels([f"{v:g}" for v in values], fontsize=7)
        ax.set_yticks(_cell_centres(Z, h))
        rows = [f"z{d}" if kl is None else f"z{d}  KL {kl[d]:.2f}" for d in range(Z)]
        ax.set_yticklabels(rows, fontsize=7)
        ax.set_xlabel("z_d (the others at μ(x₀))", fontsize=8)
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, y=1 - 0.2 / H, va="top")
    return _save(fig, path)


# --------------------------------------------------------------------------
# 6. conditional VAE
# --------------------------------------------------------------------------

def plot_cvae_samples(model, path, per_class=10, seed=0, title=None):
    """One row per class k: ``per_class`` decoded means at z ~ N(0, I) given k."""
    K = model.n_classes
    labels = np.repeat(np.arange(K), per_class)
    images = _host(model.sample(labels.size, np.random.default_rng(seed), labels=labels))
    return save_image_grid(images, path, ncol=per_class, row_labels=[str(k) for k in range(K)],
                           title=title)


def plot_cvae_label(model, label, path, n=64, seed=0, title=None):
    """n decoded means at z ~ N(0, I), all given the class ``label``."""
    if not 0 <= int(label) < model.n_classes:
        raise ValueError(f"plot_cvae_label: expected a label in 0..{model.n_classes - 1}, "
                         f"got {label}")
    images = _host(model.sample(n, np.random.default_rng(seed), labels=int(label)))
    return save_image_grid(images, path, ncol=math.ceil(math.sqrt(n)), title=title)


# --------------------------------------------------------------------------
# 7. reconstructions
# --------------------------------------------------------------------------

def reconstruct(model, x, labels=None):
    """Host reconstructions of host images x: the decoded posterior mean
    (VAE, beta-VAE), given the label too (CVAE), or through the codes (VQ-VAE)."""
    xb = model.xp.asarray(x)
    if _is_conditional(model):
        return _host(model.reconstruct(xb, np.asarray(labels)))
    return _host(model.reconstruct(xb))


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
# 8. the ring (Doersch 2016, fig. 2)
# --------------------------------------------------------------------------

def ring_points(n, rng):
    """n points x = g(z) = z/10 + z/|z| with z ~ N(0, I_2): a ring of radius ~1.
    Returns float32 (n, 2)."""
    z = rng.standard_normal((n, 2))
    r = np.linalg.norm(z, axis=1, keepdims=True)
    return (z / 10 + z / np.maximum(r, 1e-12)).astype(np.float32)


def ring_samples(model, n, rng):
    """Samples of a 2-D VAE: z ~ N(0, I), x = f(z) + sigma e with the decoder's
    (learned or fixed) noise. Returns (x, means, z) on the host, each (n, 2)."""
    z = rng.standard_normal((n, model.latent_dim)).astype(model.dtype)
    means = _host(model.decode(model.xp.asarray(z)))
    if model.likelihood == "gaussian-learned":
        sigma = np.exp(0.5 * _host(model.logvar_x.data))
    else:
        sigma = math.sqrt(model.gaussian_variance)
    x = means + sigma * rng.standard_normal(means.shape)
    return x, means, z


def plot_ring(data, samples, means, z, path, title=None):
    """Left: the data (grey) and the model's samples f(z) + noise (orange).
    Right: the noise-free decoder means f(z), coloured by the angle of z, to
    show how the decoder wraps the Gaussian around the ring."""
    fig = _figure(10.5, 5)
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
    return _save(fig, path)


# --------------------------------------------------------------------------
# figures of trained runs (``python -m scratchvae plot NAME --run DIR ...``)
# --------------------------------------------------------------------------

#: figure name -> how many runs it takes ("1" or "+")
PLOTS = {"curves": "+", "latent-dim": "+", "samples": "1", "latent-2d": "1",
         "traversals": "+", "cvae": "1", "reconstructions": "+"}


def load_test_images(config, n=None):
    """The first n test images (host float (n, 1, H, W)) and labels of a run's data."""
    from .train import load_data

    _, _, (xte, yte) = load_data(config, log=lambda *a, **k: None, progress=False)
    return xte[:n], yte[:n]




def run_caption(config, meta):
    """describe_config with the number of epochs the checkpoint has seen."""
    import dataclasses

    return describe_config(dataclasses.asdict(config), epochs=int(meta["epoch"]))


def plot_runs(name, runs, out, seed=0, label=None, n=64, index=0, images=10, title=None):
    """Draw figure ``name`` (a key of PLOTS) from trained run directories."""
    from .train import load_run

    if name not in PLOTS:
        raise ValueError(f"plot: unknown figure {name!r}; expected one of {sorted(PLOTS)}")
    runs = list(runs)
    if not runs or (PLOTS[name] == "1" and len(runs) != 1):
        raise ValueError(f"plot {name}: expected {'one run' if PLOTS[name] == '1' else 'runs'}"
                         f" (--run DIR), got {len(runs)}")
    if name == "curves":
        return plot_training_curves(runs, out, title=title)
    if name == "latent-dim":
        res = latent_sweep_results(runs)
        epochs = sorted({r["epoch"] for r in res})
        models = sorted({r["model"] for r in res})
        return plot_latent_dim(res, out, title=title or (
            f"{', '.join(models)} on MNIST, {'/'.join(map(str, epochs))} "
            f"epoch{'s' if epochs != [1] else ''}"))
    loaded = [load_run(r) for r in runs]
    config, model, meta = loaded[0]
    if name == "samples":
        caption = f"samples from the prior: {run_caption(config, meta)}"
        return plot_prior_samples(model, out, n=n, seed=seed, title=title or caption)
    if name == "cvae":
        if not _is_conditional(model):
            raise ValueError(f"plot cvae: expected a conditional model, {runs[0]} holds "
                             f"{config.model}")
        caption = run_caption(config, meta)
        if label is not None:
            return plot_cvae_label(model, label, out, n=n, seed=seed,
                                   title=title or f"{caption}: samples of class {label}")
        return plot_cvae_samples(model, out, per_class=max(1, n // model.n_classes), seed=seed,
                                 title=title or f"{caption}: one row per class")
    x, y = load_test_images(config, max(images, index + 1))
    if name == "latent-2d":
        x, y = load_test_images(config, None)
        return plot_latent_space(model, x, y, out,
                                 title=title or f"2-D latent space: {run_caption(config, meta)}")
    if name == "traversals":
        panels = []
        for (c, m, mt), run in zip(loaded, runs):
            _, records = read_run(run)
            kl = records[-1].get("test_kl_per_dim") if records else None
            panels.append((run_caption(c, mt), m, kl))
        return plot_traversals(panels, x[index:index + 1], out,
                               title=title or f"latent traversals around test image {index}")
    # reconstructions
    models = [(describe_config({"model": c.model, "latent_dim": c.latent_dim, "beta": c.beta},
                               epochs=int(mt["epoch"])), m) for c, m, mt in loaded]
    return plot_reconstructions(models, x[:images], y[:images], out,
                                title=title or "test images and their reconstructions")

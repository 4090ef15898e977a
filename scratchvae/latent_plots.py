"""Figures of a latent space: a 2-D latent space and its manifold, latent traversals.

    plot_latent_space   the posterior means of test images and the decoded
                        means over a lattice of a Z = 2 latent space
    plot_traversals     one latent dimension at a time, several models side by side

Drawn like the figures of :mod:`scratchvae.plots`, with its helpers.
"""
import numpy as np

from .plots import (agg_figure, cell_centres, host_array, image_grid, is_conditional, save_png,
                    show_grid)


# --------------------------------------------------------------------------
# the 2-D latent space
# --------------------------------------------------------------------------

def latent_means(model, x, labels=None, batch_size=500):
    """Posterior means mu(x) (N, Z) of host images x, in batches (host array)."""
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = model.xp.asarray(x[start:start + batch_size])
        c = None
        if is_conditional(model):
            c = model.condition(labels[start:start + batch_size], xb.shape[0])
        out.append(host_array(model.encode(xb, c)[0]))
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
    return host_array(model.mean_image(model.decode(model.xp.asarray(z)))), v


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
    fig = agg_figure(13, 6.2)
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
    show_grid(ax2, grid)
    h = images.shape[-1]
    centres = cell_centres(n_grid, h)
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
    return save_png(fig, path)


# --------------------------------------------------------------------------
# latent traversals
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
    mu = host_array(model.encode(x0, c)[0])[0]                     # (Z,)
    z = np.repeat(mu[None, None, :], len(dims), axis=0).repeat(len(values), axis=1)
    for i, d in enumerate(dims):
        z[i, :, d] = values
    z = z.reshape(-1, model.latent_dim).astype(model.dtype)
    if c is not None:
        c = xp.concatenate([c] * z.shape[0], axis=0)
    out = host_array(model.mean_image(model.decode(xp.asarray(z), c)))
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
    fig = agg_figure(W, H)
    cell = scale * (h + 4)
    ax0 = fig.add_axes((0.05 / W, (bottom + panel_h - cell) / H, cell / W, cell / H))
    show_grid(ax0, image_grid(host_array(x0)[:1], ncol=1))
    ax0.set_xticks([])
    ax0.set_yticks([])
    ax0.set_title("x₀", fontsize=9)
    for p, (name, imgs, kl) in enumerate(grids):
        Z = imgs.shape[0]
        left = x0_w + p * (label_w + panel_w) + label_w
        ph = scale * (Z * (h + 2) + 2)
        ax = fig.add_axes((left / W, (bottom + panel_h - ph) / H, panel_w / W, ph / H))
        show_grid(ax, image_grid(imgs.reshape((Z * V,) + imgs.shape[2:]), ncol=V))
        ax.set_xticks(cell_centres(V, w))
        ax.set_xticklabels([f"{v:g}" for v in values], fontsize=7)
        ax.set_yticks(cell_centres(Z, h))
        rows = [f"z{d}" if kl is None else f"z{d}  KL {kl[d]:.2f}" for d in range(Z)]
        ax.set_yticklabels(rows, fontsize=7)
        ax.set_xlabel("z_d (the others at μ(x₀))", fontsize=8)
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, y=1 - 0.2 / H, va="top")
    return save_png(fig, path)

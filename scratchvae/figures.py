"""Figures of trained runs, made in bulk: by name from run directories (the
``plot`` command), beside a report (``report --figures``), and by the
examples/fig_*.py scripts, which train (or reuse) the runs they draw.

The drawing itself is in :mod:`scratchvae.plots` and :mod:`scratchvae.latent_plots`.
"""
import dataclasses
import os

import numpy as np

from .checkpoints import load_checkpoint
from .config import TrainConfig
from .files import FileError, read_json
from .latent_plots import plot_latent_space, plot_traversals
from .prior import bind_vq_run, prior_sampler
from .plots import (describe_config, is_conditional, latent_sweep_results, plot_cvae_label,
                    plot_cvae_samples, plot_latent_dim, plot_prior_samples, plot_reconstructions,
                    plot_training_curves, run_caption, save_image_grid)
from .rundir import CHECKPOINT, CONFIG, load_run, load_test_images, read_run
from .train import train

# --------------------------------------------------------------------------
# figures by name (``python -m scratchvae plot NAME --run DIR ...``)
# --------------------------------------------------------------------------

#: figure name -> how many runs it takes ("1" or "+")
PLOTS = {"curves": "+", "latent-dim": "+", "samples": "1", "latent-2d": "1",
         "traversals": "+", "cvae": "1", "reconstructions": "+"}


def plot_runs(name, runs, out, seed=0, label=None, n=64, index=0, images=10, title=None):
    """Draw figure ``name`` (a key of PLOTS) from trained run directories."""
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
        if not is_conditional(model):
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


# --------------------------------------------------------------------------
# the report's figures (``python -m scratchvae report --figures``)
# --------------------------------------------------------------------------

def report_figures(runs, rows, out, seed=0, device="cpu"):
    """Draw the report's figures beside ``out``: the training curves of all runs,
    the reconstructions of the same test images by every model that reconstructs,
    and prior samples of each VAE (one row per class for a CVAE). Returns their
    file names."""
    directory = os.path.dirname(os.path.abspath(out))
    names = ["training_curves.png"]
    plot_training_curves(runs, os.path.join(directory, names[0]), title="training curves")
    loaded = [(run, row) + tuple(load_run(run, device=device)) for run, row in zip(runs, rows)]
    recon = [(row["run"] if row["run"] == row["model"] else f"{row['run']} ({row['model']})",
              model) for run, row, config, model, meta in loaded if hasattr(model, "reconstruct")]
    if recon:
        x, y = load_test_images(loaded[0][2], 10)
        names.append("reconstructions.png")
        plot_reconstructions(recon, x, y, os.path.join(directory, names[-1]),
                             title="test images and their reconstructions")
    for run, row, config, model, meta in loaded:
        if config.model in ("vq-vae", "classifier"):
            continue
        names.append(f"samples_{row['run']}.png")
        if config.model == "pixelcnn":   # code maps from the prior, decoded by its VQ-VAE
            sampler = prior_sampler(config, model)
            labels = np.arange(64) % sampler.n_classes if sampler.n_classes else None
            save_image_grid(sampler(64, np.random.default_rng(seed), labels),
                            os.path.join(directory, names[-1]), ncol=8,
                            title=f"samples: VQ-VAE + prior, {run_caption(config, meta)}")
            continue
        plot_prior_samples(model, os.path.join(directory, names[-1]), seed=seed,
                           title=f"samples: {run_caption(config, meta)}")
    return names


# --------------------------------------------------------------------------
# the figure scripts' run helper
# --------------------------------------------------------------------------

#: what does not make a saved run another run: how many epochs it trains, and the
#: directory its data set (checksummed) was found in, which train records
NOT_COMPARED = ("epochs", "data_dir")


def _comparable(config_dict):
    return {k: v for k, v in config_dict.items() if k not in NOT_COMPARED}


def ensure_run(config, out_dir, retrain=False, progress=False, log=print):
    """Train ``config`` into ``out_dir`` unless a run of the same configuration
    is there already: a finished one is reused as it is, a shorter one is
    resumed up to ``config.epochs``. Returns ``out_dir``."""
    wanted = dataclasses.asdict(config)
    config_path = os.path.join(out_dir, CONFIG)
    if not retrain and os.path.exists(os.path.join(out_dir, CHECKPOINT)):
        try:
            have = read_json(config_path)
            _, _, meta = load_checkpoint(os.path.join(out_dir, CHECKPOINT))
        except FileError:   # a CheckpointError too
            have, meta = None, {"epoch": 0}
        same = have is not None and _comparable(have) == _comparable(wanted)
        if same and int(meta["epoch"]) >= config.epochs:
            log(f"reusing {out_dir} ({meta['epoch']} epochs)")
            return out_dir
        if same:
            log(f"resuming {out_dir} from epoch {meta['epoch']} to {config.epochs}")
            train(config, out_dir, resume=True, progress=progress, log=log)
            return out_dir
    log(f"training {config.model} into {out_dir} ({config.epochs} epochs)")
    train(config, out_dir, overwrite=True, progress=progress, log=log)  # a different run: replaced
    return out_dir


def add_script_args(parser, epochs=5):
    """The options every examples/fig_*.py script shares."""
    parser.add_argument("--epochs", type=int, default=epochs,
                        help=f"epochs of each model it trains (default {epochs})")
    parser.add_argument("--runs-dir", default="runs", help="where it trains (default runs/)")
    parser.add_argument("--out", default=None, help="output PNG (default docs/figures/...)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain", action="store_true", help="train even if the run exists")
    parser.add_argument("--sample", action="store_true",
                        help="train on the bundled MNIST sample (quick checks)")
    parser.add_argument("--train-limit", type=int, default=0, help="first N training images")
    parser.add_argument("--test-limit", type=int, default=0, help="first N test images")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    return parser


def script_config(args, **fields):
    """A TrainConfig from a script's shared options plus ``fields``."""
    return TrainConfig(epochs=args.epochs, seed=args.seed, use_sample=args.sample,
                       train_limit=args.train_limit, test_limit=args.test_limit, **fields)


def script_run(args, name, **fields):
    """Train (or reuse) the run ``args.runs_dir/name`` of a figure script."""
    return ensure_run(script_config(args, **fields), os.path.join(args.runs_dir, name),
                      retrain=args.retrain, progress=args.progress)


def script_prior_run(args, name, vq_run, conditional=False, epochs=None):
    """Train (or reuse) the PixelCNN prior ``args.runs_dir/name`` over the codes of the
    VQ-VAE run ``vq_run``; its config is compared as the run records it (bound to that
    VQ-VAE's codebook), so a prior of another VQ-VAE is trained anew."""
    config = script_config(args, model="pixelcnn", vq_run=vq_run, conditional=conditional)
    if epochs is not None:
        config.epochs = epochs
    config, _ = bind_vq_run(config)
    return ensure_run(config, os.path.join(args.runs_dir, name), retrain=args.retrain,
                      progress=args.progress)


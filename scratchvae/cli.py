"""Command line: ``python -m scratchvae {train,evaluate,sample,gradcheck,data,plot,report}``.

Bad arguments get argparse's message and exit code 2 (options that are each
valid but do not fit together too: see :class:`UsageError`); a run that fails
(missing data, a diverged loss, an unreadable checkpoint, no GPU) prints one
clear ``error: ...`` message on stderr and exits with code 1.
"""
import argparse
import json
import os
import sys


def _number(convert, allow_zero, what):
    """An argparse type: ``convert(text)``, finite, > 0 (or >= 0 with allow_zero)."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value
    return parse


_positive_int = _number(int, False, "a positive integer")
_nonneg_int = _number(int, True, "an integer >= 0")
_positive_float = _number(float, False, "a positive finite number")
_nonneg_float = _number(float, True, "a finite number >= 0")


def _fraction(text):
    """An argparse type: a number strictly between 0 and 1 (a decay rate)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (both "
                                         f"excluded), got {text!r}")
    return value


def _png_path(text):
    """An argparse type: an output file name ending in .png (figures are PNG)."""
    if not text.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"expected a file name ending in .png, got {text!r}")
    return text


class UsageError(Exception):
    """Options that argparse accepts one by one but that do not fit together.

    :func:`main` reports it as ``parser.error`` does (the command's usage, then
    ``PROG: error: ...``) and returns exit code 2.
    """


def build_parser():
    from .models import LIKELIHOODS, MODELS
    from .schedules import LR_SCHEDULES

    parser = argparse.ArgumentParser(
        prog="python -m scratchvae",
        description="scratchvae: variational autoencoders with hand-derived backward passes "
                    "on NumPy/CuPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # train ---------------------------------------------------------------------
    t = sub.add_parser(
        "train", help="train a model on MNIST / Fashion-MNIST with a progress bar",
        description="Train a model. After each epoch prints the train loss and the test "
                    "negative ELBO, appends them to OUT/metrics.jsonl and writes "
                    "OUT/checkpoint.npz and OUT/config.json atomically.")
    t.add_argument("--model", choices=sorted(MODELS), default="mlp-vae")
    t.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    t.add_argument("--epochs", type=_positive_int, default=None,
                   help="number of epochs (default 10; with --resume, the new total)")
    t.add_argument("--batch-size", type=_positive_int, default=128)
    t.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate (default 1e-3)")
    t.add_argument("--lr-schedule", choices=list(LR_SCHEDULES), default="constant",
                   help="constant, or cosine: decayed to 0 over the run's steps")
    t.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    t.add_argument("--momentum", type=_nonneg_float, default=0.9, help="SGD momentum")
    t.add_argument("--weight-decay", type=_nonneg_float, default=0.0)
    t.add_argument("--clip-grad-norm", type=_nonneg_float, default=0.0, metavar="MAX",
                   help="clip gradients to this global L2 norm (0: off)")
    t.add_argument("--seed", type=_nonneg_int, default=0)
    t.add_argument("--latent-dim", type=_nonneg_int, default=0, metavar="Z",
                   help="latent dimension (default: the model's, 20 for mlp-vae)")
    t.add_argument("--likelihood", choices=list(LIKELIHOODS), default="bernoulli")
    t.add_argument("--gaussian-variance", type=_positive_float, default=1.0, metavar="LAMBDA",
                   help="variance of the fixed-variance Gaussian likelihood")
    t.add_argument("--beta", type=_nonneg_float, default=1.0, help="weight of the KL term")
    t.add_argument("--kl-warmup-steps", type=_nonneg_int, default=0, metavar="N",
                   help="linear KL warm-up: beta_t = beta min(1, step/N) (0: off)")
    t.add_argument("--capacity-max", type=_nonneg_float, default=0.0, metavar="C",
                   help="capacity annealing (Burgess et al. 2018): loss = recon + G |KL - C_t|, "
                        "C_t raised linearly from 0 to C nats; needs --capacity-gamma")
    t.add_argument("--capacity-steps", type=_nonneg_int, default=0, metavar="N",
                   help="steps over which C_t rises to --capacity-max (0: C from the start)")
    t.add_argument("--capacity-gamma", type=_nonneg_float, default=0.0, metavar="G",
                   help="weight G of |KL - C_t|; > 0 turns capacity annealing on (replaces beta)")
    _add_vq_args(t)
    t.add_argument("--samples", type=_positive_int, default=1, dest="n_samples", metavar="L",
                   help="z samples per image (default 1)")
    t.add_argument("--binarize", action="store_true",
                   help="dynamic binarisation: each pixel drawn as Bernoulli(intensity) per batch")
    t.add_argument("--augment-shift", type=_nonneg_int, default=0, metavar="PX",
                   help="data augmentation: translate each training image by up to PX pixels "
                        "(0: off; for the classifier)")
    t.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    t.add_argument("--train-limit", type=_nonneg_int, default=0, metavar="N",
                   help="use only the first N training images (0: all)")
    t.add_argument("--test-limit", type=_nonneg_int, default=0, metavar="N",
                   help="use only the first N test images (0: all)")
    _add_data_args(t)
    t.add_argument("--out", default="runs/run", metavar="DIR", help="run directory (default runs/run)")
    existing = t.add_mutually_exclusive_group()
    existing.add_argument("--resume", metavar="DIR",
                          help="continue the run in DIR from its last checkpoint (its config is "
                               "reused; --epochs may raise the number of epochs)")
    existing.add_argument("--overwrite", action="store_true",
                          help="replace the run already in --out (without it train refuses such "
                               "a directory); its files go only when the new run's first epoch "
                               "is written")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    # evaluate ------------------------------------------------------------------
    e = sub.add_parser("evaluate", help="test metrics of a trained run",
                       description="Recompute a run's test negative ELBO, reconstruction and KL.")
    e.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="run directory written by train (config.json + checkpoint.npz)")
    e.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--iw-k", type=_nonneg_int, default=1000, metavar="K",
                   help="importance samples per image for the IW-NLL estimate of a VAE "
                        "(default 1000; 0: skip it)")
    e.add_argument("--iw-images", type=_nonneg_int, default=0, metavar="N",
                   help="estimate IW-NLL on the first N test images only (0: all; on a CPU "
                        "the full test set at K=1000 takes minutes)")
    e.add_argument("--classifier", default=None, metavar="DIR",
                   help="a trained classifier run: report cond_accuracy, the share of a "
                        "conditional VAE's samples that it labels as the class asked for")
    e.add_argument("--cond-samples", type=_positive_int, default=100, metavar="N",
                   help="samples per class for cond_accuracy (default 100)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")

    # sample --------------------------------------------------------------------
    s = sub.add_parser("sample", help="draw images from a trained model into a PNG grid",
                       description="Decode z ~ N(0, I) with a trained model and save the mean "
                                   "images as a PNG grid. A conditional model (conv-cvae, "
                                   "mlp-cvae) draws the class given by --label, or without it "
                                   "one row per class.")
    s.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="run directory written by train (config.json + checkpoint.npz)")
    s.add_argument("--label", type=_nonneg_int, default=None, metavar="K",
                   help="class to draw (conditional models only)")
    s.add_argument("--n", type=_positive_int, default=64,
                   help="number of images (without --label for a conditional model: "
                        "ceil(n / classes) per class); default 64")
    s.add_argument("--out", type=_png_path, default="samples.png", metavar="PNG",
                   help="output file")
    s.add_argument("--seed", type=_nonneg_int, default=0)
    s.add_argument("--device", choices=["cpu", "gpu"], default="cpu")

    # gradcheck -----------------------------------------------------------------
    g = sub.add_parser("gradcheck", help="finite-difference check of every op, loss and model",
                       description="Compare every hand-written backward with float64 central "
                                   "differences; exit code 1 if any check fails.")
    g.add_argument("--json", action="store_true", help="print a JSON list of results")
    g.add_argument("--only", metavar="TEXT", help="run only the checks whose name contains TEXT")
    g.add_argument("--seed", type=_nonneg_int, default=0)

    # data ------------------------------------------------------------------------
    d = sub.add_parser("data", help="locate, verify or download a data set",
                       description="Show where a data set is found (and verify its checksums), "
                                   "or download it with --download.")
    d.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    d.add_argument("--data-dir", metavar="DIR", default="")
    d.add_argument("--download", action="store_true", help="download it if it is missing")
    _add_figure_parsers(sub)
    parser.command_parsers = sub.choices  # command name -> its parser, for UsageError
    return parser


def _add_vq_args(p):
    """Options of --model vq-vae (defaults: scratchvae.models.vq_vae.DEFAULTS)."""
    from .models.vq_vae import CODEBOOK_INITS, DEFAULTS

    g = p.add_argument_group("VQ-VAE (--model vq-vae)")
    g.add_argument("--vq-codes", type=_positive_int, default=DEFAULTS["num_codes"], metavar="K",
                   help=f"codebook size (default {DEFAULTS['num_codes']})")
    g.add_argument("--vq-commitment", type=_nonneg_float, default=DEFAULTS["commitment"],
                   metavar="BETA", help=f"weight of the commitment term "
                                        f"(default {DEFAULTS['commitment']})")
    g.add_argument("--vq-init", choices=list(CODEBOOK_INITS), default=DEFAULTS["codebook_init"],
                   help="codebook initialisation: uniform in +-1/K, or N(0, 1) "
                        f"(default {DEFAULTS['codebook_init']})")
    g.add_argument("--vq-ema", action=argparse.BooleanOptionalAction, default=DEFAULTS["ema"],
                   help="exponential-moving-average codebook instead of the codebook loss "
                        f"(default {'on' if DEFAULTS['ema'] else 'off'})")
    g.add_argument("--vq-decay", type=_fraction, default=DEFAULTS["decay"], metavar="D",
                   help=f"EMA decay, < 1 (default {DEFAULTS['decay']})")
    g.add_argument("--vq-restart", type=_nonneg_int, default=DEFAULTS["restart_after"],
                   metavar="STEPS", help="re-initialise codes unused for this many training "
                                         "steps from random encoder outputs (0: off; default "
                                         f"{DEFAULTS['restart_after']})")


def _add_data_args(p):
    p.add_argument("--data-dir", metavar="DIR", default="",
                   help="directory holding <dataset>/*.gz (else $SCRATCHVAE_DATA, the cache, "
                        "/usr/share/datasets)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--download", action="store_const", const="yes", dest="download",
                       default="auto", help="require the full data set, downloading it if missing")
    group.add_argument("--offline", action="store_const", const="no", dest="download",
                       help="never use the network")
    group.add_argument("--sample", action="store_true", dest="use_sample",
                       help="use the small MNIST sample bundled with the package")


#: what ``train --resume DIR`` may be given besides DIR: the rest is DIR's config.json
RESUME_OPTIONS = ("command", "resume", "epochs", "no_progress")


def _given_options(args, parser):
    """The option strings of the options whose destination holds a value other than
    its default. Where flags share a destination (--download and --offline), the
    one whose constant is the value."""
    given = []
    for action in parser._actions:
        if not action.option_strings or action.dest not in vars(args):
            continue
        value = getattr(args, action.dest)
        if value == parser.get_default(action.dest):
            continue
        if action.nargs == 0 and action.const is not None and value != action.const:
            continue   # a flag of the same destination set it
        given.append(action.option_strings[0])
    return given


def _cmd_train(args):
    from .train import NothingToTrain, TrainConfig, read_config, train

    parser = args.command_parser
    if args.resume:  # the run's own config; --epochs may raise the number of epochs
        ignored = [o for o in _given_options(args, parser)
                   if o.lstrip("-").replace("-", "_") not in RESUME_OPTIONS]
        if ignored:
            raise UsageError(f"--resume continues {args.resume} with the configuration saved "
                             f"there; {', '.join(ignored)} cannot change it (only --epochs "
                             f"and --no-progress go with --resume)")
        config = read_config(args.resume)
        if args.epochs is not None:
            config.epochs = args.epochs
        try:
            train(config, args.resume, resume=True, progress=not args.no_progress)
        except NothingToTrain as e:
            raise UsageError(str(e)) from None
        print(f"run saved in {args.resume}")
        return 0
    vq_options = [o for o in _given_options(args, parser) if o.startswith("--vq-")]
    if vq_options and args.model != "vq-vae":
        raise UsageError(f"{', '.join(vq_options)}: options of the vq-vae model, but --model "
                         f"is {args.model}")
    try:  # TrainConfig checks the options together (e.g. the KL schedule's flags)
        config = TrainConfig(
            model=args.model, dataset=args.dataset, epochs=args.epochs or 10,
            batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
            momentum=args.momentum, weight_decay=args.weight_decay,
            clip_grad_norm=args.clip_grad_norm, seed=args.seed, latent_dim=args.latent_dim,
            likelihood=args.likelihood, gaussian_variance=args.gaussian_variance,
            beta=args.beta, n_samples=args.n_samples, binarize=args.binarize,
            augment_shift=args.augment_shift, lr_schedule=args.lr_schedule,
            kl_warmup_steps=args.kl_warmup_steps, capacity_max=args.capacity_max,
            capacity_steps=args.capacity_steps, capacity_gamma=args.capacity_gamma,
            vq_codes=args.vq_codes, vq_commitment=args.vq_commitment, vq_init=args.vq_init,
            vq_ema=args.vq_ema, vq_decay=args.vq_decay, vq_restart=args.vq_restart,
            device=args.device, train_limit=args.train_limit, test_limit=args.test_limit,
            data_dir=args.data_dir, download=args.download, use_sample=args.use_sample)
    except ValueError as e:
        raise UsageError(str(e)) from None
    train(config, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"run saved in {args.out}")
    return 0


def _cmd_evaluate(args):
    from .report import conditional_accuracy, load_classifier
    from .train import evaluate_run, load_run

    model = classifier = None
    if args.classifier:
        try:
            classifier = load_classifier(args.classifier, args.device)
        except ValueError as e:
            _reraise_failed_run(e)
            print(f"error: {e}", file=sys.stderr)
            return 2
        config, model, _ = load_run(args.checkpoint, device=args.device)
        if not hasattr(model, "n_classes"):
            print(f"error: --classifier scores the samples of a conditional VAE; "
                  f"{args.checkpoint} holds {config.model}", file=sys.stderr)
            return 2
    result = evaluate_run(args.checkpoint, device=args.device,
                          log=(lambda *a: print(*a, file=sys.stderr)) if args.json else print,
                          iw_k=args.iw_k, iw_images=args.iw_images,
                          progress=not args.no_progress)
    if classifier is not None:
        acc, per_class = conditional_accuracy(model, classifier, args.cond_samples)
        result["cond_accuracy"] = acc
        result["cond_accuracy_per_class"] = [float(a) for a in per_class]
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in result.items():
            if isinstance(value, list):  # e.g. test_kl_per_dim
                value = " ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in value)
            print(f"{key:12s} {value:.4f}" if isinstance(value, float) else f"{key:12s} {value}")
    return 0


def _cmd_sample(args):
    import math

    import numpy as np

    from .backend import to_numpy
    from .models import CVAE
    from .plots import save_image_grid
    from .train import load_run

    config, model, _ = load_run(args.checkpoint, device=args.device)
    rng = np.random.default_rng(args.seed)
    if not hasattr(model, "latent_dim") or config.model == "vq-vae":
        print(f"error: {config.model} has no prior to sample from; sample needs a VAE "
              f"(mlp-vae, conv-vae, mlp-cvae, conv-cvae)", file=sys.stderr)
        return 1
    if isinstance(model, CVAE):
        K = model.n_classes
        if args.label is not None and args.label >= K:
            print(f"error: --label must be in 0..{K - 1} for {config.model}, got {args.label}",
                  file=sys.stderr)
            return 2
        if args.label is None:  # one row per class
            per_class = math.ceil(args.n / K)
            labels = np.repeat(np.arange(K), per_class)
            images = model.sample(labels.size, rng, labels=labels)
            ncol, row_labels = per_class, [str(k) for k in range(K)]
        else:
            images = model.sample(args.n, rng, labels=args.label)
            ncol, row_labels = math.ceil(math.sqrt(args.n)), None
    else:
        if args.label is not None:
            print(f"error: --label needs a conditional model (conv-cvae, mlp-cvae); "
                  f"{args.checkpoint} holds {config.model}", file=sys.stderr)
            return 2
        images = model.sample(args.n, rng)
        ncol, row_labels = math.ceil(math.sqrt(args.n)), None
    save_image_grid(to_numpy(images), args.out, ncol=ncol, row_labels=row_labels)
    print(f"{images.shape[0]} samples of {config.model} saved to {args.out}")
    return 0


def _cmd_gradcheck(args):
    from .gradcheck import run_checks

    results = run_checks(seed=args.seed, only=args.only)
    if not results:
        print(f"error: no check matches {args.only!r}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=1))
    else:
        width = max(len(r.name) for r in results)
        for r in results:
            print(f"{r.name:{width}s}  {r.max_error:9.2e}  (tol {r.tol:.0e})  "
                  f"{'pass' if r.passed else 'FAIL'}")
        failed = sum(not r.passed for r in results)
        print(f"{len(results) - failed} passed, {failed} failed")
    return 0 if all(r.passed for r in results) else 1


def _cmd_data(args):
    from . import data

    directory, looked = data.locate_dataset(args.dataset, args.data_dir or None)
    if directory is None and not args.download:
        print(f"error: {args.dataset} not found; looked in:", *looked, sep="\n  ",
              file=sys.stderr)
        print("get it with `python -m scratchvae data --download`, or point --data-dir / "
              "$SCRATCHVAE_DATA at a directory holding it", file=sys.stderr)
        return 1
    # as train --download: a failed download raises DataNotFoundError with the whole
    # report (where it looked, why nothing was downloaded, how to provide the files)
    ds = data.load_dataset(args.dataset, data_dir=args.data_dir or None,
                           download=bool(args.download), allow_sample=False)
    print(f"{args.dataset}: {len(ds.train_labels)} train / {len(ds.test_labels)} test images, "
          f"checksums verified, in {ds.source}")
    return 0


COMMANDS = {"train": _cmd_train, "evaluate": _cmd_evaluate, "gradcheck": _cmd_gradcheck,
            "data": _cmd_data}
COMMANDS["sample"] = _cmd_sample


# plot, report (figures and the markdown report of trained runs) ----------------------

def _add_figure_parsers(sub):
    from .plots import PLOTS

    p = sub.add_parser("plot", help="draw a figure of trained runs into a PNG",
                       description="Draw a figure from trained runs: curves (train/test loss "
                                   "per epoch, any runs), latent-dim (test -ELBO against Z, runs "
                                   "that differ in Z), samples (prior samples), latent-2d (a Z=2 "
                                   "VAE's latent space and manifold), traversals (one panel per "
                                   "run), cvae (per-class samples, or --label), reconstructions "
                                   "(one row per run).")
    p.add_argument("name", choices=list(PLOTS), metavar="NAME", help=", ".join(PLOTS))
    p.add_argument("--run", required=True, nargs="+", action="extend", metavar="DIR",
                   help="run directory (several for curves, latent-dim, traversals, "
                        "reconstructions)")
    p.add_argument("--out", type=_png_path, default=None, metavar="PNG",
                   help="output file (default NAME.png)")
    p.add_argument("--label", type=_nonneg_int, default=None, metavar="K",
                   help="cvae: draw only class K")
    p.add_argument("--n", type=_positive_int, default=64, help="samples: number of images")
    p.add_argument("--index", type=_nonneg_int, default=0,
                   help="traversals: the test image whose posterior mean is the centre")
    p.add_argument("--images", type=_positive_int, default=10,
                   help="reconstructions: number of test images")
    p.add_argument("--title", default=None)
    p.add_argument("--seed", type=_nonneg_int, default=0)

    r = sub.add_parser("report", help="markdown table of trained runs",
                       description="One markdown table of the given runs: parameters, seconds "
                                   "per epoch, test -ELBO, importance-weighted NLL, "
                                   "reconstruction error, VQ-VAE codebook use, and a CVAE's "
                                   "conditional accuracy under a trained classifier.")
    r.add_argument("--runs", required=True, nargs="+", metavar="DIR")
    r.add_argument("--out", default="report.md", metavar="MD")
    r.add_argument("--iw-k", type=_nonneg_int, default=100, metavar="K",
                   help="importance samples per image for the IW-NLL (0: skip; default 100)")
    r.add_argument("--iw-images", type=_nonneg_int, default=1000, metavar="N",
                   help="IW-NLL on the first N test images (0: all; default 1000)")
    r.add_argument("--classifier", default=None, metavar="DIR",
                   help="a trained classifier run: conditional accuracy of CVAE samples")
    r.add_argument("--cond-samples", type=_positive_int, default=100, metavar="N",
                   help="CVAE samples per class for the conditional accuracy (default 100)")
    r.add_argument("--figures", action="store_true",
                   help="also draw figures beside the report and link them")
    r.add_argument("--seed", type=_nonneg_int, default=0)
    r.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    r.add_argument("--progress", action="store_true", help="progress bar of the IW-NLL")


def _reraise_failed_run(e):
    """Re-raise an unreadable run or data set (exit 1, in :func:`main`); the other
    ValueErrors of plot, report and evaluate --classifier are a request the run
    cannot serve (e.g. a 2-D latent plot of a Z=10 run): exit 2."""
    from .checkpoints import CheckpointError
    from .data import DataError
    if isinstance(e, (CheckpointError, DataError)):
        raise e


def _cmd_plot(args):
    from .plots import plot_runs

    out = args.out or f"{args.name}.png"
    try:
        plot_runs(args.name, args.run, out, seed=args.seed, label=args.label, n=args.n,
                  index=args.index, images=args.images, title=args.title)
    except ValueError as e:
        _reraise_failed_run(e)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.name} saved to {out}")
    return 0


def _cmd_report(args):
    from .report import markdown_table, write_report

    try:
        rows = write_report(args.runs, args.out, iw_k=args.iw_k, iw_images=args.iw_images,
                            classifier_dir=args.classifier, cond_per_class=args.cond_samples,
                            figures=args.figures, seed=args.seed, device=args.device,
                            log=lambda *a: print(*a, file=sys.stderr), progress=args.progress)
    except ValueError as e:
        _reraise_failed_run(e)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_table(rows))
    print(f"report saved to {args.out}")
    return 0


COMMANDS["plot"] = _cmd_plot
COMMANDS["report"] = _cmd_report


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_parser = parser.command_parsers[args.command]
    from .checkpoints import CheckpointError
    from .data import DataError, DataNotFoundError
    from .train import DeviceUnavailable, TrainingDiverged

    try:
        return COMMANDS[args.command](args)
    except UsageError as e:  # what parser.error prints, but returned as main()'s exit code
        args.command_parser.print_usage(sys.stderr)
        print(f"{args.command_parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except (DataError, DataNotFoundError, CheckpointError, TrainingDiverged,
            DeviceUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint written is intact", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 1

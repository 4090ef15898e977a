"""Command line: ``python -m scratchvae {train,sweep,evaluate,sample,gradcheck,data,plot,report}``.

Bad arguments get argparse's message and exit code 2 (options that are each
valid but do not fit together too: see :class:`UsageError`); a run that fails
(missing data, a diverged loss, an unreadable checkpoint, no GPU) prints one
clear ``error: ...`` message on stderr and exits with code 1.
"""
import argparse
import dataclasses
import json
import os
import sys

from . import run_commands, sweep_commands


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


class _Parser(argparse.ArgumentParser):
    """A command's parser whose namespace also names the options the command line
    gives, whatever their values (``args.given``, e.g. ``["--lr", "--epochs"]``): the
    same arguments parsed again with every default suppressed hold only those."""

    def parse_known_args(self, args=None, namespace=None):
        parsed, extras = super().parse_known_args(args, namespace)
        parsed.given = self._given(sys.argv[1:] if args is None else list(args))
        return parsed, extras

    def _given(self, args):
        saved = [(action, action.default) for action in self._actions], dict(self._defaults)
        try:
            for action in self._actions:
                action.default = argparse.SUPPRESS
            self._defaults.clear()
            present = vars(super().parse_known_args(args, None)[0])
        finally:
            for action, default in saved[0]:
                action.default = default
            self._defaults.update(saved[1])
        given = []
        for action in self._actions:
            if not action.option_strings or action.dest not in present:
                continue
            if action.nargs == 0 and action.const is not None and (
                    present[action.dest] != action.const):
                continue   # a flag of the same destination was given (--download, --offline)
            given.append(action.option_strings[0])
        return given


class UsageError(Exception):
    """Options that argparse accepts one by one but that do not fit together.

    :func:`main` reports it as ``parser.error`` does (the command's usage, then
    ``PROG: error: ...``) and returns exit code 2.
    """


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m scratchvae",
        description="scratchvae: variational autoencoders with hand-derived backward passes "
                    "on NumPy/CuPy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)

    # train ---------------------------------------------------------------------
    t = sub.add_parser(
        "train", help="train a model on MNIST / Fashion-MNIST with a progress bar",
        description="Train a model. After each epoch prints the train loss and the test "
                    "negative ELBO, appends them to OUT/metrics.jsonl and writes "
                    "OUT/checkpoint.npz and OUT/config.json atomically.")
    _add_config_args(t)
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
    _add_sweep_parser(sub)

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
                   help="a trained classifier run: report the generative quality of a model "
                        "that samples (VAE, CVAE): fd, the Fréchet distance on the "
                        "classifier's features (not comparable with Inception FIDs), is, the "
                        "classifier-based Inception score, beside fd_floor (test set against "
                        "as many training images) and is_ceiling (the test set's IS); for a "
                        "conditional VAE also cond_accuracy, the share of its samples that the "
                        "classifier labels as the class asked for")
    e.add_argument("--cond-samples", type=_positive_int, default=100, metavar="N",
                   help="samples per class for cond_accuracy (default 100)")
    e.add_argument("--quality-samples", type=_nonneg_int, default=10000, metavar="N",
                   help="samples for fd and is (a conditional model's labels in turn), and "
                        "training images for fd_floor (default 10000; 0: skip them)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")

    # sample --------------------------------------------------------------------
    s = sub.add_parser("sample", help="draw images from a trained model into a PNG grid",
                       description="Decode z ~ N(0, I) with a trained model and save the mean "
                                   "images as a PNG grid. A conditional model (conv-cvae, "
                                   "mlp-cvae) draws the class given by --label, or without it "
                                   "one row per class. A VQ-VAE draws with a PixelCNN prior "
                                   "over its codes (--prior DIR): ancestral sampling of the "
                                   "code map, then the VQ-VAE's decoder.")
    s.add_argument("--checkpoint", required=True, metavar="DIR",
                   help="run directory written by train (config.json + checkpoint.npz)")
    s.add_argument("--label", type=_nonneg_int, default=None, metavar="K",
                   help="class to draw (conditional models only)")
    s.add_argument("--n", type=_positive_int, default=64,
                   help="number of images (without --label for a conditional model: "
                        "ceil(n / classes) per class); default 64")
    s.add_argument("--out", type=_png_path, default="samples.png", metavar="PNG",
                   help="output file")
    s.add_argument("--prior", default=None, metavar="DIR",
                   help="a PixelCNN prior's run over the codes of the VQ-VAE in --checkpoint: "
                        "draw code maps from it and decode them (a class-conditional prior: "
                        "--label K, or without it one row per class)")
    s.add_argument("--temperature", type=_positive_float, default=1.0, metavar="T",
                   help="with --prior: draw each code from softmax(logits / T); T < 1 "
                        "sharpens (default 1)")
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


#: argparse type of a config field's number: (field type, bound) -> parser
NUMBER_TYPES = {(int, "positive"): _positive_int, (int, "nonneg"): _nonneg_int,
                (float, "positive"): _positive_float, (float, "nonneg"): _nonneg_float,
                (float, "fraction"): _fraction}


def _add_config_args(p):
    """One option per field of TrainConfig that has one (scratchvae/config.py),
    in the order of the fields; a field's metadata gives its flag, help, choices,
    metavar, argument group and the kind of number it takes."""
    import dataclasses

    from .config import TrainConfig

    groups = {}
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        if not meta["cli"]:
            continue
        if meta["group"] and meta["group"] not in groups:
            groups[meta["group"]] = p.add_argument_group(meta["group"])
        target = groups[meta["group"]] if meta["group"] else p
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        options = dict(dest=f.name, default=f.default, help=meta["help"])
        if f.type is bool:
            negatable = meta["negatable"]   # --name and --no-name
            options["action"] = argparse.BooleanOptionalAction if negatable else "store_true"
        else:
            options.update(metavar=meta["metavar"], choices=meta["choices"],
                           type=NUMBER_TYPES.get((f.type, meta["bound"])))
        target.add_argument(flag, *meta["aliases"], **options)


def _add_data_args(p):
    """Where the data come from: the config's ``download`` and ``use_sample``."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--download", action="store_const", const="yes", dest="download",
                       default="auto", help="require the full data set, downloading it if missing")
    group.add_argument("--offline", action="store_const", const="no", dest="download",
                       help="never use the network")
    group.add_argument("--sample", action="store_true", dest="use_sample",
                       help="use the small MNIST sample bundled with the package")


def _add_sweep_parser(sub):
    """sweep: train's options for every run, the grid, the seeds and the cluster."""
    w = sub.add_parser(
        "sweep", help="train configurations x seeds on Dask and summarise them over seeds",
        description="Train every combination of the --set values for every seed of --seeds, "
                    "each an ordinary run directory OUT/<configuration>/seed=<s> (a finished "
                    "run is skipped, an interrupted one resumed), as tasks on a Dask cluster; "
                    "then write OUT/summary.md, summary.json and summary.png: each test "
                    "metric's mean, sample sd and 95% Student-t interval over seeds, and the "
                    "paired differences between configurations.")
    _add_config_args(w)
    _add_data_args(w)
    for action in w._actions:   # --seeds gives the seeds (--seed is refused)
        if action.dest == "seed":
            action.help = argparse.SUPPRESS
    w.add_argument("--seeds", required=True, type=sweep_commands.seed_list, metavar="SEEDS",
                   help="seeds as FIRST-LAST, N, or a comma-separated list (0-9, 0,2,4)")
    w.add_argument("--set", action="append", type=sweep_commands.setting_type(NUMBER_TYPES),
                   metavar="NAME=V1,V2", help="values of one training option to sweep "
                   "(latent-dim=10,20); several --set make a grid")
    w.add_argument("--out", required=True, metavar="DIR", help="the sweep's directory")
    w.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a running Dask scheduler (tcp://host:8786); default: a local cluster")
    w.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="local cluster: worker processes (default cores / threads per worker)")
    w.add_argument("--threads-per-worker", type=_positive_int, default=1, metavar="T",
                   help="engine (Numba) threads of each run (default 1)")
    w.add_argument("--retries", type=_nonneg_int, default=3, metavar="N",
                   help="times Dask reruns a run whose task raised (default 3)")
    w.add_argument("--twin", action="store_true",
                   help="also train each run's PyTorch twin (mlp-vae, conv-vae, conv-cvae, "
                        "vq-vae, pixelcnn; needs torch) after it, from the same initial "
                        "weights, batches and noise, into RUN/twin, and report scratchvae "
                        "minus PyTorch per seed and its mean with its 95%% interval")
    w.add_argument("--classifier", default=None, metavar="DIR",
                   help="a trained classifier run: after each run, the FD and IS of its "
                        "samples (a conditional model: also the share labelled as asked), "
                        "in RUN/quality.json and the summary")
    w.add_argument("--quality-samples", type=_positive_int, default=10000, metavar="N",
                   help="samples per run for --classifier (default 10000)")
    w.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")


#: what ``train --resume DIR`` may be given besides DIR: the rest is DIR's config.json
RESUME_OPTIONS = ("--resume", "--epochs", "--no-progress")


def config_from_args(args):
    """The TrainConfig of parsed ``train`` options: every config field that has an
    option takes its value."""
    import dataclasses

    from .config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{name: value for name, value in vars(args).items() if name in fields})


def _cmd_train(args):
    from .config import NOT_GAUSSIAN_LATENT
    from .models import MODELS
    from .rundir import read_config
    from .train import NothingToTrain, ScheduleHorizonChanged, train

    if args.resume:  # the run's own config; --epochs may raise the number of epochs
        refused = [o for o in args.given if o not in RESUME_OPTIONS]
        if refused:   # given at any value, even the default: it would be ignored
            raise UsageError(f"--resume continues {args.resume} with the configuration saved "
                             f"there; {', '.join(refused)} cannot change it (only --epochs "
                             f"and --no-progress go with --resume), whatever its value, its "
                             f"default too; to train with other options, start a new run")
        config = read_config(args.resume)
        if "--epochs" in args.given:
            try:   # checked as a new run's (the iwae schedule's length)
                config = dataclasses.replace(config, epochs=args.epochs)
            except ValueError as e:
                raise UsageError(str(e)) from None
        try:
            train(config, args.resume, resume=True, progress=not args.no_progress)
        except (NothingToTrain, ScheduleHorizonChanged) as e:
            raise UsageError(str(e)) from None
        print(f"run saved in {args.resume}")
        return 0
    vq_options = [o for o in args.given if o.startswith("--vq-") and o != "--vq-run"]
    if vq_options and args.model != "vq-vae":
        raise UsageError(f"{', '.join(vq_options)}: options of the vq-vae model, but --model "
                         f"is {args.model}")
    if args.objective != "elbo" and args.model in NOT_GAUSSIAN_LATENT:
        vaes = [m for m in sorted(MODELS) if m not in NOT_GAUSSIAN_LATENT]
        raise UsageError(f"--objective {args.objective} needs a Gaussian-latent VAE "
                         f"({', '.join(vaes)}); --model {args.model} has none")
    try:  # TrainConfig checks the options together (e.g. the KL schedule's flags)
        config = config_from_args(args)
    except ValueError as e:
        raise UsageError(str(e)) from None
    train(config, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"run saved in {args.out}")
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


# plot, report (figures and the markdown report of trained runs) ----------------------

def _add_figure_parsers(sub):
    from .figures import PLOTS

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
                       description="One markdown table of the given runs: parameters, test "
                                   "-ELBO, importance-weighted NLL, reconstruction error, "
                                   "VQ-VAE codebook use, seconds per epoch, and under a trained "
                                   "classifier the generative quality of the models that "
                                   "sample (FD, IS) and a CVAE's conditional accuracy.")
    r.add_argument("--runs", required=True, nargs="+", metavar="DIR")
    r.add_argument("--out", default="report.md", metavar="MD")
    r.add_argument("--iw-k", type=_nonneg_int, default=100, metavar="K",
                   help="importance samples per image for the IW-NLL (0: skip; default 100)")
    r.add_argument("--iw-images", type=_nonneg_int, default=1000, metavar="N",
                   help="IW-NLL on the first N test images (0: all; default 1000)")
    r.add_argument("--classifier", default=None, metavar="DIR",
                   help="a trained classifier run: FD (Fréchet distance on its features, not "
                        "comparable with Inception FIDs) and IS of the models that sample, and "
                        "the conditional accuracy of CVAE samples")
    r.add_argument("--cond-samples", type=_positive_int, default=100, metavar="N",
                   help="CVAE samples per class for the conditional accuracy (default 100)")
    r.add_argument("--quality-samples", type=_nonneg_int, default=10000, metavar="N",
                   help="samples per model for FD and IS, and training images for the FD "
                        "floor (default 10000; 0: skip them)")
    r.add_argument("--figures", action="store_true",
                   help="also draw figures beside the report and link them")
    r.add_argument("--seed", type=_nonneg_int, default=0)
    r.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    r.add_argument("--progress", action="store_true", help="progress bar of the IW-NLL")


#: command name -> the function that runs it
COMMANDS = {"train": _cmd_train, "sweep": sweep_commands.sweep, "evaluate": run_commands.evaluate,
            "sample": run_commands.sample, "gradcheck": _cmd_gradcheck, "data": _cmd_data,
            "plot": run_commands.plot, "report": run_commands.report}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_parser = parser.command_parsers[args.command]
    from .backend import BlasNotFound
    from .data import DataError, DataNotFoundError
    from .files import FileError
    from .rundir import DeviceUnavailable
    from .train import TrainingDiverged

    try:
        return COMMANDS[args.command](args)
    except UsageError as e:  # what parser.error prints, but returned as main()'s exit code
        args.command_parser.print_usage(sys.stderr)
        print(f"{args.command_parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except (DataError, DataNotFoundError, FileError, TrainingDiverged,
            DeviceUnavailable, BlasNotFound) as e:   # FileError: CheckpointError too
        print(f"error: {e}", file=sys.stderr)
        return 1
    except MemoryError as e:   # e.g. a crafted config.json asking for a huge model
        print(f"error: out of memory{': ' + str(e) if str(e) else ''}; the sizes this command "
              f"asks for (model, batch, samples) exceed this machine's memory; the last "
              f"checkpoint written is intact", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint written is intact", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 1

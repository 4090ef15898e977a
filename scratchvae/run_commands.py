"""The commands of ``python -m scratchvae`` that read trained runs: evaluate,
sample, plot, report (their options: scratchvae/cli.py).

Each takes the parsed arguments and returns the exit code: 0 done, 2 a request
the run cannot serve (printed as ``error: ...``); an unreadable run or data set,
and an ``--out`` that cannot be written (checked before any work), are raised
for :func:`scratchvae.cli.main` to report with exit code 1.
"""
import json
import sys

from .files import check_output_file


def evaluate(args):
    from .prior import evaluate_prior
    from .quality import classifier_reference, run_quality, run_sampler
    from .report import conditional_accuracy, load_classifier
    from .rundir import evaluate_run, load_run

    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    classifier = None
    quality = {}
    if args.classifier:   # scores of the model's samples, before the longer evaluation
        try:
            classifier = load_classifier(args.classifier, args.device)
            config, model, _ = load_run(args.checkpoint, device=args.device)
            sampler = run_sampler(config, model)   # a model that cannot sample: refused here
            if args.quality_samples:
                reference = classifier_reference(args.classifier, classifier,
                                                 args.quality_samples, log=log)
                quality = run_quality(config, sampler, classifier, reference,
                                      args.quality_samples)
        except ValueError as e:
            _reraise_failed_run(e)
            print(f"error: {e}", file=sys.stderr)
            return 2
    if _is_prior_run(args.checkpoint):   # VQ-VAE + prior: NLL per code, -ELBO per image
        result = evaluate_prior(args.checkpoint, device=args.device, log=log)
    else:
        result = evaluate_run(args.checkpoint, device=args.device, log=log,
                              iw_k=args.iw_k, iw_images=args.iw_images,
                              progress=not args.no_progress)
    result.update(quality)
    if classifier is not None and sampler.n_classes:
        acc, per_class = conditional_accuracy(sampler, classifier, args.cond_samples)
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


def _is_prior_run(run_dir):
    """Whether ``run_dir`` holds a PixelCNN prior's run (a damaged config.json is left
    for the full reading to report)."""
    from .files import FileError
    from .rundir import read_config
    try:
        return read_config(run_dir).model == "pixelcnn"
    except FileError:
        return False


def sample(args):
    import math

    import numpy as np

    from .backend import to_numpy
    from .models import CVAE
    from .plots import save_image_grid
    from .rundir import load_run

    check_output_file(args.out)
    if args.prior:
        return _sample_with_prior(args)
    if "--temperature" in args.given:
        print("error: --temperature goes with --prior (the temperature of a PixelCNN prior's "
              "code distribution)", file=sys.stderr)
        return 2
    config, model, _ = load_run(args.checkpoint, device=args.device)
    rng = np.random.default_rng(args.seed)
    if config.model == "vq-vae":
        print(f"error: a VQ-VAE has no prior of its own: give a PixelCNN prior trained on "
              f"its codes, --prior DIR (train one with train --model pixelcnn --vq-run "
              f"{args.checkpoint})", file=sys.stderr)
        return 1
    if not hasattr(model, "latent_dim"):
        print(f"error: {config.model} has no prior to sample from; sample needs a VAE "
              f"(mlp-vae, conv-vae, mlp-cvae, conv-cvae), or a VQ-VAE with --prior DIR",
              file=sys.stderr)
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


def _sample_with_prior(args):
    """sample --checkpoint VQDIR --prior PRIORDIR: code maps from the prior, decoded."""
    import math

    import numpy as np

    from .plots import save_image_grid
    from .prior import load_prior_pair, sample_images

    pair = load_prior_pair(args.prior, vq_dir=args.checkpoint, device=args.device)
    K = pair.prior.n_classes
    rng = np.random.default_rng(args.seed)
    if args.label is not None and not K:
        print(f"error: --label needs a class-conditional prior (train --conditional); "
              f"{args.prior} is unconditional", file=sys.stderr)
        return 1
    if args.label is not None and args.label >= K:
        print(f"error: --label must be in 0..{K - 1} for the prior in {args.prior}, got "
              f"{args.label}", file=sys.stderr)
        return 1
    if K and args.label is None:       # one row per class
        per_class = math.ceil(args.n / K)
        labels = np.repeat(np.arange(K), per_class)
        ncol, row_labels = per_class, [str(k) for k in range(K)]
    else:
        labels = args.label
        ncol, row_labels = math.ceil(math.sqrt(args.n)), None
    n = args.n if labels is None or np.ndim(labels) == 0 else len(labels)
    images = sample_images(pair.vq, pair.prior, n, rng, labels=labels,
                           temperature=args.temperature)
    save_image_grid(images, args.out, ncol=ncol, row_labels=row_labels)
    what = "" if args.label is None else f" of class {args.label}"
    print(f"{n} samples{what} of the VQ-VAE {args.checkpoint} with the prior {args.prior} "
          f"(temperature {args.temperature:g}) saved to {args.out}")
    return 0


def _reraise_failed_run(e):
    """Re-raise an unreadable run or data set (exit 1, in :func:`main`); the other
    ValueErrors of plot, report and evaluate --classifier are a request the run
    cannot serve (e.g. a 2-D latent plot of a Z=10 run): exit 2."""
    from .data import DataError
    from .files import FileError
    if isinstance(e, (FileError, DataError)):  # FileError: CheckpointError too
        raise e


def plot(args):
    from .figures import plot_runs

    out = args.out or f"{args.name}.png"
    check_output_file(out)
    try:
        plot_runs(args.name, args.run, out, seed=args.seed, label=args.label, n=args.n,
                  index=args.index, images=args.images, title=args.title)
    except ValueError as e:
        _reraise_failed_run(e)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.name} saved to {out}")
    return 0


def report(args):
    from .report import markdown_table, write_report

    check_output_file(args.out)   # and its directory, where --figures draws
    try:
        rows = write_report(args.runs, args.out, iw_k=args.iw_k, iw_images=args.iw_images,
                            classifier_dir=args.classifier, cond_per_class=args.cond_samples,
                            quality_samples=args.quality_samples,
                            figures=args.figures, seed=args.seed, device=args.device,
                            log=lambda *a: print(*a, file=sys.stderr), progress=args.progress)
    except ValueError as e:
        _reraise_failed_run(e)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_table(rows))
    print(f"report saved to {args.out}")
    return 0

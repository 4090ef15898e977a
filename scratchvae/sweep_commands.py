"""``python -m scratchvae sweep``: configurations x seeds as Dask tasks (its options:
scratchvae/cli.py; the runs and statistics: scratchvae/sweep.py).

The tasks run on a ``LocalCluster`` of worker processes, one task at a time per
worker, each with ``--threads-per-worker`` engine threads (workers x threads at
most the machine's cores), or on the cluster whose scheduler ``--scheduler``
names. Dask schedules them, reruns the task of a worker that dies and retries
a task that raises (``--retries``). With ``--twin`` each run's PyTorch twin is
one more task, which depends on its run (scratchvae.sweep.twin_task); so is, with
``--classifier``, the scoring of its samples (scratchvae.sweep.quality_task). The summary
goes to OUT/summary.md, OUT/summary.json and OUT/summary.png (:func:`summary_figure`).
"""
import argparse
import json
import os
import sys

#: seconds to wait for a scheduler given by --scheduler
CONNECT_TIMEOUT = 3
#: the fields a --set may not vary (the sweep's own options give them)
NOT_SWEPT = ("model", "seed")


def seed_list(text):
    """An argparse type: seeds as ``0-9``, ``1,3,5`` or ``0-4,10``; a non-empty,
    increasing list of distinct integers >= 0."""
    seeds = set()
    try:
        for part in text.split(","):
            low, dash, high = part.strip().partition("-")
            low, high = int(low), int(high) if dash else int(low)
            if low < 0 or high < low:
                raise ValueError
            seeds.update(range(low, high + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seeds as FIRST-LAST (FIRST <= LAST), N or a comma-separated list of "
            f"them, integers >= 0, got {text!r}") from None
    return sorted(seeds)


def setting_type(number_types):
    """An argparse type: ``NAME=V1,V2,...`` with NAME a training option (``latent-dim``
    or ``latent_dim``) -> (field name, list of values), each value parsed as the
    option parses it (``number_types``: the command line's (type, bound) -> parser)."""
    def setting(text):
        import dataclasses

        from .config import TrainConfig

        name, equals, values = text.partition("=")
        field = name.strip().replace("-", "_")
        fields = {f.name: f for f in dataclasses.fields(TrainConfig)
                  if f.metadata["cli"] and f.name not in NOT_SWEPT}
        if not equals or field not in fields:
            raise argparse.ArgumentTypeError(
                f"expected NAME=V1,V2,... with NAME a training option "
                f"({', '.join(sorted(fields))}; dashes or underscores), got {text!r}")
        parsed = []
        for value in values.split(","):
            try:
                parsed.append(_field_value(fields[field], value.strip(), number_types))
            except (argparse.ArgumentTypeError, ValueError) as e:
                raise argparse.ArgumentTypeError(f"--set {field}: {e}") from None
        return field, parsed
    return setting


def _field_value(f, text, number_types):
    """``text`` as a value of TrainConfig field ``f`` (its type, bound and choices)."""
    if f.type is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() == "true"
    if f.type in (int, float):
        convert = number_types.get((f.type, f.metadata["bound"]))
        if convert is None:
            try:
                return f.type(text)
            except ValueError:
                raise ValueError(f"expected {'an integer' if f.type is int else 'a number'}, "
                                 f"got {text!r}") from None
        return convert(text)
    choices = f.metadata["choices"]
    if choices is not None and text not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
    return text


def _grid(args, flag_of):
    """field -> values of the --set options; a field set twice, or also given as its
    own option, is argparse's error (exit 2)."""
    grid = {}
    for field, values in args.set or []:
        if field in grid:
            args.command_parser.error(f"--set {field} is given twice; give all its values "
                                      f"in one --set {field}=V1,V2,...")
        if flag_of[field] in args.given:
            args.command_parser.error(f"{flag_of[field]} and --set {field} both give {field}; "
                                      f"keep one")
        grid[field] = values
    return grid


def _connect(args):
    """(client, cluster or None) of --scheduler, else of a new LocalCluster."""
    from distributed import Client, LocalCluster

    if args.scheduler:
        return Client(args.scheduler, timeout=CONNECT_TIMEOUT), None
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    return Client(cluster), cluster


def _runs(args):
    """The runs the options ask for; argparse's error (exit 2) for options that do
    not fit together or a configuration TrainConfig refuses."""
    import dataclasses

    from .config import TrainConfig
    from .sweep import plan

    error = args.command_parser.error
    if "--seed" in args.given:
        error("--seed: a sweep trains the seeds of --seeds")
    if args.scheduler and "--workers" in args.given:
        error("--workers starts a local cluster's workers; the cluster of --scheduler has "
              "its own")
    cores, threads = os.cpu_count() or 1, args.threads_per_worker
    if not args.scheduler:
        args.workers = args.workers or max(1, cores // threads)
        if args.workers * threads > cores:
            error(f"--workers {args.workers} x --threads-per-worker {threads} = "
                  f"{args.workers * threads} threads, more than this machine's {cores} cores")
    flag_of = {f.name: f.metadata["flag"] or "--" + f.name.replace("_", "-")
               for f in dataclasses.fields(TrainConfig)}
    grid = _grid(args, flag_of)
    try:   # train's options, checked by TrainConfig for every configuration
        base = TrainConfig(**{k: v for k, v in vars(args).items() if k in flag_of})
        runs = plan(base, grid, args.seeds, args.out)
    except ValueError as e:
        error(str(e))
    if args.twin:
        _check_twins(runs, error)
    if args.classifier:
        _check_classifier(args, error)
    return runs


def _check_classifier(args, error):
    """argparse's error (exit 2) for a --classifier that is no classifier run of the
    sweep's data set, or a model whose samples it cannot score."""
    from .files import FileError
    from .quality import SAMPLING_MODELS
    from .rundir import read_config

    if args.model not in SAMPLING_MODELS + ("pixelcnn",):
        error(f"--classifier scores samples, but {args.model} has no prior to sample from; "
              f"models that sample: {', '.join(SAMPLING_MODELS)}, pixelcnn")
    try:
        config = read_config(args.classifier)
    except FileError as e:
        error(f"--classifier: expected a trained classifier run, but {e}")
    if config.model != "classifier":
        error(f"--classifier {args.classifier} holds {config.model}, not a classifier")
    if config.dataset != args.dataset:
        error(f"--classifier {args.classifier} was trained on {config.dataset}, the sweep "
              f"trains on {args.dataset}; FD and IS need a classifier of the same data set")


def _check_twins(runs, error):
    """argparse's error (exit 2) for --twin without PyTorch, or a configuration whose
    twin the twins do not implement (scratchvae.twins.twin_problems)."""
    from .twins import has_torch, twin_problems

    if not has_torch():
        error("--twin trains each run's PyTorch twin, but PyTorch is not installed: "
              "install torch, or leave out --twin")
    for run in runs:
        problems = twin_problems(run.config)
        if problems:
            where = f" (the configuration {run.name})" if run.settings else ""
            error(f"--twin{where}: {'; '.join(problems)}")


def _train_runs(client, runs, args):
    """Submit every run as a task (with --twin, its twin as a task that depends on
    it; with --classifier, the scoring of its samples likewise), show a bar over
    them and each finished task's headline metric as it lands. Returns, for each
    kind of task ("run", "twin", "quality"), run directory -> its record, and the
    directories whose task of that kind failed."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    from .sweep import headline, quality_task, run_task, twin_task

    key = headline(args.model)
    futures = {}
    for run in runs:
        task = client.submit(run_task, run.config, run.run_dir, args.threads_per_worker,
                             pure=False, retries=args.retries)
        futures[task] = ("run", run)
        # the run's result as their argument: Dask starts them after the run
        if args.twin:
            futures[client.submit(twin_task, task, run.config.epochs, args.threads_per_worker,
                                  pure=False, retries=args.retries)] = ("twin", run)
        if args.classifier:
            futures[client.submit(quality_task, task, args.classifier, args.quality_samples,
                                  args.threads_per_worker, pure=False,
                                  retries=args.retries)] = ("quality", run)
    done_of = {"run": {}, "twin": {}, "quality": {}}
    failed_of = {"run": [], "twin": [], "quality": []}
    undone = {"twin": "not trained", "quality": "not scored"}
    with tqdm(total=len(futures), desc="sweep", unit="task", disable=args.no_progress,
              dynamic_ncols=True, file=sys.stderr) as bar:
        for future in as_completed(futures):
            kind, run = futures[future]
            what = run.run_dir + ("" if kind == "run" else f" ({kind})")
            try:
                done = future.result()
            except Exception as e:   # the task's own error, after its retries
                if kind != "run" and run.run_dir in failed_of["run"]:   # told above
                    bar.write(f"{what}: {undone[kind]}, its run failed", file=sys.stderr)
                else:
                    failed_of[kind].append(run.run_dir)
                    bar.write(f"error: {what}: {type(e).__name__}: {e}", file=sys.stderr)
            else:
                done_of[kind][run.run_dir] = done["record"]
                shown = "  ".join(f"{k} {v:.4f}" for k, v in done["record"].items()
                                  if (k == key or kind == "quality") and isinstance(v, float))
                label = "" if kind == "run" else f"{kind} "
                bar.write(f"{run.name} seed {run.seed}: {label}{done['status']}  {shown}",
                          file=sys.stderr if args.json else sys.stdout)
            bar.update()
    return done_of, failed_of


def summary_figure(summary, path):
    """Each configuration's per-seed headline values as points over a box plot; with
    twins, the PyTorch twin's values as crosses beside them."""
    import numpy as np

    from .plots import agg_figure, save_png

    key = summary["metric"]
    configurations = [c for c in summary["configurations"] if key in c["metrics"]]
    values = [c["metrics"][key]["values"] for c in configurations]
    fig = agg_figure(1.6 + 1.4 * len(values), 4)
    ax = fig.add_subplot()
    ax.boxplot(values, widths=0.5, showfliers=False)
    jitter = np.random.default_rng(0)   # spreads a configuration's points sideways
    for i, v in enumerate(values, 1):
        ax.plot(i + jitter.uniform(-0.12, 0.12, len(v)), v, "o", color="C0", alpha=0.7,
                label="scratchvae" if i == 1 else None)
    twins = [(i, c["twin"]["pytorch"]) for i, c in enumerate(configurations, 1) if "twin" in c]
    for n, (i, v) in enumerate(twins):
        ax.plot(i + 0.35 + jitter.uniform(-0.06, 0.06, len(v)), v, "x", color="C1",
                label="PyTorch twin" if n == 0 else None)
    if twins:
        ax.legend(loc="best", fontsize="small")
    ax.set_xticks(range(1, len(values) + 1), [c["name"] for c in configurations],
                  rotation=20, ha="right")
    ax.set_ylabel(key)
    ax.set_title(f"{summary['model']}: {key} per seed")
    return save_png(fig, path)


def sweep(args):
    from .files import atomic_write_text, check_output_dir, write_json
    from .sweep import SweepError, check_out_dir, summarise, summary_markdown

    runs = _runs(args)
    check_output_dir(args.out)
    try:
        check_out_dir(runs, args.out)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        client, cluster = _connect(args)
    except (OSError, TimeoutError) as e:
        print(f"error: the scheduler {args.scheduler} does not answer within "
              f"{CONNECT_TIMEOUT} s ({e}); start one with `dask scheduler` and give the "
              f"address it prints", file=sys.stderr)
        return 1
    try:
        done, failed = _train_runs(client, runs, args)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    results = {run_dir: dict(record, **done["quality"].get(run_dir, {}))   # scores beside
               for run_dir, record in done["run"].items()}                 # the test metrics
    summary = summarise(runs, results, args.model, args.epochs,
                        done["twin"] if args.twin else None)
    write_json(os.path.join(args.out, "summary.json"), summary)
    atomic_write_text(os.path.join(args.out, "summary.md"), summary_markdown(summary))
    if results:
        summary_figure(summary, os.path.join(args.out, "summary.png"))
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(summary_markdown(summary))
        print(f"summary saved to {os.path.join(args.out, 'summary.md')}, summary.json, "
              f"summary.png")
    if failed["run"]:
        print(f"error: {len(failed['run'])} of {len(runs)} runs failed: "
              f"{', '.join(failed['run'])}; run the command again to resume them",
              file=sys.stderr)
    for kind, what, again in (("twin", "twins", "train"), ("quality", "scorings", "score")):
        if failed[kind]:
            print(f"error: the {what} of {len(failed[kind])} of {len(runs)} runs failed: "
                  f"{', '.join(failed[kind])}; run the command again to {again} them again",
                  file=sys.stderr)
    return 1 if any(failed.values()) else 0

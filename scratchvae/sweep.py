"""Sweeps: every (configuration, seed) of a grid trained as one ordinary run
directory, on Dask, and the statistics over seeds.

A sweep's runs live in ``OUT/<configuration>/seed=<s>``, the configuration named
by the values it sets (``beta=4,latent_dim=10``; ``default`` when it sets none).
:func:`run_task` trains one of them in a Dask worker with resume semantics: a
run whose checkpoint has reached the epochs asked for is skipped, one with an
earlier checkpoint resumed, one without a checkpoint started (again). The run
directory's lock and atomic writes (:mod:`scratchvae.files`) keep a run whole
when a worker dies; the scheduler then runs its task again, which resumes.

With ``--twin``, :func:`twin_task` trains each run's PyTorch twin after the run
(:mod:`scratchvae.twins`, imported only then): the same model from the same
initial weights, batches and noise, in RUN/twin; the summary then gives, per
configuration, scratchvae minus PyTorch of the headline metric per seed and its
mean with the same interval.

With ``--classifier``, :func:`quality_task` scores each finished run's samples
with a trained classifier run after it (scratchvae.quality: FD, IS, and for a
conditional model the share of samples labelled as asked), kept in
RUN/quality.json; the summary gives them over seeds as it gives the test metrics.

Statistics over the n seeds of a configuration (:func:`t_interval`): the mean
x̄, the sample standard deviation s (n - 1 in the denominator) and the 95%
Student-t interval x̄ ± t_{0.975, n-1} s / √n. Two configurations that share
seeds are compared by the paired differences d_s = x_s(a) - x_s(b) of their
headline metric, with the same interval over the d_s.
"""
import dataclasses
import itertools
import math
import os

import numpy as np

from . import checkpoints as ckpt
from .config import TrainConfig
from .files import FileError, read_json, write_json
from .rundir import CHECKPOINT, read_config, read_metrics

#: the metric a model's runs are compared by (the others are summarised too)
HEADLINE = {"vq-vae": "test_recon", "classifier": "test_accuracy", "pixelcnn": "test_nll"}
#: the generative-quality metrics of :func:`quality_task`, summarised beside the test metrics
QUALITY_METRICS = ("fd", "is", "cond_accuracy")
#: where :func:`quality_task` keeps a run's scores
QUALITY_FILE = "quality.json"
#: the level of the intervals
LEVEL = 0.95
#: how the intervals are computed, as the summaries state it
METHOD = ("Student t: mean ± t_{0.975, n-1} · s / √n, s the sample standard deviation "
          "(n - 1); paired differences the same over the per-seed differences")
#: the fields a run's saved config.json may hold other values of than the sweep asks
#: (epochs: a run may be continued; what a run records: the data's location and
#: source; a prior records its VQ-VAE's codebook, absolute run directory and data set)
UNCOMPARED = ("epochs", "data_dir", "use_sample", "download", "vq_codebook")
RECORDED_BY_PRIOR = ("vq_codes", "vq_run", "dataset")


class SweepError(ValueError):
    """An output directory holding runs the sweep cannot continue."""


def headline(model):
    """The metric ``model``'s runs are compared by."""
    return HEADLINE.get(model, "test_nelbo")


def configuration_name(settings):
    """The directory name of a configuration: ``name=value`` pairs joined by commas."""
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in settings.items()) or "default"


@dataclasses.dataclass
class Run:
    """One task of a sweep: a configuration's name and settings, a seed, its config."""
    name: str
    settings: dict
    seed: int
    config: TrainConfig
    run_dir: str


def plan(base, grid, seeds, out_dir):
    """The runs of a sweep: every combination of ``grid`` (field -> list of values, in
    order) for every seed, each a copy of ``base`` that TrainConfig checks; their
    directories are absolute, the same for every worker of a cluster that shares
    the file system."""
    runs = []
    names = list(grid)
    for values in itertools.product(*(grid[n] for n in names)):
        settings = dict(zip(names, values))
        name = configuration_name(settings)
        for seed in seeds:
            try:
                config = dataclasses.replace(base, seed=seed, **settings)
            except ValueError as e:
                raise ValueError(f"the configuration {name}: {e}") from None
            runs.append(Run(name, settings, seed, config,
                            os.path.join(os.path.abspath(out_dir), name, f"seed={seed}")))
    return runs


def check_out_dir(runs, out_dir):
    """Raise :class:`SweepError` when ``out_dir`` holds a run (``*/seed=*``) of another
    model than ``runs``, or a run directory of ``runs`` holds a run of another
    configuration than the sweep asks for."""
    import glob

    model = runs[0].config.model
    for path in sorted(glob.glob(os.path.join(glob.escape(out_dir), "*", "seed=*",
                                              "config.json"))):
        saved = read_config(os.path.dirname(path))
        if saved.model != model:
            raise SweepError(f"{out_dir} holds runs of another model: "
                             f"{os.path.dirname(path)} is a run of {saved.model}, not of "
                             f"{model}; give another --out")
    for run in runs:
        if not os.path.exists(os.path.join(run.run_dir, "config.json")):
            continue
        saved = read_config(run.run_dir)
        skip = UNCOMPARED + (RECORDED_BY_PRIOR if saved.model == "pixelcnn" else ())
        differ = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in skip
                  and getattr(saved, f.name) != getattr(run.config, f.name)]
        if differ:
            shown = ", ".join(f"{f} {getattr(saved, f)!r} (asked {getattr(run.config, f)!r})"
                              for f in differ)
            raise SweepError(f"{run.run_dir} holds a run of another configuration: {shown}; "
                             f"give another --out")


def checkpoint_epoch(run_dir):
    """The epoch of ``run_dir``'s checkpoint (0 without one)."""
    path = os.path.join(run_dir, CHECKPOINT)
    return int(ckpt.load_checkpoint(path)[2]["epoch"]) if os.path.exists(path) else 0


def run_task(config, run_dir, threads=1):
    """Train one run of a sweep in this process with ``threads`` engine (Numba)
    threads: skipped when its checkpoint has reached ``config.epochs``, resumed
    from an earlier checkpoint, started without one. Returns the run's directory,
    what was done (``skipped``, ``resumed``, ``trained``) and its metrics record
    of epoch ``config.epochs``."""
    import numba

    from .train import train

    numba.set_num_threads(threads)
    done = checkpoint_epoch(run_dir)
    quiet = lambda *args, **kwargs: None   # noqa: E731
    if done >= config.epochs:
        status = "skipped"
    elif done:
        status = "resumed"
        saved = dataclasses.replace(read_config(run_dir), epochs=config.epochs)
        train(saved, run_dir, resume=True, progress=False, log=quiet)
    else:   # nothing saved: a directory left without a checkpoint starts again
        status = "trained"
        train(config, run_dir, overwrite=True, progress=False, log=quiet)
    records = [r for r in read_metrics(run_dir) if r["epoch"] == config.epochs]
    if not records:
        raise FileError(f"{run_dir}/metrics.jsonl holds no record of epoch {config.epochs}")
    return {"run_dir": run_dir, "status": status, "record": records[0]}


def twin_task(run, epochs, threads=1):
    """Train the PyTorch twin of a finished run (``run``: :func:`run_task`'s result)
    for ``epochs`` with ``threads`` PyTorch threads: skipped when its result holds
    the run's configuration and these epochs, trained (again) otherwise. Returns the run's directory, what was
    done and the twin's record of its last epoch."""
    from .twins.train import train_twin

    quiet = lambda *args, **kwargs: None   # noqa: E731
    return train_twin(run["run_dir"], epochs=epochs, threads=threads, log=quiet)


def quality_task(run, classifier_dir, samples, threads=1):
    """Score a finished run's samples (``run``: :func:`run_task`'s result) under the
    classifier run ``classifier_dir``: FD and IS of ``samples`` samples against its
    test set, and for a conditional model ``cond_accuracy``
    (:func:`scratchvae.quality.run_quality`, seed 0). Kept in RUN/quality.json
    with what they were measured with (the classifier's directory, the number of
    samples, the run's epoch) and measured again only when one of those changed.
    Returns the run's directory, what was done (``skipped``, ``measured``) and
    the scores."""
    import numba

    from .quality import classifier_reference, load_classifier, run_quality, run_sampler
    from .rundir import load_run

    numba.set_num_threads(threads)
    run_dir = run["run_dir"]
    path = os.path.join(run_dir, QUALITY_FILE)
    measured_with = {"classifier": os.path.abspath(classifier_dir), "samples": int(samples),
                     "epoch": checkpoint_epoch(run_dir)}
    try:
        saved = read_json(path) if os.path.exists(path) else {}
    except FileError:   # written atomically, so damaged from outside: measured again
        saved = {}
    if saved.get("measured_with") == measured_with and isinstance(saved.get("scores"), dict):
        return {"run_dir": run_dir, "status": "skipped", "record": saved["scores"]}
    config, model, _ = load_run(run_dir)
    classifier = load_classifier(classifier_dir)
    reference = classifier_reference(classifier_dir, classifier, n=samples,
                                     log=lambda *args, **kwargs: None)
    scores = run_quality(config, run_sampler(config, model), classifier, reference, samples)
    record = {k: float(scores[k]) for k in QUALITY_METRICS if k in scores}
    write_json(path, {"measured_with": measured_with, "scores": record,
                      "fd_floor": float(scores["fd_floor"]),
                      "is_ceiling": float(scores["is_ceiling"])})
    return {"run_dir": run_dir, "status": "measured", "record": record}


# --------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------

def t_interval(values, level=LEVEL):
    """n, mean, sample standard deviation and the Student-t interval of the mean:
    mean ± t_{(1+level)/2, n-1} s / √n (sd and interval None for n < 2)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    n, mean = x.size, float(x.mean())
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "half_width": None, "low": None,
                "high": None}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * sd / math.sqrt(n))
    return {"n": n, "mean": mean, "sd": sd, "half_width": half, "low": mean - half,
            "high": mean + half}


def twin_differences(runs, results, twins, key):
    """Per configuration name, scratchvae minus its PyTorch twin in metric ``key``
    over the seeds where both finished: the seeds, both values, the differences
    d_s = ours_s - torch_s and their :func:`t_interval`. ``results`` and ``twins``:
    run directory -> final record."""
    pairs = {}
    for run in runs:
        ours, theirs = results.get(run.run_dir), twins.get(run.run_dir)
        if ours is None or theirs is None or key not in ours or key not in theirs:
            continue
        p = pairs.setdefault(run.name, {"metric": key, "seeds": [], "scratchvae": [],
                                        "pytorch": []})
        p["seeds"].append(run.seed)
        p["scratchvae"].append(float(ours[key]))
        p["pytorch"].append(float(theirs[key]))
    for p in pairs.values():
        p["differences"] = [a - b for a, b in zip(p["scratchvae"], p["pytorch"])]
        p.update(t_interval(p["differences"]))
    return pairs


def summarise(runs, results, model, epochs, twins=None):
    """The summary of a sweep: per configuration every scalar test metric (and
    :data:`QUALITY_METRICS`) over its seeds, and for each pair of configurations
    sharing seeds the paired difference of the headline metric. ``results``: run
    directory -> its final record (with its quality scores, where measured);
    ``twins`` (with --twin): run directory -> its twin's final record, which adds
    each configuration's ``twin`` entry (:func:`twin_differences`)."""
    key = headline(model)
    configurations = {}
    for run in runs:
        record = results.get(run.run_dir)
        if record is None:
            continue
        c = configurations.setdefault(run.name, {"name": run.name, "settings": run.settings,
                                                 "seeds": [], "values": {}})
        c["seeds"].append(run.seed)
        for name, value in record.items():
            if ((name.startswith("test_") or name in QUALITY_METRICS)
                    and isinstance(value, (int, float))):
                c["values"].setdefault(name, []).append(float(value))
    for c in configurations.values():
        c["metrics"] = {name: {"values": v, **t_interval(v)}
                        for name, v in sorted(c.pop("values").items(),
                                              key=lambda kv: (kv[0] != key, kv[0]))}
    paired = []
    for a, b in itertools.combinations(configurations.values(), 2):
        seeds = [s for s in a["seeds"] if s in b["seeds"]]
        if not seeds or key not in a["metrics"] or key not in b["metrics"]:
            continue
        va = dict(zip(a["seeds"], a["metrics"][key]["values"]))
        vb = dict(zip(b["seeds"], b["metrics"][key]["values"]))
        d = [va[s] - vb[s] for s in seeds]
        paired.append({"a": a["name"], "b": b["name"], "metric": key, "seeds": seeds,
                       "differences": d, **t_interval(d)})
    if twins is not None:
        for name, p in twin_differences(runs, results, twins, key).items():
            configurations[name]["twin"] = p
    return {"model": model, "epochs": epochs, "metric": key, "level": LEVEL,
            "method": METHOD, "configurations": list(configurations.values()),
            "paired": paired, "twin": twins is not None}


def _number(value):
    return "–" if value is None else f"{value:.3f}"


def _interval(s):
    return "–" if s["low"] is None else f"[{s['low']:.3f}, {s['high']:.3f}]"


def _difference(value):
    """A difference that may be tiny (twins agree to many digits): 3 significant digits."""
    return "–" if value is None else f"{value:+.3g}"


def _twin_markdown(summary):
    """The lines of the twins' tables: per seed both values and their difference, per
    configuration the mean difference and its interval."""
    twins = [(c["name"], c["twin"]) for c in summary["configurations"] if "twin" in c]
    if not twins:
        return ["", "PyTorch twins: none finished."]
    lines = ["", f"PyTorch twins (the same initial weights, batches and noise): "
                 f"{summary['metric']}, scratchvae - PyTorch:", "",
             "| configuration | seed | scratchvae | PyTorch | difference |",
             "|---|---|---|---|---|"]
    for name, t in twins:
        for seed, a, b, d in zip(t["seeds"], t["scratchvae"], t["pytorch"], t["differences"]):
            lines.append(f"| {name} | {seed} | {a:.4f} | {b:.4f} | {_difference(d)} |")
    lines += ["", "| configuration | n | mean difference | sd | 95% interval |",
              "|---|---|---|---|---|"]
    for name, t in twins:
        shown = "–" if t["low"] is None else (f"[{_difference(t['low'])}, "
                                              f"{_difference(t['high'])}]")
        sd = "–" if t["sd"] is None else f"{t['sd']:.3g}"
        lines.append(f"| {name} | {t['n']} | {_difference(t['mean'])} | {sd} | {shown} |")
    return lines


def summary_markdown(summary):
    """The markdown of a sweep's summary: one table of every configuration's metrics,
    one of the paired differences, and with twins those of scratchvae - PyTorch."""
    epochs = f"{summary['epochs']} epoch{'s' if summary['epochs'] != 1 else ''}"
    lines = [f"# Sweep: {summary['model']}, {epochs}", "",
             f"Intervals: {summary['level']:.0%}, {summary['method']}.", "",
             "| configuration | metric | n | mean | sd | 95% interval |",
             "|---|---|---|---|---|---|"]
    for c in summary["configurations"]:
        for name, s in c["metrics"].items():
            lines.append(f"| {c['name']} | {name} | {s['n']} | {_number(s['mean'])} | "
                         f"{_number(s['sd'])} | {_interval(s)} |")
    if summary["paired"]:
        lines += ["", f"Paired differences of {summary['metric']} (a - b, over the seeds "
                      f"both ran):", "", "| a | b | n | mean difference | sd | 95% interval |",
                  "|---|---|---|---|---|---|"]
        for p in summary["paired"]:
            lines.append(f"| {p['a']} | {p['b']} | {p['n']} | {_number(p['mean'])} | "
                         f"{_number(p['sd'])} | {_interval(p)} |")
    if summary.get("twin"):
        lines += _twin_markdown(summary)
    return "\n".join(lines) + "\n"

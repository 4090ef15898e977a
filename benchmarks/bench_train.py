"""Training speed (and optionally quality) of a scratchvae model against its
identical PyTorch twin, on the same CPU threads, in one run.

Each measurement runs in a fresh subprocess ("worker"), alternating between
scratchvae and PyTorch for several rounds, so that neither inherits the
other's thread pools or settings (scratchvae runs its kernels and matrix
products on Numba's threads and sets BLAS to one thread; PyTorch has its own
OpenMP pool). The best round of each is reported, and, with two rounds or more,
the epochs' ratio round by round (each round's runs paired): its mean over the
rounds with a 95% interval, and its range. Prints a markdown table and saves it
to benchmarks/results/.

The headline is what a user runs: ``python -m scratchvae train --model M --epochs 2``
in a fresh process, its epoch 2 as its metrics record it (``train_seconds``). Beside
it, the benchmark loop (the same steps with nothing around them) and the PyTorch
twin's loop, each timed on its epoch 2 too, and the command's time over the loop's:
what the command adds.

    python benchmarks/bench_train.py --model mlp-vae
    python benchmarks/bench_train.py --model conv-vae --epochs 10   # + test -ELBO after 10 epochs
    python benchmarks/bench_train.py --model vq-vae --epochs 10 --vq-init uniform --vq-restart 0
    python benchmarks/bench_train.py --model conv-vae --threads 1    # both engines on one thread
    python benchmarks/bench_train.py --model pixelcnn --vq-run runs/vq-vae --conditional

``--threads N`` runs both engines on N threads (scratchvae: Numba's pool and
OpenBLAS, through NUMBA_NUM_THREADS and OPENBLAS_NUM_THREADS in its workers'
environment; PyTorch: ``torch.set_num_threads``) and saves the table with a
``_Nthreads`` suffix. Without it, both use as many threads as scratchvae does
by default (Numba's pool size, the number of cores). One thread separates the
efficiency of each engine's own code from how well its threads cooperate.

For vq-vae, ``--epochs`` reports the test reconstruction BCE, the codes used and
the perplexity, and ``--vq-init`` / ``--vq-restart`` choose the codebook options of
both engines (default: scratchvae's defaults; the PyTorch twin implements the same
initialisations and dead-code restarts, scratchvae/twins/models.py).

For pixelcnn (the gated PixelCNN prior over 7x7 code maps), a step is the
trainer's: ``loss(codes, labels)``, backward, Adam 1e-3 on a batch of 128 code
maps (60,000 of them, with the MNIST training labels). ``--vq-run DIR`` takes the
codes of the training set as encoded by that VQ-VAE run; without it the codes
are uniform in [0, 128) from a seeded generator, as good for timing: no step
depends on the values of the codes. ``--conditional`` times the
class-conditional prior.

Every PyTorch twin steps with its fused Adam (``fused=True``, the same update in
one kernel, PyTorch's fastest on a CPU: scratchvae.twins.fastest_adam); the
table says when the installed PyTorch lacks it and the ordinary Adam runs instead.
For iwae-1l at batch 20 with k samples, see benchmarks/bench_iwae.py.

``--epoch-steps N`` times the first N steps of the epoch and scales the time to
the whole epoch (a prior's epoch is minutes; the table says so); 0 times it all.

``--products`` also times the step's matrix products alone, the floor under
our step: recorded from one step (every ``matmul`` of the linear layers,
operands in their layouts, benchmarks.common.record_products; and for the conv
models every call of the fused conv kernels, whose BLAS calls are replayed chunk
by chunk on columns made beforehand, benchmarks/conv_products.py) and replayed;
and followed by our Adam step (a step cannot take less than either). For
mlp-vae, whose products are all ``torch.mm`` calls in PyTorch too, PyTorch's
products over the same shapes and transposes as well.

``--torch-ftz`` also times the PyTorch twin with ``torch.set_flush_denormal(True)``
(the ``torch-ftz`` kind): subnormal numbers read and made as 0 in every operation,
where scratchvae stores only Adam's subnormal moments as 0 (kernels/adam.py).
Later in training a dead unit's Adam moments turn subnormal, and PyTorch's steps
slow down with them: this row measures by how much.

One worker on its own (prints a JSON line; KIND is ours, torch, torch-ftz, ours-products,
ours-floor, torch-products, ours-quality or torch-quality; N is timed steps, or epochs for the
quality kinds; OPTIONS a JSON object: for the quality kinds the VQ options
{"vq_init": ..., "vq_restart": ...};
for ours and torch {"epoch_steps": ...}, and for pixelcnn also "data" (an .npz
of codes and labels), "num_codes" and "n_classes"):

    python benchmarks/bench_train.py --worker KIND MODEL N [THREADS [SEED [OPTIONS]]]
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from benchmarks.common import mnist_arrays, training_step  # noqa: E402  (the path above)

BATCH = 128
#: the environment as this script found it, for every worker, whatever main imports
#: (scratchvae, for the VQ defaults), so that nothing an import sets reaches a
#: worker; each worker imports PyTorch before anything of scratchvae (worker_main)
WORKER_ENV = dict(os.environ)


def _peak_rss_mb():
    """This process's peak resident memory in MB: Linux's VmHWM, which starts
    afresh at exec (ru_maxrss, the fallback, keeps the parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ours(model_name):
    """scratchvae's ``model_name`` as the benchmark trains it: (model, training step, MNIST
    train arrays, the step's Adam), freed memory retained as the trainer does."""
    from scratchvae.backend import retain_freed_memory
    from scratchvae.models import DEFAULT_LATENT_DIM, build_model
    from scratchvae.optimizers import Adam

    retain_freed_memory()
    (xtr, ytr), _ = mnist_arrays()
    rng = np.random.default_rng(0)
    model = build_model(model_name, latent_dim=DEFAULT_LATENT_DIM[model_name], rng=rng)
    opt = Adam(model.parameters(), lr=1e-3)
    return model, training_step(model, opt, rng), (xtr, ytr), opt


def worker_ours(model_name, steps, options):
    from benchmarks.common import threads_in_use
    from scratchvae import data

    model, step, (xtr, ytr), _ = _ours(model_name)
    return _time(step, data.iterate_batches(xtr, ytr, BATCH, rng=np.random.default_rng(1)),
                 (xtr[:BATCH].copy(), ytr[:BATCH].copy()), steps, model.num_parameters(),
                 threads_in_use(), options.get("epoch_steps", 0), options.get("epoch", 1))


#: the models ``--products`` times: their linear layers' products and (conv models)
#: the fused conv kernels' products (benchmarks/conv_products.py)
PRODUCT_MODELS = ("mlp-vae", "conv-vae", "conv-cvae", "vq-vae")
#: those whose every product is a linear layer's: PyTorch's products are torch.mm calls
TORCH_PRODUCT_MODELS = ("mlp-vae",)


def recorded_products(model_name):
    """The products of one scratchvae training step of ``model_name`` on the first
    batch: the linear layers' matrix products (benchmarks.common.record_products),
    the fused conv kernels' calls (benchmarks.conv_products.record), and the
    step's Adam."""
    from benchmarks import conv_products
    from benchmarks.common import record_products

    _, step, (xtr, ytr), opt = _ours(model_name)
    convs = []

    def one_step():
        convs.extend(conv_products.record(
            lambda: step(xtr[:BATCH].copy(), ytr[:BATCH].copy())))
    return record_products(one_step), convs, opt


def worker_ours_products(model_name, steps, update=False):
    """Our step's products replayed alone (the conv kernels' on columns made
    beforehand); with ``update``, each replay followed by the Adam step (the
    ``ours-floor`` kind)."""
    from benchmarks import conv_products
    from benchmarks.common import replay_products, sample_times, threads_in_use

    calls, convs, opt = recorded_products(model_name)
    linear = replay_products(calls, opt if update else None)
    conv, _ = conv_products.replay(convs)

    def run():
        conv()
        linear()
    times = sample_times(run, steps)
    return {"step_ms": float(np.median(times) * 1e3), "threads": threads_in_use(),
            "products": len(calls) + len(convs), "conv_calls": len(convs)}


def worker_torch_products(model_name, steps, threads):
    """``torch.mm`` over the shapes and transposes of :func:`recorded_products`, read
    in a child process (this one imports PyTorch before anything of scratchvae)."""
    from benchmarks.common import import_torch
    torch = import_torch(threads)
    from benchmarks.common import sample_times, torch_products

    layouts = json.loads(subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--layouts", model_name], check=True,
        stdout=subprocess.PIPE, text=True, env=_worker_env(1)).stdout)
    times = sample_times(torch_products(torch, layouts), steps)
    return {"step_ms": float(np.median(times) * 1e3), "threads": torch.get_num_threads(),
            "products": len(layouts)}


def layouts_main(argv):
    """``--layouts MODEL``: the products of one step as [M, K, N, a^T, b^T] rows."""
    from benchmarks.common import product_layouts
    calls, _, _ = recorded_products(argv[0])
    print(json.dumps(product_layouts(calls)))


def worker_torch(model_name, steps, threads, options):
    from benchmarks.common import import_torch
    torch = import_torch(threads)     # first: before anything of scratchvae
    from scratchvae.twins import fastest_adam
    from scratchvae.twins.models import MODELS
    from scratchvae import data

    torch.manual_seed(0)
    if options.get("flush_denormal") and not torch.set_flush_denormal(True):
        raise RuntimeError("torch.set_flush_denormal: not supported on this CPU")
    (xtr, ytr), _ = mnist_arrays()
    model = MODELS[model_name]()
    opt, adam = fastest_adam(model.parameters())

    def step(xb, yb):
        opt.zero_grad()
        loss, _, _ = model.loss(torch.from_numpy(xb), torch.from_numpy(yb))
        loss.item()
        loss.backward()
        opt.step()
    n_params = sum(p.numel() for p in model.parameters())
    result = _time(step, data.iterate_batches(xtr, ytr, BATCH, rng=np.random.default_rng(1)),
                   (xtr[:BATCH].copy(), ytr[:BATCH].copy()), steps, n_params,
                   torch.get_num_threads(), options.get("epoch_steps", 0),
                   options.get("epoch", 1))
    return dict(result, adam=adam, flush_denormal=bool(options.get("flush_denormal")))


def _prior_data(options):
    """The code maps (N, 7, 7) int64 and labels (N,) int64 of a pixelcnn worker."""
    with np.load(options["data"]) as f:
        return f["codes"], f["labels"]


def worker_ours_prior(steps, options):
    from benchmarks.common import threads_in_use
    from scratchvae import data
    from scratchvae.backend import retain_freed_memory
    from scratchvae.models.pixelcnn import pixelcnn
    from scratchvae.optimizers import Adam

    retain_freed_memory()  # as the trainer does
    codes, labels = _prior_data(options)
    n_classes = options["n_classes"]
    model = pixelcnn(num_codes=options["num_codes"], n_classes=n_classes,
                     rng=np.random.default_rng(0))
    opt = Adam(model.parameters(), lr=1e-3)

    def step(zb, yb):
        opt.zero_grad()
        loss, _ = model.loss(zb, yb if n_classes else None)
        float(loss)
        model.backward()
        opt.step()
    return _time(step, data.iterate_batches(codes, labels, BATCH, rng=np.random.default_rng(1)),
                 (codes[:BATCH].copy(), labels[:BATCH].copy()), steps, model.num_parameters(),
                 threads_in_use(), options.get("epoch_steps", 0))


def worker_torch_prior(steps, threads, options):
    from benchmarks.common import import_torch
    torch = import_torch(threads)     # first: before anything of scratchvae
    from scratchvae.twins import fastest_adam
    from scratchvae.twins.models import PRIORS
    from scratchvae import data

    torch.manual_seed(0)
    codes, labels = _prior_data(options)
    n_classes = options["n_classes"]
    model = PRIORS["pixelcnn"](num_codes=options["num_codes"], n_classes=n_classes)
    opt, adam = fastest_adam(model.parameters())

    def step(zb, yb):
        opt.zero_grad()
        loss, _, _ = model.loss(torch.from_numpy(zb),
                                torch.from_numpy(yb) if n_classes else None)
        loss.item()
        loss.backward()
        opt.step()
    n_params = sum(p.numel() for p in model.parameters())
    result = _time(step, data.iterate_batches(codes, labels, BATCH, rng=np.random.default_rng(1)),
                   (codes[:BATCH].copy(), labels[:BATCH].copy()), steps, n_params,
                   torch.get_num_threads(), options.get("epoch_steps", 0))
    return dict(result, adam=adam)


def _time(step, batches, fixed_batch, steps, n_params, threads, epoch_steps=0, epoch=1):
    """Median step time on a fixed batch, then the time of epoch ``epoch`` (the ones
    before it run untimed): all of it, or its first ``epoch_steps`` steps scaled by
    len(batches) / epoch_steps. Epoch 2 is the `train` command's timed epoch: a
    step's time drifts as training goes on (benchmarks/RESULTS.md, 2026-12-04), so
    both engines and the command are timed on the same one."""
    from benchmarks.common import sample_times

    times = sample_times(lambda: step(*fixed_batch), steps, warmup=10)
    for _ in range(epoch - 1):
        for xb, yb in batches:
            step(xb, yb)
    timed = min(epoch_steps or len(batches), len(batches))
    t0 = time.perf_counter()
    for _, (xb, yb) in zip(range(timed), batches):
        step(xb, yb)
    epoch = (time.perf_counter() - t0) * len(batches) / timed
    return {"step_ms": float(np.median(times) * 1e3), "epoch_s": epoch,
            "n_batches": len(batches), "epoch_steps": timed, "params": int(n_params),
            "peak_rss_mb": _peak_rss_mb(), "threads": int(threads)}


def _twin_options(model_name, options):
    """scratchvae's VQ options -> the PyTorch twin's keyword arguments."""
    if model_name != "vq-vae" or not options:
        return {}
    return {"codebook_init": options["vq_init"], "restart_after": options["vq_restart"]}


def worker_torch_quality(model_name, epochs, threads, seed=0, options=None):
    from benchmarks.common import import_torch
    torch = import_torch(threads)     # first: before anything of scratchvae
    from scratchvae.twins import fastest_adam
    from scratchvae.twins.models import MODELS
    from scratchvae import data

    torch.manual_seed(seed)
    (xtr, ytr), (xte, yte) = mnist_arrays()
    model = MODELS[model_name](**_twin_options(model_name, options))
    opt, _ = fastest_adam(model.parameters())
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        for xb, yb in data.iterate_batches(xtr, ytr, BATCH, rng=rng):
            opt.zero_grad()
            loss, _, _ = model.loss(torch.from_numpy(xb), torch.from_numpy(yb))
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch, "train_seconds": seconds}
        if model_name == "vq-vae":    # test_recon, codes_used, perplexity; no restarts in eval
            record.update(model.eval().test_metrics(xte))
            model.train()
        else:
            with torch.no_grad():     # the test negative ELBO
                total = sum(float(model.loss(torch.from_numpy(xte[i:i + 1000]),
                                             torch.from_numpy(yte[i:i + 1000]))[0]) * 1000
                            for i in range(0, len(xte), 1000))
            record["test_nelbo"] = total / len(xte)
        history.append(record)
        print(json.dumps(history[-1]), file=sys.stderr, flush=True)
    return {"history": history, "peak_rss_mb": _peak_rss_mb()}


def worker_ours_quality(model_name, epochs, seed=0, options=None):
    from scratchvae.config import TrainConfig
    from scratchvae.train import train
    options = options if model_name == "vq-vae" and options else {}
    suffix = "".join(f"-{v}" for v in options.values())
    out = os.path.join("runs", f"bench-{model_name}{suffix}-s{seed}")
    # download="yes": the full MNIST set or an error, never the bundled sample (quality
    # targets are on the full set); overwrite: each benchmark retrains its run
    config = TrainConfig(model=model_name, epochs=epochs, seed=seed, download="yes", **options)
    history = train(config, out, overwrite=True, progress=False,
                    log=lambda *a: print(*a, file=sys.stderr, flush=True))
    return {"history": history, "peak_rss_mb": _peak_rss_mb()}


def _worker_env(threads=None):
    """WORKER_ENV, and with ``threads``, scratchvae's pools set to that many threads
    (read by Numba and OpenBLAS when they load; PyTorch workers set theirs)."""
    if threads is None:
        return WORKER_ENV
    return dict(WORKER_ENV, NUMBA_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))


def _run_worker(args, threads=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + [str(a) for a in args]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True,
                         env=_worker_env(threads)).stdout
    return json.loads(out.strip().splitlines()[-1])


#: epochs of the `train` command's run in a speed round; its last epoch is timed
TRAIN_EPOCHS = 2


def run_train_command(model_name, threads, directory, extra=()):
    """Time what a user runs: ``python -m scratchvae train --model M --epochs 2`` in a
    fresh process (progress bar on, sent to /dev/null), on ``threads`` threads when
    given. Returns ``{"epoch_s", "threads", "blas"}``: the ``train_seconds`` its
    metrics.jsonl records for epoch 2 (training alone: batches, noise, steps, loss
    reads, bar; epoch 1 also compiles what Numba has not cached), and the threads
    and BLAS its header names. ``extra``: more arguments of the command (tests)."""
    out = os.path.join(directory, f"train-{model_name}")
    cmd = [sys.executable, "-m", "scratchvae", "train", "--model", model_name,
           "--epochs", str(TRAIN_EPOCHS), "--seed", "0", "--download", "--overwrite",
           "--out", out, *extra]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env=_worker_env(threads), cwd=os.path.join(HERE, ".."))
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stdout}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        last = [json.loads(line) for line in f if line.strip()][-1]
    found = re.search(r"\((\d+) threads?, BLAS (.*)\)", proc.stdout)
    return {"epoch_s": last["train_seconds"],
            "threads": int(found.group(1)) if found else None,
            "blas": found.group(2) if found else "?"}


def _quality_row(model_name, name, res):
    """One row of the quality table from a quality worker's result."""
    h = res["history"]
    last, mean_epoch = h[-1], np.mean([e["train_seconds"] for e in h])
    if model_name == "vq-vae":
        metric = [f"{last['test_recon']:.2f}", str(last["codes_used"]),
                  f"{last['perplexity']:.1f}"]
    else:
        metric = [f"{last['test_nelbo']:.2f}"]
    return [name, *metric, f"{mean_epoch:.2f}", f"{res['peak_rss_mb']:.0f}"]


def round_ratio_row(results, a, b, a_name, b_name):
    """The table row of the epochs of kinds ``a`` over ``b`` round by round (the two
    runs of one round are minutes apart, the rounds further): the mean ratio with
    its 95% interval (benchmarks.common.paired_summary) and the rounds' range."""
    from benchmarks.common import paired_summary
    pairs = [(x["epoch_s"], y["epoch_s"]) for x, y in zip(results[a], results[b])]
    mean, (lo, hi) = paired_summary(pairs)
    ratios = [x / y for x, y in pairs]
    return [f"ratio {a_name} / {b_name}, round by round: mean [95% interval] "
            f"({len(pairs)} rounds)", "", "", f"{mean:.2f}x [{lo:.2f}, {hi:.2f}]",
            f"{min(ratios):.2f}-{max(ratios):.2f}x", ""]


def round_table(results, names):
    """(header, rows) of every round's epochs (s) of each kind in ``names`` that ran
    ({kind: column name}), then each kind's ratio to "torch" in that round: the
    numbers behind the round-by-round rows, kept so that runs can be pooled."""
    kinds = [k for k in names if k in results]
    ratios = [k for k in kinds if k != "torch" and "torch" in results]
    header = (["round"] + [f"{names[k]} (s)" for k in kinds]
              + [f"{names[k]} / {names['torch']}" for k in ratios])
    rows = []
    for r in range(len(results[kinds[0]])):
        epochs = {k: results[k][r]["epoch_s"] for k in kinds}
        rows.append([str(r + 1)] + [f"{epochs[k]:.2f}" for k in kinds]
                    + [f"{epochs[k] / epochs['torch']:.3f}" for k in ratios])
    return header, rows


def write_prior_data(path, vq_run=None):
    """Save the code maps of the 60,000 training images and their labels to
    ``path`` (.npz, both int64) for the pixelcnn workers; returns the number of codes K.

    With ``vq_run`` the codes are that VQ-VAE run's encoding of its training set;
    without, uniform in [0, 128) from a generator seeded 0 (the step time does
    not depend on the values), with the MNIST training labels.
    """
    if vq_run is None:
        (_, labels), _ = mnist_arrays()
        codes, num_codes = np.random.default_rng(0).integers(0, 128, (len(labels), 7, 7)), 128
    else:
        from scratchvae import data, files
        from scratchvae.rundir import load_data, load_run
        try:
            config, vq, _ = load_run(vq_run)
            if config.model != "vq-vae":
                raise SystemExit(f"error: --vq-run {vq_run}: expected a vq-vae run, "
                                 f"got a {config.model} run")
            _, (x, labels), _ = load_data(config, log=lambda *a, **k: None, progress=False)
        except (files.FileError, data.DataNotFoundError, OSError) as e:
            raise SystemExit(f"error: --vq-run {vq_run}: {e}") from None
        codes = np.concatenate([np.asarray(vq.codes(x[i:i + 1000]))
                                for i in range(0, len(x), 1000)])
        num_codes = vq.quantizer.num_codes
    np.savez(path, codes=codes.astype(np.int64), labels=np.asarray(labels).astype(np.int64))
    return int(num_codes)


def worker_main(argv):
    """``--worker KIND MODEL N [THREADS [SEED [OPTIONS]]]``: one measurement, printed
    as a JSON line. Nothing of scratchvae is imported before the worker's own
    imports, so that a PyTorch worker imports PyTorch first."""
    kind, model, n = argv[0], argv[1], int(argv[2])
    threads = int(argv[3]) if len(argv) > 3 else 1
    seed = int(argv[4]) if len(argv) > 4 else 0   # quality runs only
    options = json.loads(argv[5]) if len(argv) > 5 else {}
    prior = model == "pixelcnn"
    result = {"ours": lambda: (worker_ours_prior(n, options) if prior
                               else worker_ours(model, n, options)),
              "torch": lambda: (worker_torch_prior(n, threads, options) if prior
                                else worker_torch(model, n, threads, options)),
              "torch-ftz": lambda: worker_torch(model, n, threads,
                                                dict(options, flush_denormal=True)),
              "ours-products": lambda: worker_ours_products(model, n),
              "ours-floor": lambda: worker_ours_products(model, n, update=True),
              "torch-products": lambda: worker_torch_products(model, n, threads),
              "ours-quality": lambda: worker_ours_quality(model, n, seed, options),
              "torch-quality": lambda: worker_torch_quality(model, n, threads, seed,
                                                            options)}[kind]()
    print(json.dumps(result))


def main():
    from benchmarks.common import cpu_info, save_table, threads_in_use
    from scratchvae.models.vq_vae import CODEBOOK_INITS, DEFAULTS as VQ

    parser = argparse.ArgumentParser(description="scratchvae vs PyTorch training speed")
    parser.add_argument("--model", default="mlp-vae",
                        choices=["mlp-vae", "conv-vae", "conv-cvae", "vq-vae", "pixelcnn"])
    parser.add_argument("--steps", type=int, default=100, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="speed rounds (0: quality only)")
    parser.add_argument("--epochs", type=int, default=0,
                        help="also train N epochs of the full protocol with each and report "
                             "test -ELBO (vq-vae: test recon BCE, codes used, perplexity)")
    parser.add_argument("--vq-init", choices=CODEBOOK_INITS, default=VQ["codebook_init"],
                        help="vq-vae quality runs: codebook initialisation of both engines")
    parser.add_argument("--vq-restart", type=int, default=VQ["restart_after"], metavar="R",
                        help="vq-vae quality runs: restart codes unused R steps (0: off)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="run both engines on N threads (default: as many as "
                             "scratchvae uses, one per core)")
    parser.add_argument("--epoch-steps", type=int, default=0, metavar="N",
                        help="time the first N steps of the epoch and scale to the whole "
                             "epoch (default 0: time the whole epoch)")
    parser.add_argument("--vq-run", metavar="DIR",
                        help="pixelcnn: the codes of the training set encoded by this VQ-VAE "
                             "run (default: uniform random codes)")
    parser.add_argument("--conditional", action="store_true",
                        help="pixelcnn: the class-conditional prior (MNIST labels)")
    parser.add_argument("--products", action="store_true",
                        help="also time our step's products alone, and with Adam (a floor; "
                             "mlp-vae: PyTorch's too)")
    parser.add_argument("--torch-ftz", action="store_true",
                        help="also time PyTorch with torch.set_flush_denormal(True)")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    if args.torch_ftz and (args.no_torch or args.model == "pixelcnn"):
        parser.error("--torch-ftz: an option of the VAE models' PyTorch runs")
    if args.products and args.model not in PRODUCT_MODELS:
        parser.error(f"--products times {', '.join(PRODUCT_MODELS)}, not {args.model}")
    prior = args.model == "pixelcnn"
    if not prior and (args.vq_run or args.conditional):
        parser.error("--vq-run and --conditional are options of --model pixelcnn")
    if prior and args.epochs:
        parser.error("--epochs: no quality runs for pixelcnn here; train it with "
                     "`python -m scratchvae train --model pixelcnn --vq-run DIR`")
    if args.epoch_steps < 0:
        parser.error(f"--epoch-steps must be >= 0, got {args.epoch_steps}")
    if args.rounds < 0 or args.epochs < 0 or args.vq_restart < 0:
        parser.error("--rounds, --epochs and --vq-restart must be >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if not args.rounds and not args.epochs:
        parser.error("nothing to measure: --rounds 0 needs --epochs N")

    try:
        import torch  # noqa: F401
        have_torch = not args.no_torch
    except ImportError:
        print("PyTorch is not installed: comparison columns are skipped")
        have_torch = False
    threads = args.threads or threads_in_use()
    suffix = f"_{args.threads}threads" if args.threads else ""
    kinds = ["ours", "torch"] if have_torch else ["ours"]
    if have_torch and args.torch_ftz:
        kinds.append("torch-ftz")
    if not prior and not args.epoch_steps:   # the train command too, as users run it
        kinds.insert(0, "train")
    products = ["ours-products", "ours-floor"] + (
        ["torch-products"] if have_torch and args.model in TORCH_PRODUCT_MODELS else [])
    if args.products:
        kinds += products
    names = {"ours": "scratchvae benchmark loop", "torch": "PyTorch"}
    if have_torch:
        import torch
        names["torch"] = f"PyTorch {torch.__version__}"
        names["torch-ftz"] = f"PyTorch {torch.__version__}, flush_denormal"
    header, rows, notes = None, [], []
    table = args.model + ("-conditional" if args.conditional else "")
    if args.rounds:
        # the timed epoch: the `train` command's (its epoch 2), or a prior's first
        options = {"epoch_steps": args.epoch_steps,
                   "epoch": 1 if prior or args.epoch_steps else TRAIN_EPOCHS}
        results = {k: [] for k in kinds}
        with tempfile.TemporaryDirectory() as tmp:
            if prior:
                options["data"] = os.path.join(tmp, "codes.npz")
                options["num_codes"] = write_prior_data(options["data"], args.vq_run)
                options["n_classes"] = 10 if args.conditional else 0
            for r in range(args.rounds):
                for k in (kinds if r % 2 == 0 else kinds[::-1]):   # alternate who starts
                    if k == "train":
                        res = run_train_command(args.model, args.threads, tmp)
                        what = f"train command: epoch {TRAIN_EPOCHS} {res['epoch_s']:.2f} s"
                    elif k in products:
                        res = _run_worker([k, args.model, args.steps, threads], args.threads)
                        what = f"{k}: {res['products']} products {res['step_ms']:.2f} ms"
                    else:
                        res = _run_worker([k, args.model, args.steps, threads, 0,
                                           json.dumps(options)], args.threads)
                        what = f"{k}: step {res['step_ms']:.2f} ms, epoch {res['epoch_s']:.2f} s"
                    if res["threads"] != threads:
                        raise RuntimeError(f"the {k} run used {res['threads']} threads, "
                                           f"expected {threads}")
                    results[k].append(res)
                    print(f"round {r + 1} {what}", flush=True)
        best = {k: {"step_ms": min(r["step_ms"] for r in v),
                    "epoch_s": min(r["epoch_s"] for r in v),
                    "params": v[0]["params"], "peak_rss_mb": max(r["peak_rss_mb"] for r in v),
                    "n_batches": v[0]["n_batches"]}
                for k, v in results.items() if k != "train" and k not in products}

        def spread(kind):            # the slowest and fastest round: the spread between processes
            epochs = sorted(r["epoch_s"] for r in results[kind])
            return f"{epochs[0]:.2f}-{epochs[-1]:.2f}"

        rows = []
        if "train" in results:       # the headline: what `python -m scratchvae train` takes
            train_s = min(r["epoch_s"] for r in results["train"])
            rows.append([f"scratchvae `train` (epoch {TRAIN_EPOCHS} of {TRAIN_EPOCHS})",
                         f"{best['ours']['params']:,}", "", f"{train_s:.2f}", spread("train"),
                         ""])
        rows += [[names[k], f"{b['params']:,}", f"{b['step_ms']:.2f}", f"{b['epoch_s']:.2f}",
                  spread(k), f"{b['peak_rss_mb']:.0f}"] for k, b in best.items()]
        for k, which in (("torch", ""), ("torch-ftz", ", flush_denormal")):
            if k not in best:
                continue
            o, t = best["ours"], best[k]
            if "train" in results:
                rows.append([f"ratio scratchvae `train` / PyTorch{which}", "", "",
                             f"{train_s / t['epoch_s']:.2f}x", "", ""])
            rows.append([f"ratio {names['ours']} / PyTorch{which}", "",
                         f"{o['step_ms'] / t['step_ms']:.2f}x",
                         f"{o['epoch_s'] / t['epoch_s']:.2f}x", "", ""])
            for ours in ("train", "ours"):
                if ours in results and args.rounds > 1:
                    rows.append(round_ratio_row(results, ours, k,
                                                "`train`" if ours == "train" else "loop",
                                                f"PyTorch{which}"))
        if "train" in results:
            rows.append(["ratio `train` / benchmark loop", "", "",
                         f"{train_s / best['ours']['epoch_s']:.2f}x", "", ""])
        for k, who, what in (("ours-products", "scratchvae", "products alone"),
                             ("ours-floor", "scratchvae", "products + Adam alone"),
                             ("torch-products", "PyTorch", "products alone")):
            if k in results:         # the floor under each step: its products (and Adam) alone
                ms = min(r["step_ms"] for r in results[k])
                convs = results[k][0].get("conv_calls", 0)
                rows.append([f"{who}'s matrix {what} ({results[k][0]['products']} "
                             f"products per step"
                             + (f", {convs} of them the convolutions', on columns made "
                                f"beforehand" if convs else "") + ")",
                             "", f"{ms:.2f}", "", "", ""])
                if have_torch:
                    rows.append([f"ratio {who}'s {what} / PyTorch's step", "",
                                 f"{ms / best['torch']['step_ms']:.2f}x", "", "", ""])
        n_batches = best["ours"]["n_batches"]
        header = ["implementation", "parameters", "median step (ms)",
                  f"epoch, {n_batches} steps (s)", "epoch, range over rounds (s)", "peak RSS (MB)"]
        notes = [f"{cpu_info()}; {threads} threads for both; batch {BATCH}; float32; MNIST "
                 f"train set; best of {args.rounds} rounds, each in a fresh process; the epoch "
                 f"is the training loop alone (shuffled batches, no evaluation)"
                 + (f", epoch {options['epoch']} of each engine's run (after the step "
                    f"timings and {options['epoch'] - 1} untimed epoch)."
                    if options["epoch"] > 1 else ".")]
        if "train" in results:
            notes.append(f"scratchvae `train`: `python -m scratchvae train --model {args.model} "
                         f"--epochs {TRAIN_EPOCHS}` (progress bar on), the `train_seconds` its "
                         f"metrics record for epoch {TRAIN_EPOCHS}: the headline, what a user "
                         f"runs. The benchmark loop: the same steps without the command "
                         f"around them. "
                         f"BLAS: {results['train'][0]['blas']}.")
        timed = results["ours"][0]["epoch_steps"]
        if timed < n_batches:
            notes.append(f"Epoch times: the first {timed} steps of the epoch, timed and scaled "
                         f"by {n_batches}/{timed}.")
        if have_torch:
            notes.append(f"PyTorch's Adam: {results['torch'][0]['adam']}.")
            if "torch-ftz" in results:
                notes.append("PyTorch, flush_denormal: the same twin with "
                             "`torch.set_flush_denormal(True)` (subnormal inputs read as 0, "
                             "subnormal results made 0, in every operation; scratchvae stores "
                             "only Adam's subnormal moments as 0).")
        if prior:
            codes = (f"the codes of VQ-VAE run {args.vq_run}" if args.vq_run
                     else "uniform random codes (seed 0)")
            notes.append(f"pixelcnn{' (class-conditional)' if args.conditional else ''}: "
                         f"7x7 maps of {codes}, {options['num_codes']} codes; step = "
                         f"loss(codes, labels), backward, Adam 1e-3.")
    extra = []
    if args.rounds > 1:              # every round's epochs, for pooling runs later
        header_r, rows_r = round_table(results, {"train": "`train`", "ours": "loop",
                                                 "torch": "PyTorch",
                                                 "torch-ftz": "PyTorch, flush_denormal"})
        extra.append((f"{table}: epochs round by round", header_r, rows_r))
    if args.epochs:
        vq = args.model == "vq-vae"
        options = {"vq_init": args.vq_init, "vq_restart": args.vq_restart} if vq else {}
        qrows = []
        for k in [k for k in kinds if k in ("ours", "torch")]:
            res = _run_worker([f"{k}-quality", args.model, args.epochs, threads, 0,
                               json.dumps(options)], args.threads)
            qrows.append(_quality_row(args.model, names[k], res))
            print(f"{k}: after {args.epochs} epochs {qrows[-1][1:-2]}", flush=True)
        metric = (["test recon BCE (nats)", "codes used", "perplexity"] if vq
                  else ["test -ELBO (nats)"])
        what = (f"codebook init {args.vq_init}, restarts "
                f"{'after ' + str(args.vq_restart) + ' unused steps' if args.vq_restart else 'off'}, "
                if vq else "")
        extra.append((f"{args.model}: test metrics after {args.epochs} epochs "
                      f"({what}batch 128, Adam 1e-3, seed 0; each engine draws its own "
                      f"weights, batch order and noise: independent draws, not paired runs)",
                      ["implementation", *metric, "mean epoch (s)", "peak RSS (MB)"], qrows))
    if args.rounds:
        save_table(os.path.join(HERE, "results", f"train_{table}{suffix}.md"),
                   f"{table}: training speed", header, rows, notes, extra=extra)
    else:                 # quality only: its own file, so the speed table is kept
        name = f"quality_{args.model}" + (f"_{args.vq_init}-r{args.vq_restart}" if
                                          args.model == "vq-vae" else "") + suffix + ".md"
        save_table(os.path.join(HERE, "results", name), *extra[0],
                   notes=[f"{cpu_info()}; {threads} threads for both; MNIST."])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker_main(sys.argv[2:])
    elif sys.argv[1:2] == ["--layouts"]:
        layouts_main(sys.argv[2:])
    else:
        main()

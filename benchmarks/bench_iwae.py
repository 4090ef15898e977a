"""Training step of iwae-1l at Burda et al.'s batch 20 with k samples, against its
PyTorch twin (scratchvae/twins/models.py, the same model and objective), in one
run: for each thread count and each k, rounds of fresh worker processes that
alternate between the engines, the best round's median step of each reported.
Prints a markdown table and saves it (and its JSON) under benchmarks/results/.

    python benchmarks/bench_iwae.py                          # k = 1, 5, 50; 1 and 2 threads
    python benchmarks/bench_iwae.py --k 5 --threads 1 --compile
    python benchmarks/bench_iwae.py --smoke --out /tmp/bench  # a few steps: the script runs

A step is the trainer's: loss on a batch of 20 binarised MNIST images (the bundled
sample's first 20; the time does not depend on the pixels) with fresh noise, the
backward, Adam (lr 1e-3, eps 1e-4; PyTorch's fused Adam, its fastest CPU
configuration with the same math: scratchvae.twins.fastest_adam). ``--compile``
also times the twin's loss under ``torch.compile`` (a third engine; a failed
compilation is reported in the table, not raised). The targets of issue 19: our
step <= 0.6x PyTorch eager for k = 1 and 5, <= 1.0x for k = 50.

``--products`` also times the step's matrix products alone, as a floor under
each engine's step: scratchvae's are recorded from one of its steps (every call
of the linear layers' ``kernels.gemm.matmul``, with its operands in their
layouts, ``out=`` included) and replayed back to back; PyTorch's are the same
products by ``torch.mm`` on operands of the same shapes and transposes. A step
cannot take less than its products, so where ours alone exceed 0.6x PyTorch's
step, that target needs a faster BLAS than this machine offers the engine. A
third column adds our Adam step to the replayed products (over the gradients the
recorded step left): a step cannot take less than that either.

Threads as in bench_train.py: scratchvae's pools through NUMBA_NUM_THREADS and
OPENBLAS_NUM_THREADS in its workers' environment, PyTorch's through
``torch.set_num_threads``; each worker a fresh process, PyTorch imported first.
One worker on its own (prints a JSON line; KIND is ours, torch, torch-compile,
ours-products, ours-floor or torch-products):

    python benchmarks/bench_iwae.py --worker KIND K STEPS THREADS OPTIONS
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from benchmarks.bench_train import _peak_rss_mb, _worker_env  # noqa: E402  (the path above)

BATCH = 20
LR, ADAM_EPS = 1e-3, 1e-4
#: the largest ratio scratchvae / PyTorch eager each k should reach (issue 19)
TARGETS = {1: 0.6, 5: 0.6, 50: 1.0}
KINDS = {"ours": "scratchvae", "torch": "PyTorch eager", "torch-compile": "PyTorch compiled",
         "ours-products": "scratchvae's products alone",
         "ours-floor": "scratchvae's products + Adam alone",
         "torch-products": "PyTorch's products alone"}


def batch():
    """20 binarised images (N, 1, 28, 28) float32: the bundled sample's first 20."""
    from scratchvae import data
    ds = data.load_sample("mnist")
    x = data.images_to_float(ds.train_images[:BATCH])
    return (np.random.default_rng(1).random(x.shape) < x).astype(np.float32)


def _ours(k, options):
    """scratchvae's iwae-1l with k samples: (the trainer's step on the fixed batch, its Adam)."""
    from scratchvae.backend import retain_freed_memory
    from scratchvae.models import build_model
    from scratchvae.optimizers import Adam

    retain_freed_memory()  # as the trainer does
    rng = np.random.default_rng(0)
    objective = options["objective"]   # the builder's default, elbo, is not passed
    model = build_model("iwae-1l", rng=rng, n_samples=k,
                        **({} if objective == "elbo" else {"objective": objective}))
    opt = Adam(model.parameters(), lr=LR, eps=ADAM_EPS)
    x = batch()

    def step():
        opt.zero_grad()
        loss, _ = model.loss(x, rng=rng, check_inputs=False)   # as train() runs it
        float(loss)
        model.backward()
        opt.step()
    return step, opt


def worker_ours(k, steps, options):
    from benchmarks.common import sample_times, threads_in_use

    step, _ = _ours(k, options)
    times = sample_times(step, steps, warmup=options["warmup"])
    return {"step_ms": float(np.median(times) * 1e3), "threads": threads_in_use(),
            "peak_rss_mb": _peak_rss_mb()}


def recorded_products(k, options):
    """The matrix products of one scratchvae step of iwae-1l
    (benchmarks.common.record_products), and the step's Adam."""
    from benchmarks.common import record_products

    step, opt = _ours(k, options)
    return record_products(step), opt


def worker_ours_products(k, steps, options, update=False):
    """Our step's products replayed alone; with ``update``, each replay followed by
    the Adam step (the ``ours-floor`` kind)."""
    from benchmarks.common import replay_products, sample_times, threads_in_use

    calls, opt = recorded_products(k, options)
    run = replay_products(calls, opt if update else None)
    times = sample_times(run, steps, warmup=options["warmup"])
    return {"step_ms": float(np.median(times) * 1e3), "threads": threads_in_use(),
            "products": len(calls),
            "shapes": [f"{a.shape[0]}x{a.shape[1]}x{b.shape[1]}" for a, b, _ in calls]}


def worker_torch_products(k, steps, threads, options):
    """``torch.mm`` over the shapes and transposes of :func:`recorded_products`, which
    are read in a child process (this one must not import scratchvae: bench_train)."""
    from benchmarks.common import import_torch
    torch = import_torch(threads)
    from benchmarks.common import sample_times, torch_products

    layouts = json.loads(subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--layouts", str(k), json.dumps(options)],
        check=True, stdout=subprocess.PIPE, text=True, env=_worker_env(1)).stdout)
    times = sample_times(torch_products(torch, layouts), steps, warmup=options["warmup"])
    return {"step_ms": float(np.median(times) * 1e3), "threads": torch.get_num_threads(),
            "products": len(layouts)}


def layouts_main(argv):
    """``--layouts K OPTIONS``: the products of one step as [M, K, N, a^T, b^T] rows."""
    from benchmarks.common import product_layouts
    calls, _ = recorded_products(int(argv[0]), json.loads(argv[1]))
    print(json.dumps(product_layouts(calls)))


def worker_torch(k, steps, threads, options, compiled):
    from benchmarks.common import import_torch
    torch = import_torch(threads)     # first: before anything of scratchvae
    from benchmarks.common import sample_times
    from scratchvae.twins import fastest_adam
    from scratchvae.twins.models import MODELS

    torch.manual_seed(0)
    model = MODELS["iwae-1l"](objective=options["objective"], n_samples=k)
    opt, adam = fastest_adam(model.parameters(), lr=LR, eps=ADAM_EPS)
    x = torch.from_numpy(batch())
    loss_of = lambda xb: model.loss(xb)[0]   # noqa: E731
    if compiled:
        try:
            loss_of = torch.compile(loss_of)
            loss_of(x).backward()              # compiles here, or fails here
        except Exception as e:                 # noqa: BLE001  (reported in the table)
            return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}",
                    "threads": torch.get_num_threads()}

    def step():
        opt.zero_grad()
        loss = loss_of(x)
        loss.item()
        loss.backward()
        opt.step()
    times = sample_times(step, steps, warmup=options["warmup"])
    return {"step_ms": float(np.median(times) * 1e3), "threads": torch.get_num_threads(),
            "peak_rss_mb": _peak_rss_mb(), "adam": adam}


def worker_main(argv):
    """``--worker KIND K STEPS THREADS OPTIONS``: one measurement, a JSON line."""
    kind, k, steps, threads = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    options = json.loads(argv[4])
    if kind == "ours":
        result = worker_ours(k, steps, options)
    elif kind in ("ours-products", "ours-floor"):
        result = worker_ours_products(k, steps, options, update=kind == "ours-floor")
    elif kind == "torch-products":
        result = worker_torch_products(k, steps, threads, options)
    else:
        result = worker_torch(k, steps, threads, options, compiled=kind == "torch-compile")
    print(json.dumps(result))


def _run_worker(kind, k, steps, threads, options):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, str(k), str(steps),
           str(threads), json.dumps(options)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True,
                         env=_worker_env(threads)).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(ks, thread_counts, kinds, steps, rounds, options, log=print):
    """{(threads, k): {kind: best result}}: each round runs every kind once, in an
    order that alternates between rounds; the best (lowest) median step is kept."""
    best = {}
    for threads in thread_counts:
        for k in ks:
            cell = {}
            for r in range(rounds):
                for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                    res = _run_worker(kind, k, steps, threads, options)
                    if "error" not in res and res["threads"] != threads:
                        raise RuntimeError(f"the {kind} worker ran on {res['threads']} "
                                           f"threads, expected {threads}")
                    log(f"{threads} threads, k = {k}, round {r + 1}, {kind}: "
                        + (res["error"] if "error" in res else f"{res['step_ms']:.2f} ms"),
                        flush=True)
                    old = cell.get(kind)
                    if old is None or "error" in old or (
                            "error" not in res and res["step_ms"] < old["step_ms"]):
                        cell[kind] = res
            best[(threads, k)] = cell
    return best


def table_rows(best, kinds):
    """Rows: threads, k, each engine's ms, the ratios to PyTorch eager, the target."""
    rows = []
    for (threads, k), cell in best.items():
        def ms(kind):
            res = cell[kind]
            return "failed" if "error" in res else f"{res['step_ms']:.2f}"
        row = [threads, k] + [ms(kind) for kind in kinds]
        eager = cell.get("torch")
        for kind in kinds:
            if kind != "torch" and eager is not None:
                res = cell[kind]
                row.append("" if "error" in res or "error" in eager
                           else f"{res['step_ms'] / eager['step_ms']:.2f}x")
        if eager is not None:
            row.append(f"<= {TARGETS[k]:.1f}x" if k in TARGETS else "")
        rows.append(row)
    return rows


def main(argv=None):
    from benchmarks.common import cpu_info, save_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 5, 50], metavar="K",
                        help="samples per image (default 1 5 50)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], metavar="N",
                        help="thread counts of both engines (default 1 2)")
    parser.add_argument("--objective", choices=["elbo", "iwae", "dreg"], default="iwae",
                        help="the training objective of both (default iwae)")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per worker")
    parser.add_argument("--rounds", type=int, default=3, help="workers per engine and cell")
    parser.add_argument("--compile", action="store_true",
                        help="also time the twin's loss under torch.compile")
    parser.add_argument("--no-torch", action="store_true", help="time scratchvae alone")
    parser.add_argument("--products", action="store_true",
                        help="also time each engine's matrix products alone (a floor)")
    parser.add_argument("--smoke", action="store_true",
                        help="3 steps, 1 round, 1 warm-up step: whether the script runs")
    parser.add_argument("--out", default=None, metavar="PATH",
                        help="the table: PATH.md and PATH.json (default benchmarks/results/"
                             "train_iwae-1l_b20_OBJECTIVE)")
    args = parser.parse_args(argv)
    if min(args.k) < 1 or min(args.threads) < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--k, --threads, --steps and --rounds take numbers >= 1")
    steps, rounds, warmup = (3, 1, 1) if args.smoke else (args.steps, args.rounds, 10)
    kinds = ["ours"] if args.no_torch else ["ours", "torch"] + (
        ["torch-compile"] if args.compile else [])
    if args.products:
        kinds += ["ours-products", "ours-floor"] + ([] if args.no_torch else ["torch-products"])
    options = {"objective": args.objective, "warmup": warmup}
    best = measure(args.k, args.threads, kinds, steps, rounds, options)

    header = ["threads", "k"] + [f"{KINDS[kind]} (ms)" for kind in kinds]
    if "torch" in kinds:
        header += [f"{KINDS[kind]} / PyTorch eager" for kind in kinds if kind != "torch"]
        header.append("target")
    adams = {res.get("adam") for cell in best.values() for res in cell.values()} - {None}
    notes = [f"{cpu_info()}; iwae-1l, objective {args.objective}, batch {BATCH}, float32; "
             f"median step (loss, backward, Adam lr {LR:g} eps {ADAM_EPS:g}) over {steps} "
             f"steps after {warmup} warm-up steps, best of {rounds} rounds, each engine in a "
             f"fresh process, the engines alternating."]
    if adams:
        notes.append(f"PyTorch's Adam: {', '.join(sorted(adams))}.")
    if args.smoke:
        notes.append("Smoke run (--smoke): a few steps, not a measurement.")
    base = args.out or os.path.join(HERE, "results", f"train_iwae-1l_b20_{args.objective}")
    save_table(base + ".md", f"iwae-1l at batch {BATCH}: training step", header,
               table_rows(best, kinds), notes)
    with open(base + ".json", "w") as f:
        json.dump([{"threads": t, "k": k, **{kind: res for kind, res in cell.items()}}
                   for (t, k), cell in best.items()], f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker_main(sys.argv[2:])
    elif sys.argv[1:2] == ["--layouts"]:
        layouts_main(sys.argv[2:])
    else:
        sys.exit(main())

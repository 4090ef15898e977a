"""Training speed (and optionally quality) of a scratchvae model against its
identical PyTorch twin, on the same CPU threads, in one run.

Each measurement runs in a fresh subprocess ("worker"), alternating between
scratchvae and PyTorch for several rounds, so that neither inherits the
other's thread pools or environment (scratchvae sets OMP_WAIT_POLICY=PASSIVE
for its Numba threads; PyTorch keeps its defaults). The best round of each
is reported. Prints a markdown table and saves it to benchmarks/results/.

    python benchmarks/bench_train.py --model mlp-vae
    python benchmarks/bench_train.py --model conv-vae --epochs 10   # + test -ELBO after 10 epochs

One worker on its own (prints a JSON line; KIND is ours, torch, ours-quality or
torch-quality; N is timed steps, or epochs for the quality kinds):

    python benchmarks/bench_train.py --worker KIND MODEL N [THREADS [SEED]]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from benchmarks.common import mnist_arrays  # noqa: E402  (needs the path above)

BATCH = 128


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_ours(model_name, steps):
    from scratchvae import data
    from scratchvae.backend import retain_freed_memory
    from scratchvae.models import DEFAULT_LATENT_DIM, build_model
    from scratchvae.optimizers import Adam

    retain_freed_memory()  # as the trainer does
    (xtr, ytr), _ = mnist_arrays()
    rng = np.random.default_rng(0)
    model = build_model(model_name, latent_dim=DEFAULT_LATENT_DIM[model_name], rng=rng)
    opt = Adam(model.parameters(), lr=1e-3)

    def step(xb, yb):
        opt.zero_grad()
        loss, _ = model.loss(xb, rng=rng, labels=yb)
        float(loss)
        model.backward()
        opt.step()
    return _time(step, data.iterate_batches(xtr, ytr, BATCH, rng=np.random.default_rng(1)),
                 (xtr[:BATCH].copy(), ytr[:BATCH].copy()), steps, model.num_parameters())


def worker_torch(model_name, steps, threads):
    import torch
    from benchmarks.torch_models import MODELS
    from scratchvae import data

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    (xtr, ytr), _ = mnist_arrays()
    model = MODELS[model_name]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(xb, yb):
        opt.zero_grad()
        loss, _, _ = model.loss(torch.from_numpy(xb), torch.from_numpy(yb))
        loss.item()
        loss.backward()
        opt.step()
    n_params = sum(p.numel() for p in model.parameters())
    return _time(step, data.iterate_batches(xtr, ytr, BATCH, rng=np.random.default_rng(1)),
                 (xtr[:BATCH].copy(), ytr[:BATCH].copy()), steps, n_params)


def _time(step, batches, fixed_batch, steps, n_params):
    from benchmarks.common import sample_times

    times = sample_times(lambda: step(*fixed_batch), steps, warmup=10)
    t0 = time.perf_counter()
    for xb, yb in batches:
        step(xb, yb)
    epoch = time.perf_counter() - t0
    return {"step_ms": float(np.median(times) * 1e3), "epoch_s": epoch,
            "n_batches": len(batches), "params": int(n_params), "peak_rss_mb": _peak_rss_mb()}


def worker_torch_quality(model_name, epochs, threads, seed=0):
    import torch
    from benchmarks.torch_models import MODELS
    from scratchvae import data

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    (xtr, ytr), (xte, yte) = mnist_arrays()
    model = MODELS[model_name]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
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
        with torch.no_grad():   # the loss: the negative ELBO (VAEs), BCE + VQ terms (VQ-VAE)
            total = sum(float(model.loss(torch.from_numpy(xte[i:i + 1000]),
                                         torch.from_numpy(yte[i:i + 1000]))[0]) * 1000
                        for i in range(0, len(xte), 1000))
        history.append({"epoch": epoch, "test_nelbo": total / len(xte), "train_seconds": seconds})
        print(json.dumps(history[-1]), file=sys.stderr, flush=True)
    return {"history": history, "peak_rss_mb": _peak_rss_mb()}


def worker_ours_quality(model_name, epochs, seed=0):
    from scratchvae.train import TrainConfig, train
    out = os.path.join("runs", f"bench-{model_name}-s{seed}")
    history = train(TrainConfig(model=model_name, epochs=epochs, seed=seed), out,
                    progress=False, log=lambda *a: print(*a, file=sys.stderr, flush=True))
    return {"history": history, "peak_rss_mb": _peak_rss_mb()}


def _run_worker(args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + [str(a) for a in args]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    from benchmarks.common import cpu_info, save_table, threads_in_use

    parser = argparse.ArgumentParser(description="scratchvae vs PyTorch training speed")
    parser.add_argument("--model", default="mlp-vae", choices=["mlp-vae", "conv-vae", "conv-cvae", "vq-vae"])
    parser.add_argument("--steps", type=int, default=100, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=0,
                        help="also train N epochs of the full protocol with each and report "
                             "test -ELBO")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs and args.model == "vq-vae":
        parser.error("--epochs reports a test negative ELBO: not defined for vq-vae")

    if args.worker:
        kind, model, n = args.worker[0], args.worker[1], int(args.worker[2])
        threads = int(args.worker[3]) if len(args.worker) > 3 else 1
        seed = int(args.worker[4]) if len(args.worker) > 4 else 0   # quality runs only
        result = {"ours": lambda: worker_ours(model, n),
                  "torch": lambda: worker_torch(model, n, threads),
                  "ours-quality": lambda: worker_ours_quality(model, n, seed),
                  "torch-quality": lambda: worker_torch_quality(model, n, threads, seed)}[kind]()
        print(json.dumps(result))
        return

    try:
        import torch  # noqa: F401
        have_torch = not args.no_torch
    except ImportError:
        print("PyTorch is not installed: comparison columns are skipped")
        have_torch = False
    threads = threads_in_use()
    kinds = ["ours", "torch"] if have_torch else ["ours"]
    results = {k: [] for k in kinds}
    for r in range(args.rounds):
        for k in kinds:
            res = _run_worker([k, args.model, args.steps, threads])
            results[k].append(res)
            print(f"round {r + 1} {k}: step {res['step_ms']:.2f} ms, epoch {res['epoch_s']:.2f} s",
                  flush=True)
    best = {k: {"step_ms": min(r["step_ms"] for r in v), "epoch_s": min(r["epoch_s"] for r in v),
                "params": v[0]["params"], "peak_rss_mb": max(r["peak_rss_mb"] for r in v),
                "n_batches": v[0]["n_batches"]} for k, v in results.items()}
    names = {"ours": "scratchvae", "torch": "PyTorch"}
    if have_torch:
        import torch
        names["torch"] = f"PyTorch {torch.__version__}"
    rows = [[names[k], f"{b['params']:,}", f"{b['step_ms']:.2f}", f"{b['epoch_s']:.2f}",
             f"{b['peak_rss_mb']:.0f}"] for k, b in best.items()]
    if have_torch:
        o, t = best["ours"], best["torch"]
        rows.append(["ratio scratchvae / PyTorch", "", f"{o['step_ms'] / t['step_ms']:.2f}x",
                     f"{o['epoch_s'] / t['epoch_s']:.2f}x", ""])
    header = ["implementation", "parameters", "median step (ms)",
              f"epoch, {best['ours']['n_batches']} steps (s)", "peak RSS (MB)"]
    notes = [f"{cpu_info()}; {threads} threads for both; batch {BATCH}; float32; MNIST train "
             f"set; best of {args.rounds} rounds, each in a fresh process; the epoch is the "
             f"training loop alone (shuffled batches, no evaluation)."]
    extra = None
    if args.epochs:
        qrows = []
        for k in kinds:
            res = _run_worker([f"{k}-quality", args.model, args.epochs, threads])
            h = res["history"]
            qrows.append([names[k], f"{h[-1]['test_nelbo']:.2f}",
                          f"{np.mean([e['train_seconds'] for e in h]):.2f}",
                          f"{res['peak_rss_mb']:.0f}"])
            print(f"{k}: test -ELBO after {args.epochs} epochs {h[-1]['test_nelbo']:.2f}", flush=True)
        extra = (f"{args.model}: test negative ELBO after {args.epochs} epochs "
                 f"(batch 128, Adam 1e-3, seed 0)",
                 ["implementation", "test -ELBO (nats)", "mean epoch (s)", "peak RSS (MB)"], qrows)
    save_table(os.path.join(HERE, "results", f"train_{args.model}.md"),
               f"{args.model}: training speed", header, rows, notes, extra=extra)


if __name__ == "__main__":
    main()

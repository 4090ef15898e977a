"""Benchmark: the MLP VAE (784-400-20, Bernoulli, batch 128, Adam 1e-3) in
scratchvae and, when PyTorch is installed, the identical model in PyTorch on
the same number of CPU threads, in the same process.

Prints and saves a markdown table (benchmarks/results/mlp_vae.md):
median time of one training step, time of one epoch (469 steps, the
training loop alone), their ratio to PyTorch; with --epochs N also the test
negative ELBO after N epochs of the full protocol for both.

    python benchmarks/bench_mlp_vae.py                # speed only
    python benchmarks/bench_mlp_vae.py --epochs 10    # speed + quality
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.common import (cpu_info, median_time, save_table, torch_or_none,  # noqa: E402
                               threads_in_use)
from scratchvae import data  # noqa: E402
from scratchvae.models import mlp_vae  # noqa: E402
from scratchvae.optimizers import Adam  # noqa: E402
from scratchvae.train import TrainConfig, evaluate, train  # noqa: E402

BATCH = 128


# --------------------------------------------------------------------------
# scratchvae
# --------------------------------------------------------------------------

def ours_step_fn(x_batches, seed=0):
    rng = np.random.default_rng(seed)
    model = mlp_vae(rng=rng)
    opt = Adam(model.parameters(), lr=1e-3)
    state = {"i": 0}

    def step():
        xb = x_batches[state["i"] % len(x_batches)]
        state["i"] += 1
        opt.zero_grad()
        loss, _ = model.loss(xb, rng=rng)
        float(loss)
        model.backward()
        opt.step()
    return step


# --------------------------------------------------------------------------
# PyTorch, identical architecture and loss
# --------------------------------------------------------------------------

def torch_model(torch):
    nn, F = torch.nn, torch.nn.functional

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(784, 400), nn.Linear(400, 40)
            self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

        def loss(self, x):
            x = x.reshape(-1, 784)
            h = self.fc2(F.relu(self.fc1(x)))
            mu, logvar = h[:, :20], h[:, 20:]
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            logits = self.fc4(F.relu(self.fc3(z)))
            recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            return (recon + kl) / x.shape[0], recon / x.shape[0], kl / x.shape[0]

    return VAE()


def torch_step_fn(torch, x_batches):
    torch.manual_seed(0)
    model = torch_model(torch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tb = [torch.from_numpy(b) for b in x_batches]
    state = {"i": 0}

    def step():
        xb = tb[state["i"] % len(tb)]
        state["i"] += 1
        opt.zero_grad()
        loss, _, _ = model.loss(xb)
        loss.item()
        loss.backward()
        opt.step()
    return step, model, opt


def torch_train_eval(torch, xtr, xte, epochs, seed=0):
    torch.manual_seed(seed)
    model = torch_model(torch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        for xb, _ in data.iterate_batches(xtr, None, BATCH, rng=rng):
            opt.zero_grad()
            loss, _, _ = model.loss(torch.from_numpy(xb))
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            tot = sum(float(model.loss(torch.from_numpy(xte[i:i + 1000]))[0]) * len(xte[i:i + 1000])
                      for i in range(0, len(xte), 1000))
        history.append((epoch, tot / len(xte), seconds))
        print(f"  torch epoch {epoch}: test -ELBO {tot / len(xte):.3f} ({seconds:.1f}s)", flush=True)
    return history


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="timed steps for the median")
    parser.add_argument("--epochs", type=int, default=0,
                        help="also train N epochs of the full protocol for both and compare "
                             "test -ELBO")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "mlp_vae.md"))
    args = parser.parse_args()

    ds = data.load_dataset("mnist", download="auto", allow_sample=False)
    xtr = data.images_to_float(ds.train_images)
    xte = data.images_to_float(ds.test_images)
    n_batches = -(-len(xtr) // BATCH)
    batches = [np.ascontiguousarray(xtr[i * BATCH:(i + 1) * BATCH]) for i in range(n_batches)]
    torch = torch_or_none()
    threads = threads_in_use()
    if torch is not None:
        torch.set_num_threads(threads)

    rows = []
    ours = ours_step_fn(batches)
    ours_step = median_time(ours, args.steps, warmup=10)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        ours()
    ours_epoch = time.perf_counter() - t0
    rows.append(["scratchvae", f"{ours_step * 1e3:.2f}", f"{ours_epoch:.2f}"])
    if torch is not None:
        tstep, _, _ = torch_step_fn(torch, batches)
        torch_step = median_time(tstep, args.steps, warmup=10)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            tstep()
        torch_epoch = time.perf_counter() - t0
        rows.append([f"PyTorch {torch.__version__}", f"{torch_step * 1e3:.2f}", f"{torch_epoch:.2f}"])
        rows.append(["ratio scratchvae / PyTorch", f"{ours_step / torch_step:.2f}x",
                     f"{ours_epoch / torch_epoch:.2f}x"])
    header = ["implementation", "median step (ms)", f"epoch, {n_batches} steps (s)"]
    notes = [f"{cpu_info()}; {threads} threads for both; batch {BATCH}; MNIST train set "
             f"{len(xtr)} images; float32."]

    if args.epochs:
        print(f"training {args.epochs} epochs (scratchvae)...", flush=True)
        out_dir = os.path.join("runs", "bench-mlp-vae")
        hist = train(TrainConfig(model="mlp-vae", epochs=args.epochs, seed=0), out_dir,
                     progress=False)
        qrows = [["scratchvae", f"{hist[-1]['test_nelbo']:.2f}",
                  f"{np.mean([h['train_seconds'] for h in hist]):.2f}"]]
        if torch is not None:
            print(f"training {args.epochs} epochs (PyTorch)...", flush=True)
            th = torch_train_eval(torch, xtr, xte, args.epochs)
            qrows.append([f"PyTorch {torch.__version__}", f"{th[-1][1]:.2f}",
                          f"{np.mean([h[2] for h in th]):.2f}"])
        save_table(args.out, "MLP VAE: speed", header, rows, notes,
                   extra=("MLP VAE: quality after %d epochs (seed 0)" % args.epochs,
                          ["implementation", "test -ELBO (nats)", "mean epoch (s)"], qrows))
    else:
        save_table(args.out, "MLP VAE: speed", header, rows, notes)


if __name__ == "__main__":
    main()

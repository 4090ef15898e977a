"""What ``train --device gpu --cuda-graph`` computes, re-computed on the CPU.

    python benchmarks/captured_on_cpu.py --model conv-vae [--epochs 1] [--seed 0]

The run's initial weights, batch order (full batches only), counter-based noise
and learning rates, as ``train`` derives them from ``--seed``, through the CPU
path (scratchvae.graph_step.reference_epochs); prints each epoch's mean training
loss, the number a captured run on a GPU reports as "train loss" for that epoch
(to float rounding: cuBLAS and the CPU's BLAS sum in other orders).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from scratchvae.config import GRAPH_MODELS, TrainConfig, make_model, make_optimizer  # noqa: E402
from scratchvae.graph_step import counter_seed, reference_epochs  # noqa: E402
from scratchvae.rundir import load_data, seed_sequences  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=GRAPH_MODELS, required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-limit", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs: expected a positive number, got {args.epochs}")
    config = TrainConfig(model=args.model, device="cpu", epochs=args.epochs, seed=args.seed,
                         train_limit=args.train_limit)
    init_ss, shuffle_ss, noise_ss, _ = seed_sequences(config.seed)
    model = make_model(config, np.random.default_rng(init_ss))
    optimizer = make_optimizer(config, model.parameters())
    _, (x, _), _ = load_data(config, log=print, progress=False)
    t0 = time.perf_counter()
    losses = reference_epochs(model, optimizer, config, x, np.random.default_rng(shuffle_ss),
                              counter_seed(noise_ss),
                              log=lambda k, loss: print(f"step {k}: loss {loss:.3f}", flush=True))
    for epoch, loss in enumerate(losses, 1):
        print(f"epoch {epoch}  train loss {loss:.3f}")
    print(f"{x.shape[0] // config.batch_size} full batches of {config.batch_size} per epoch, "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

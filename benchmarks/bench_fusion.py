"""The ReLUs fused into the layers next to them against the same ReLUs run on their own.

A conv model's training step (batch 128 of random binary images, Adam) with every
Sequential's ``fuse_relu`` on (the default: a ReLU next to a convolution runs in
its product's epilogue or its backward, one after a Linear in its bias pass, one
before Flatten or Reshape in their backward copy; scratchvae/layers/dense.py) and off (each
ReLU a pass of its own), taking turns round by round on one model in one process,
the order alternating: both see the same training state and machine minute. Each
round times ``--steps`` steps of each and keeps their medians; the table gives the
rounds' ratios fused / separate and their mean with a 95% Student-t interval. The
two give the same numbers bit for bit (tests/test_conv.py), so only time differs.

    python benchmarks/bench_fusion.py --model conv-vae --rounds 10
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

MODELS = ("conv-vae", "conv-cvae", "vq-vae")


def stacks(module):
    """Every Sequential in ``module``, itself included."""
    from scratchvae.layers import Sequential
    return [m for m in module.modules() if isinstance(m, Sequential)]


def measure(model_name, rounds, steps, log=print):
    """[(fused ms, separate ms)]: the median step of each, round by round (5 steps
    of warm-up first)."""
    from benchmarks.common import settings_in_turns, training_step
    from scratchvae.backend import retain_freed_memory
    from scratchvae.models import build_model
    from scratchvae.optimizers import Adam

    retain_freed_memory()                            # as the trainer does
    model = build_model(model_name)
    step = training_step(model, Adam(model.parameters(), lr=1e-3), np.random.default_rng(2))
    x = (np.random.default_rng(1).random((128, 1, 28, 28)) > 0.5).astype(np.float32)
    labels = np.arange(128) % 10

    def use(fuse):
        for stack in stacks(model):
            stack.fuse_relu = fuse
    return settings_in_turns(lambda: step(x, labels), use, rounds, steps,
                             ("fused", "separate"), log)


def main():
    from benchmarks.common import cpu_info, paired_rows, save_table, threads_in_use

    parser = argparse.ArgumentParser(description="ReLUs fused into the layers next to them or not")
    parser.add_argument("--model", default="conv-vae", choices=MODELS)
    parser.add_argument("--rounds", type=int, default=10, help="rounds of both settings")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per setting a round")
    args = parser.parse_args()
    for name in ("rounds", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    results = measure(args.model, args.rounds, args.steps,
                      log=lambda line: print(line, flush=True))
    rows = paired_rows(results)
    threads = threads_in_use()
    notes = [f"{cpu_info()}; {threads} threads; batch 128 random binary images; Adam; one "
             f"process, the two settings taking turns (order alternating by round), "
             f"median of {args.steps} steps each a round; 95% Student-t interval over the "
             f"rounds' ratios."]
    save_table(os.path.join(HERE, "results", f"fusion_{args.model}_{threads}threads.md"),
               f"{args.model}: ReLUs fused into the layers next to them, or on their own",
               ["round", "fused step (ms)", "separate step (ms)", "fused / separate"],
               rows, notes)


if __name__ == "__main__":
    main()

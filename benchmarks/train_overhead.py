"""What the `train` command adds to the training steps, measured in pairs.

Two loops take turns, epoch by epoch, on one model, one optimizer and one process:
the `train` command's own epoch (``scratchvae.train._cpu_epoch``: shuffled batches,
the learning rate of each step, the loss read back and checked, the progress bar,
here written to /dev/null) and the bare benchmark loop (``benchmarks.common.
training_step`` over the same kind of batches: the steps with nothing around them).
Taking turns on one model puts both on the same training state and the same machine
minute, which separate processes (bench_train.py) cannot: there a 10-20% spread
between processes on a shared host hides a difference of a few percent. The order
inside each pair alternates (command first, then loop first), so a drift along the
run falls on both.

Prints each pair's times and the mean ratio command / loop with its 95% Student-t
interval over the pairs; saves the table to benchmarks/results/train_overhead_M.md.

    python benchmarks/train_overhead.py --model conv-vae --pairs 4
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))


def measure(model_name, pairs, train_limit=0, log=print):
    """[(command seconds, loop seconds)] for ``pairs`` pairs of epochs (one epoch
    untimed first, the warm-up), each pair also passed to ``log`` as a line;
    ``train_limit``: the first N training images only (0: all)."""
    import tempfile

    from benchmarks.common import training_step
    from scratchvae import data
    from scratchvae.config import TrainConfig, make_model, make_optimizer
    from scratchvae.rundir import load_data, seed_sequences
    from scratchvae.train import _cpu_epoch

    config = TrainConfig(model=model_name, epochs=2 * pairs + 1, seed=0, download="yes",
                         train_limit=train_limit)
    _, (xtr, ytr), _ = load_data(config, log=lambda *a, **k: None, progress=False)
    init_ss, shuffle_ss, noise_ss, _ = seed_sequences(config.seed)
    model = make_model(config, np.random.default_rng(init_ss))
    optimizer = make_optimizer(config, model.parameters())
    shuffle_rng, noise_rng = np.random.default_rng(shuffle_ss), np.random.default_rng(noise_ss)
    steps_per_epoch = -(-xtr.shape[0] // config.batch_size)
    bare_step = training_step(model, optimizer, noise_rng)
    state = {"epoch": 0, "step": 0}

    def command_epoch():
        state["epoch"] += 1
        _, state["step"] = _cpu_epoch(model, optimizer, config, xtr, ytr, shuffle_rng,
                                      noise_rng, state["epoch"], state["step"],
                                      steps_per_epoch, "epoch", True, out_dir, False)

    def loop_epoch():
        state["epoch"] += 1
        state["step"] += steps_per_epoch
        for xb, yb in data.iterate_batches(xtr, ytr, config.batch_size, rng=shuffle_rng):
            bare_step(xb, yb)

    def timed(epoch_fn):
        t0 = time.perf_counter()
        epoch_fn()
        return time.perf_counter() - t0

    results = []
    with tempfile.TemporaryDirectory() as out_dir, open(os.devnull, "w") as devnull:
        stderr, sys.stderr = sys.stderr, devnull      # the progress bar, not shown
        try:
            loop_epoch()                              # warm-up: compiles, first touches
            for p in range(pairs):
                if p % 2 == 0:
                    c = timed(command_epoch)
                    b = timed(loop_epoch)
                else:
                    b = timed(loop_epoch)
                    c = timed(command_epoch)
                results.append((c, b))
                log(f"pair {p + 1}: command {c:.2f} s, loop {b:.2f} s, ratio {c / b:.3f}")
        finally:
            sys.stderr = stderr
    return results


def main():
    from benchmarks.common import cpu_info, paired_rows, save_table, threads_in_use

    parser = argparse.ArgumentParser(description="what the train command adds to the steps")
    parser.add_argument("--model", default="conv-vae",
                        choices=["mlp-vae", "conv-vae", "conv-cvae", "vq-vae"])
    parser.add_argument("--pairs", type=int, default=4, help="pairs of timed epochs")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error(f"--pairs must be >= 1, got {args.pairs}")
    results = measure(args.model, args.pairs, log=lambda line: print(line, flush=True))
    rows = paired_rows(results)
    notes = [f"{cpu_info()}; {threads_in_use()} threads; batch 128; MNIST; one process: the "
             f"command's epoch loop and the bare loop take turns on one model (a warm-up "
             f"epoch first; order alternating by pair); 95% Student-t interval over the "
             f"pairs' ratios."]
    save_table(os.path.join(HERE, "results", f"train_overhead_{args.model}.md"),
               f"{args.model}: the train command's epoch against the bare loop",
               ["pair", "train command epoch (s)", "bare loop epoch (s)", "command / loop"],
               rows, notes)


if __name__ == "__main__":
    main()

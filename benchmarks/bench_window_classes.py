"""Padded convolutions by window classes against one product over the full columns.

kernels/conv_gemm.py runs a padded convolution of images with more than 3
channels by window classes (kernels/windows.py): no product over the taps
that fall in the padding. ``kernels.conv_gemm.BY_CLASSES = False`` runs the
same products over the full columns, padding's zeros included. Two tables,
both settings taking turns in one process (the order alternating by round),
95% Student-t intervals over the rounds' ratios:

- each product alone (``--products``): the conv-VAE middle layer's four
  (Conv2d(32, 64, 4, 2, 1) on 14x14 images, batch 128: its forward, weight
  gradient and input gradient, and a transposed convolution's backward, both
  products of one column matrix) and the VQ-VAE's 3x3 layer's three
  (Conv2d(16, 64, 3, 1, 1) on 7x7), medians of ``--repeats`` calls a round;
- whole training steps of a conv model (``--model``; batch 128 of random
  binary images, Adam), medians of ``--steps`` steps a round.

The two settings agree to float rounding, not bit for bit (the classes group
the sums differently): tests/test_kernels_conv_gemm.py.

    python benchmarks/bench_window_classes.py --model conv-vae --rounds 10
    python benchmarks/bench_window_classes.py --products --rounds 8
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

MODELS = ("conv-vae", "conv-cvae", "vq-vae")


def use_classes(on):
    import kernels.conv_gemm as G
    G.BY_CLASSES = on


def products(rng=None):
    """[(name, multiply-adds over the in-image taps, call)]: the products timed by
    ``--products``, on random float32 operands."""
    import kernels.conv_gemm as G
    from kernels.windows import window_classes

    rng = np.random.default_rng(0) if rng is None else rng

    def normal(*shape):
        return rng.standard_normal(shape).astype(np.float32)
    cases = []
    for label, (N, H, W, C, O, k, s, p) in (("Conv2d(32, 64, 4, 2, 1), 14x14",
                                             (128, 14, 14, 32, 64, 4, 2, 1)),
                                            ("Conv2d(16, 64, 3, 1, 1), 7x7",
                                             (128, 7, 7, 16, 64, 3, 1, 1))):
        kernel, stride, padding = (k, k), (s, s), (p, p)
        x, Wm, bias = normal(N, H, W, C), normal(O, k * k * C), normal(O)
        cls = window_classes(H, W, C, *kernel, *stride, *padding)
        macs = N * int((np.diff(cls.starts) * np.diff(cls.col_starts)).sum()) * O
        dY = normal(N * cls.pixels.shape[0], O)
        geometry = (kernel, stride, padding)
        cases += [(f"{label}: forward + bias + ReLU", macs,
                   lambda x=x, Wm=Wm, b=bias, g=geometry:
                   G.conv_forward_product(x, Wm, *g, b, relu=True)),
                  (f"{label}: weight gradient", macs,
                   lambda x=x, R=dY, g=geometry: G.conv_weight_product(x, R, *g)),
                  (f"{label}: input gradient (transposed product)", macs,
                   lambda X=dY, Wm=Wm, shape=x.shape, g=geometry:
                   G.conv_transposed_product(X, Wm, shape, *g))]
        if k == 4:
            cases.append((f"{label}: both products of one column matrix", 2 * macs,
                          lambda x=x, Wm=Wm, R=dY, g=geometry:
                          G.conv_forward_and_weight_products(x, Wm, R, *g)))
    return cases


def measure_products(rounds, repeats, log=print):
    """[(name, multiply-adds, [(classes ms, full columns ms)] per round)]."""
    from benchmarks.common import settings_in_turns
    from scratchvae.backend import retain_freed_memory

    retain_freed_memory()
    out = []
    try:
        for name, macs, call in products():
            log(name)
            out.append((name, macs, settings_in_turns(call, use_classes, rounds, repeats,
                                                      ("classes", "full"), log)))
    finally:
        use_classes(True)
    return out


def measure_steps(model_name, rounds, steps, log=print):
    """[(classes ms, full columns ms)]: a conv model's median step under each, round
    by round."""
    from benchmarks.common import settings_in_turns, training_step
    from scratchvae.backend import retain_freed_memory
    from scratchvae.models import build_model
    from scratchvae.optimizers import Adam

    retain_freed_memory()                            # as the trainer does
    model = build_model(model_name)
    step = training_step(model, Adam(model.parameters(), lr=1e-3), np.random.default_rng(2))
    x = (np.random.default_rng(1).random((128, 1, 28, 28)) > 0.5).astype(np.float32)
    labels = np.arange(128) % 10
    try:
        return settings_in_turns(lambda: step(x, labels), use_classes, rounds, steps,
                                 ("classes", "full"), log)
    finally:
        use_classes(True)


def main():
    from benchmarks.common import cpu_info, paired_rows, paired_summary, save_table, \
        threads_in_use

    parser = argparse.ArgumentParser(description="padded convolutions by window classes or "
                                                 "over the full columns")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", choices=MODELS, help="time whole training steps")
    what.add_argument("--products", action="store_true", help="time each product alone")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of both settings")
    parser.add_argument("--steps", type=int, default=10,
                        help="timed steps per setting a round (--model)")
    parser.add_argument("--repeats", type=int, default=15,
                        help="timed calls per setting a round (--products)")
    args = parser.parse_args()
    for name in ("rounds", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    threads = threads_in_use()
    log = lambda line: print(line, flush=True)          # noqa: E731
    how = (f"{cpu_info()}; {threads} threads; one process, the two settings taking turns "
           f"(order alternating by round); 95% Student-t interval over the rounds' ratios.")
    if args.products:
        rows = []
        for name, macs, results in measure_products(args.rounds, args.repeats, log):
            mean, (lo, hi) = paired_summary(results)
            a = float(np.median([r[0] for r in results]))
            b = float(np.median([r[1] for r in results]))
            rows.append([name, f"{a:.3f} ({2 * macs / a / 1e6:.0f})",
                         f"{b:.3f} ({2 * macs / b / 1e6:.0f})",
                         f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"])
        save_table(os.path.join(HERE, "results", f"window_classes_products_{threads}threads.md"),
                   "Each product alone: window classes against the full columns",
                   ["product (batch 128, float32)", "classes, ms (GFLOP/s)",
                    "full columns, ms (GFLOP/s)", "classes / full"], rows,
                   [how + f" Medians of {args.repeats} calls a round, of the rounds; GFLOP/s "
                          "over the multiply-adds of the in-image taps (the work both do "
                          "that counts)."])
        return
    results = measure_steps(args.model, args.rounds, args.steps, log)
    save_table(os.path.join(HERE, "results",
                            f"window_classes_{args.model}_{threads}threads.md"),
               f"{args.model}: padded convolutions by window classes, or over the full columns",
               ["round", "classes step (ms)", "full columns step (ms)", "classes / full"],
               paired_rows(results),
               [how + f" Batch 128 random binary images; Adam; median of {args.steps} "
                      "steps each a round."])


if __name__ == "__main__":
    main()

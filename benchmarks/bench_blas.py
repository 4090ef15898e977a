"""The matrix products of the engine's models under each BLAS kernels/blas.py can
call (NumPy's OpenBLAS, SciPy's OpenBLAS, MKL when the `mkl` extra is installed), one
thread, through the engine's own ``kernels.gemm.matmul``. Each BLAS runs in its own
fresh process (the choice is made once per process, SCRATCHVAE_BLAS), the processes
alternating over rounds; the best round's median per product is reported. Prints a
markdown table and saves it to benchmarks/results/blas.md.

    python benchmarks/bench_blas.py
    python benchmarks/bench_blas.py --rounds 5 --repeats 100

One worker on its own (prints a JSON line): ``python benchmarks/bench_blas.py --worker N``.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

#: (where the product comes from, M, K, N): C (M, N) = A (M, K) B (K, N)
PRODUCTS = [
    ("mlp-vae encoder forward, batch 128", 128, 784, 400),
    ("mlp-vae encoder dW (400x128 by 128x784)", 400, 128, 784),
    ("mlp-vae decoder dX (128x400 by 400x784)", 128, 400, 784),
    ("mlp-vae latent head", 128, 400, 40),
    ("iwae-1l dW at batch 20 (200x20 by 20x784)", 200, 20, 784),
    ("iwae-1l forward at batch 20", 20, 784, 200),
    ("iwae-1l decoder dX at batch 20", 20, 200, 784),
    ("conv-vae linear 3136 -> 512, batch 128", 128, 3136, 512),
    ("conv-vae linear dW (512x128 by 128x3136)", 512, 128, 3136),
    ("conv-vae conv2 columns (a 1,568-row chunk)", 1568, 576, 64),
    ("conv-vae conv1 dW (64 by 6,272 pixels by 288)", 64, 6272, 288),
]


def worker(repeats):
    import time

    from kernels.blas import describe
    from kernels.gemm import matmul

    rng = np.random.default_rng(0)
    times = []
    for _, m, k, n in PRODUCTS:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        for _ in range(5):
            matmul(a, b, out=out)
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            matmul(a, b, out=out)
            samples.append(time.perf_counter() - t0)
        times.append(float(np.median(samples)) * 1e6)
    return {"blas": describe(), "us": times}


def main():
    from benchmarks.common import cpu_info, save_table

    parser = argparse.ArgumentParser(description="the engine's products under each BLAS")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per product")
    args = parser.parse_args()
    if args.rounds < 1 or args.repeats < 1:
        parser.error("--rounds and --repeats must be >= 1")
    from kernels.blas import mkl_library

    choices = ["numpy", "scipy"] + (["mkl"] if mkl_library() else [])
    best, names = {}, {}
    for r in range(args.rounds):
        for choice in (choices if r % 2 == 0 else choices[::-1]):
            env = dict(os.environ, SCRATCHVAE_BLAS=choice, NUMBA_NUM_THREADS="1",
                       OPENBLAS_NUM_THREADS="1")
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                                   str(args.repeats)], env=env, capture_output=True, text=True)
            if proc.returncode:
                print(f"{choice}: {proc.stderr.strip().splitlines()[-1]}")
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            names[choice] = res["blas"]
            best[choice] = [min(a, b) for a, b in zip(best.get(choice, res["us"]), res["us"])]
            print(f"round {r + 1} {choice}: " + ", ".join(f"{t:.0f}" for t in res["us"]),
                  flush=True)
    found = [c for c in choices if c in best]
    header = ["product", "M x K x N"] + [f"{names[c]} (us)" for c in found]
    if "numpy" in best and "scipy" in best:
        header.append("NumPy's / SciPy's")
    rows = []
    for i, (what, m, k, n) in enumerate(PRODUCTS):
        row = [what, f"{m} x {k} x {n}"] + [f"{best[c][i]:.0f}" for c in found]
        if "numpy" in best and "scipy" in best:
            row.append(f"{best['numpy'][i] / best['scipy'][i]:.2f}x")
        rows.append(row)
    notes = [f"{cpu_info()}; one thread; float32; kernels.gemm.matmul (one BLAS call per "
             f"product on one thread); median of {args.repeats} calls, best of {args.rounds} "
             f"rounds, each BLAS in its own fresh process (SCRATCHVAE_BLAS), alternating."]
    save_table(os.path.join(HERE, "results", "blas.md"),
               "The engine's products under each BLAS", header, rows, notes)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        print(json.dumps(worker(int(sys.argv[2]))))
    else:
        main()

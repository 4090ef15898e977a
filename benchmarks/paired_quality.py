"""Is a quality gap to PyTorch the engine's, or the luck of the draw?

For each seed, scratchvae and its PyTorch twin train the same model from the
*same* initial weights (drawn by scratchvae, copied into the twin), on the same
shuffled batches, with the same reparameterisation noise eps (a VQ-VAE: the same
rows for its dead-code restarts; one NumPy generator each, seeded alike), and are
evaluated on the test set with the same noise. Only the arithmetic differs (our ops and kernels against autograd and
oneDNN/MKL), so the two runs of a seed agree for the first hundreds of steps and
then drift apart as float32 round-off grows. Over several seeds the paired
differences show whether one engine trains systematically better. Prints a
table and saves it to benchmarks/results/.

    python benchmarks/paired_quality.py --model mlp-vae --seeds 10 11 12 13 14 15

The procedure is ``sweep --twin``'s: scratchvae's run is an ordinary ``train``
run, the twin's is :func:`scratchvae.twins.train.train_twin` (RUN/twin), with the
trainer's defaults (batch 128, Adam 1e-3). Each run is a fresh process with one
thread; the two runs of a seed go side by side. One run on its own (prints a JSON
line): --worker ours|torch MODEL SEED EPOCHS LIMIT RUN_DIR
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

BATCH = 128
MODELS = ("mlp-vae", "conv-vae", "conv-cvae", "vq-vae")  # scratchvae.twins.TWIN_MODELS


def run_config(model_name, seed, epochs, limit):
    """The configuration of both runs of a seed: the trainer's defaults on full MNIST."""
    from scratchvae.config import TrainConfig

    return TrainConfig(model=model_name, seed=seed, epochs=epochs, batch_size=BATCH,
                       train_limit=limit, test_limit=limit)


def worker(engine, model_name, seed, epochs, limit, run_dir):
    """One run of a seed: scratchvae's (``train``) or its twin's (``train_twin``);
    returns its final test metric (the model's headline)."""
    from scratchvae.sweep import headline

    config = run_config(model_name, seed, epochs, limit)
    quiet = lambda *args, **kwargs: None   # noqa: E731
    if engine == "ours":
        from scratchvae.train import train
        record = train(config, run_dir, progress=False, log=quiet)[-1]
    else:
        from scratchvae.twins.train import train_twin
        record = train_twin(run_dir, config=config, log=quiet)["record"]
    return {headline(model_name): record[headline(model_name)]}


def main():
    from benchmarks.common import cpu_info, markdown_table, save_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mlp-vae", choices=MODELS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14, 15])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--limit", type=int, default=0, metavar="N",
                        help="only the first N training and test images (0: all); a quick check, "
                             "printed but not saved")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        engine, model_name, seed, epochs, limit, run_dir = args.worker
        print(json.dumps(worker(engine, model_name, int(seed), int(epochs), int(limit),
                                run_dir)))
        return

    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("paired_quality.py compares with PyTorch: install torch first")
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    from scratchvae.sweep import headline

    key = headline(args.model)
    runs = tempfile.TemporaryDirectory(prefix="paired_quality_")
    rows, diffs = [], []
    for seed in args.seeds:
        run_dir = os.path.join(runs.name, f"seed={seed}")
        procs = {e: subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", e,
                                      args.model, str(seed), str(args.epochs), str(args.limit),
                                      run_dir],
                                     stdout=subprocess.PIPE, text=True, env=env)
                 for e in ("ours", "torch")}
        res = {}
        for e, p in procs.items():
            out, _ = p.communicate()
            if p.returncode:
                raise SystemExit(f"the {e} run of seed {seed} failed (exit {p.returncode})")
            res[e] = json.loads(out.strip().splitlines()[-1])[key]
        diffs.append(res["ours"] - res["torch"])
        rows.append([seed, f"{res['ours']:.3f}", f"{res['torch']:.3f}", f"{diffs[-1]:+.3f}"])
        print(f"seed {seed}: scratchvae {res['ours']:.3f}, PyTorch {res['torch']:.3f}", flush=True)
    d = np.array(diffs)
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    rows.append(["mean", "", "", f"{d.mean():+.3f} ± {se:.3f} (s.e.)"])
    runs.cleanup()
    limit = f", the first {args.limit} training and test images" if args.limit else ""
    notes = [f"{cpu_info()}; one thread per run; batch {BATCH}, Adam 1e-3, {args.epochs} epochs"
             f"{limit}; {key} (nats) with the same evaluation noise for both engines."]
    title = f"{args.model}: scratchvae and PyTorch from identical weights, batches and noise"
    header = ["seed", "scratchvae", "PyTorch", "difference"]
    if args.limit:
        print("\n".join([f"## {title}", "", markdown_table(header, rows), "", *notes]))
        return
    save_table(os.path.join(HERE, "results", f"paired_quality_{args.model}.md"), title, header,
               rows, notes)


if __name__ == "__main__":
    main()

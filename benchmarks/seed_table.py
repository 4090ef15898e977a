"""The seed report's Table 1 for this machine: for VAE, beta-VAE, CVAE and
VQ-VAE, the parameters, the seconds of one training epoch (scratchvae, and
PyTorch on the identical model when installed) and the test metric of a
trained run.

Speed: one full epoch (469 shuffled batches of 128) of each model in a fresh
process per implementation, via the workers of bench_train.py. The beta-VAE
is the conv VAE with another KL weight: same layers, same step, so its
speed is the conv VAE's. Test metrics come from trained run directories
(``python -m scratchvae train ...``), read from their metrics.jsonl.

    python benchmarks/seed_table.py --vae runs/conv-vae --beta-vae runs/beta-vae \
        --cvae runs/conv-cvae --vq-vae runs/vq-vae [--rounds 1] [--no-torch]
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

#: table row -> (scratchvae model, metric key in metrics.jsonl, metric label)
ROWS = [("VAE", "conv-vae", "test_nelbo", "test -ELBO"),
        ("beta-VAE", "conv-vae", "test_nelbo", "test -ELBO"),
        ("CVAE", "conv-cvae", "test_nelbo", "test -ELBO"),
        ("VQ-VAE", "vq-vae", "test_recon", "test recon BCE")]


def _last_record(run_dir, model):
    """The last metrics record and the config of a run of ``model``."""
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records:
        raise SystemExit(f"error: {run_dir}/metrics.jsonl has no epochs")
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    if config.get("model") != model:
        raise SystemExit(f"error: {run_dir} is a {config.get('model')} run, expected {model}")
    return records[-1], config


def main():
    from benchmarks.bench_train import _run_worker
    from benchmarks.common import cpu_info, save_table, threads_in_use

    parser = argparse.ArgumentParser(description="seed-style table of the four models")
    for name, *_ in ROWS:
        parser.add_argument(f"--{name.lower()}", metavar="DIR", default=None,
                            help=f"trained {name} run directory (its test metric)")
    parser.add_argument("--rounds", type=int, default=1, help="epochs timed per model (best)")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()

    have_torch = not args.no_torch
    if have_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("PyTorch is not installed: its column is skipped")
            have_torch = False
    threads = threads_in_use()
    kinds = ["ours", "torch"] if have_torch else ["ours"]
    speed = {}
    for model in dict.fromkeys(m for _, m, _, _ in ROWS):       # each model once
        runs = {kind: [] for kind in kinds}
        for r in range(args.rounds):                            # alternate who starts
            for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                runs[kind].append(_run_worker([kind, model, 5, threads]))
        for kind in kinds:
            speed[model, kind] = min(runs[kind], key=lambda res: res["epoch_s"])
            print(f"{model} {kind}: {speed[model, kind]['epoch_s']:.2f} s per epoch", flush=True)

    rows = []
    for name, model, key, label in ROWS:
        run_dir = getattr(args, name.lower().replace("-", "_"))
        metric = "–"
        if run_dir:
            record, config = _last_record(run_dir, model)
            extra = f", beta {config['beta']:g}" if config.get("beta", 1.0) != 1.0 else ""
            metric = f"{label} {record[key]:.2f} ({record['epoch']} epochs{extra})"
        ours = speed[model, "ours"]
        row = [name, model, f"{ours['params']:,}", f"{ours['epoch_s']:.1f}"]
        if have_torch:
            t = speed[model, "torch"]
            row += [f"{t['epoch_s']:.1f}", f"{ours['epoch_s'] / t['epoch_s']:.2f}x"]
        rows.append(row + [metric])
    header = ["model", "--model", "parameters", "s/epoch scratchvae"]
    header += ["s/epoch PyTorch", "ratio"] if have_torch else []
    header += ["test metric (scratchvae)"]
    notes = [f"{cpu_info()}; {threads} threads; batch 128; one epoch = 469 shuffled batches, "
             f"training loop only; best of {args.rounds} epoch(s) per model and "
             f"implementation, each in a fresh process. The seed report listed 9:22 for 50 "
             f"epochs of its VAE (11.2 s/epoch) and 7:45 for its VQ-VAE (9.3 s/epoch), "
             f"hardware unknown."]
    save_table(os.path.join(HERE, "results", "seed_table.md"),
               "Seed-style table: parameters, seconds per epoch, test metric", header, rows,
               notes)


if __name__ == "__main__":
    main()

"""One row of Burda, Grosse and Salakhutdinov's Table 1 ("Importance Weighted
Autoencoders", 2015): train the row's model on the paper's protocol, estimate its
test NLL with k = 5000, and record it beside the paper's number.

    python benchmarks/iwae_table.py iwae-1l-k5                # the full schedule (3280 passes)
    python benchmarks/iwae_table.py iwae-1l-k5 --stages 4     # cut after i = 3 (40 passes)
    python benchmarks/iwae_table.py vae-2l-k50 --dry-run      # print the commands only

A row is OBJECTIVE-LAYERS-kK: vae (the k-sample ELBO, ``--objective elbo``) or iwae
(the bound L_k, ``--objective iwae``), on ``iwae-1l`` or ``iwae-2l``, with k samples
(``--k``). The protocol: dynamically binarised MNIST (``--binarize``), batch 20,
Adam with eps 1e-4 (``--adam-eps``), and the schedule of 3^i epochs at
lr 1e-3 * 10^(-i/7) (``--lr-schedule iwae``) for the stages i < I (``--stages I``:
8, the default, is all 3280 epochs; 4 is 1 + 3 + 9 + 27 = 40). The run lives in
OUT/ROW (``--out``, default runs/iwae-table): a run already there is resumed to
the stages asked for (``train --resume``; the schedule's position is its epoch,
so a run cut short or made in pieces continues exactly), or left as it is when it
has them. Then ``evaluate --iw-k 5000`` (chunked, with a progress bar), and the
row goes into TABLE.json and TABLE.md (``--table``, default
benchmarks/results/iwae_table): test NLL (k = 5000) with its standard error
over the images, the paper's number (its full schedule), the run's training
time (the sum of its epochs, all pieces) and the evaluation's wall time. A row
measured again at the same stages replaces its line.

Options of ``train`` at their defaults (``--objective elbo``, ``--k 1``) are left
out of the command. ``--train-limit``, ``--test-limit``, ``--sample`` and
``--iw-k`` make a tiny run for tests.
"""
import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: Burda et al., Table 1: test NLL in nats (k = 5000), after the full schedule
PAPER = {"vae-1l-k1": 86.76, "vae-1l-k5": 86.47, "vae-1l-k50": 86.35,
         "iwae-1l-k5": 85.54, "iwae-1l-k50": 84.78,
         "vae-2l-k1": 85.33, "vae-2l-k5": 85.01, "vae-2l-k50": 84.78,
         "iwae-2l-k5": 83.89, "iwae-2l-k50": 82.90}
ROWS = tuple(PAPER)
#: the stages of the schedule and the epochs of its first I stages
STAGES = 8


def schedule_epochs(stages):
    """sum_{i < stages} 3^i: the epochs of the first ``stages`` stages."""
    return (3 ** stages - 1) // 2


def row_spec(row):
    """``row`` -> dict(model, objective, k): e.g. iwae-2l-k50 -> iwae-2l, iwae, 50."""
    name, layers, k = row.split("-")
    return {"model": f"iwae-{layers}", "objective": "elbo" if name == "vae" else "iwae",
            "k": int(k[1:])}


def scratchvae_command(*args):
    return [sys.executable, "-m", "scratchvae", *map(str, args)]


def train_command(row, run_dir, epochs, trained, args):
    """The ``train`` command of ``row``: a new run, or the resume of the run in
    ``run_dir`` that has ``trained`` epochs (None: there is none)."""
    quiet = ["--no-progress"] if args.no_progress else []
    if trained is not None:
        return scratchvae_command("train", "--resume", run_dir, "--epochs", epochs, *quiet)
    spec = row_spec(row)
    options = ["--model", spec["model"]]
    if spec["objective"] != "elbo":
        options += ["--objective", spec["objective"]]
    if spec["k"] != 1:
        options += ["--k", spec["k"]]
    options += ["--binarize", "--batch-size", 20, "--lr", "1e-3", "--adam-eps", "1e-4",
                "--lr-schedule", "iwae", "--epochs", epochs, "--device", args.device]
    for flag, value in (("--train-limit", args.train_limit), ("--test-limit", args.test_limit)):
        if value:
            options += [flag, value]
    if args.sample:
        options.append("--sample")
    return scratchvae_command("train", *options, "--out", run_dir, *quiet)


def evaluate_command(run_dir, args):
    quiet = ["--no-progress"] if args.no_progress else []
    return scratchvae_command("evaluate", "--checkpoint", run_dir, "--iw-k", args.iw_k,
                              "--device", args.device, "--json", *quiet)


def trained_epochs(run_dir, row):
    """The epochs the run in ``run_dir`` has trained (None: no run there); a run of
    another model, objective or k than the row's stops the script."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(os.path.join(run_dir, "checkpoint.npz")):
        return None
    sys.path.insert(0, ROOT)
    from scratchvae import checkpoints
    meta = checkpoints.load_checkpoint(run_dir, optim=False)[2]
    with open(path) as f:
        config = json.load(f)
    spec = row_spec(row)
    held = {"model": config.get("model"), "objective": config.get("objective", "elbo"),
            "k": config.get("n_samples", 1)}
    if held != spec or config.get("lr_schedule") != "iwae":
        raise SystemExit(f"error: {run_dir} holds a run of {held} with the "
                         f"{config.get('lr_schedule')} schedule, not row {row} ({spec} with "
                         f"the iwae schedule); give another --out")
    return int(meta["epoch"])


def run(command, capture=False):
    """Run ``command`` with this checkout's scratchvae; its stdout when ``capture``.
    A command that fails stops the script with its exit code."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    print("$ " + shlex.join(command), flush=True)
    result = subprocess.run(command, env=env, text=True,
                            stdout=subprocess.PIPE if capture else None)
    if result.returncode:
        raise SystemExit(result.returncode)
    return result.stdout


def run_seconds(run_dir):
    """The training time of the run: the sum of its epochs' seconds (metrics.jsonl)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip().endswith("}")]
    return sum(r.get("seconds", 0.0) for r in records)


def hours(seconds):
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def write_table(base, records):
    """``base``.json (the records) and ``base``.md (their table), rows in ROWS order."""
    records = sorted(records, key=lambda r: (ROWS.index(r["row"]), r["stages"]))
    os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
    with open(base + ".json", "w") as f:
        json.dump(records, f, indent=1)
        f.write("\n")
    lines = ["## Burda et al. (2015), Table 1, on scratchvae", "",
             "| row | model | objective | k | stages (epochs) | test NLL | paper (full "
             "schedule) | training | evaluation |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        nll = f"{r['test_nll']:.2f} ± {r['test_nll_se']:.2f}"
        lines.append(f"| {r['row']} | {r['model']} | {r['objective']} | {r['k']} | "
                     f"{r['stages']} ({r['epochs']}) | {nll} | {r['paper']:.2f} | "
                     f"{hours(r['train_seconds'])} | {hours(r['eval_seconds'])} |")
    notes = sorted({f"test NLL: k = {r['iw_k']} importance samples on {r['iw_images']} "
                    f"test images" + (f"; {r['train_images']} training images"
                                      if r["train_images"] else "") for r in records})
    lines += ["", *notes, "Protocol: dynamically binarised MNIST, batch 20, Adam (eps 1e-4), "
              "3^i epochs at lr 1e-3 * 10^(-i/7) for the stages i < I "
              "(benchmarks/iwae_table.py). Training: the run's epochs, training and the "
              "test -ELBO of each; evaluation: the importance-weighted estimate.", ""]
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines))


def read_records(base):
    if not os.path.exists(base + ".json"):
        return []
    with open(base + ".json") as f:
        return json.load(f)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("row", choices=ROWS, metavar="ROW", help=", ".join(ROWS))
    parser.add_argument("--stages", type=int, default=STAGES, choices=range(1, STAGES + 1),
                        metavar="I", help="train the stages i < I of the schedule (default "
                                          "8: all 3280 epochs; 4: the 40-epoch cut)")
    parser.add_argument("--out", default=os.path.join("runs", "iwae-table"), metavar="DIR",
                        help="the runs' directory: the row's run is DIR/ROW")
    parser.add_argument("--table", default=os.path.join(HERE, "results", "iwae_table"),
                        metavar="PATH", help="the table: PATH.json and PATH.md")
    parser.add_argument("--iw-k", type=int, default=5000, metavar="K",
                        help="importance samples per test image (default 5000, the paper's)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands without running them")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    tiny = parser.add_argument_group("a tiny run (tests)")
    tiny.add_argument("--train-limit", type=int, default=0, metavar="N")
    tiny.add_argument("--test-limit", type=int, default=0, metavar="N")
    tiny.add_argument("--sample", action="store_true", help="the bundled MNIST sample")
    args = parser.parse_args(argv)
    if args.iw_k < 1 or args.train_limit < 0 or args.test_limit < 0:
        parser.error("--iw-k must be >= 1, --train-limit and --test-limit >= 0")

    run_dir = os.path.join(args.out, args.row)
    epochs = schedule_epochs(args.stages)
    trained = trained_epochs(run_dir, args.row)
    train = None if trained is not None and trained >= epochs else (
        train_command(args.row, run_dir, epochs, trained, args))
    evaluate = evaluate_command(run_dir, args)
    if args.dry_run:
        if train is None:
            print(f"# {run_dir} has trained {trained} epochs: no training")
        for command in (train, evaluate):
            if command is not None:
                print(shlex.join(command))
        return 0

    if train is not None:
        run(train)
    t0 = time.perf_counter()
    result = json.loads(run(evaluate, capture=True).strip().splitlines()[-1])
    eval_seconds = time.perf_counter() - t0
    spec = row_spec(args.row)
    record = {"row": args.row, **spec, "stages": args.stages, "epochs": result["epoch"],
              "test_nll": result["iw_nll"], "test_nll_se": result["iw_nll_se"],
              "iw_k": result["iw_k"], "iw_images": result["iw_images"],
              "test_nelbo": result["test_nelbo"], "paper": PAPER[args.row],
              "train_seconds": run_seconds(run_dir), "eval_seconds": eval_seconds,
              "train_images": args.train_limit, "run": run_dir,
              "date": datetime.date.today().isoformat()}
    records = [r for r in read_records(args.table)
               if (r["row"], r["stages"]) != (args.row, args.stages)]
    write_table(args.table, records + [record])
    print(f"{args.row} after {record['epochs']} epochs: test NLL {record['test_nll']:.2f} "
          f"± {record['test_nll_se']:.2f} (paper {record['paper']:.2f}); training "
          f"{hours(record['train_seconds'])}, evaluation {hours(eval_seconds)}; "
          f"table: {args.table}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""SHA-256 of every model's parameters after 30 training steps.

Trains each model of the command line for 30 steps of batch 128 through the
`train` command's own loop (seed 0, the data set that ``train`` finds, float32
on the CPU) and hashes the parameters of the checkpoint it writes. Two trees
that compute the same arithmetic in the same order print the same hashes, so
a refactoring that must not change behaviour is checked by running this before
and after it (``--check FILE`` compares with a saved table).

    python benchmarks/trajectory_hashes.py [--models M ...] [--threads N]
                                           [--save FILE] [--check FILE]

The hashes depend on the thread count (products are split per thread) and on
the BLAS library, so compare runs made on the same machine with the same
``--threads``.
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile

STEPS = 30
BATCH = 128
MODELS = ["mlp-vae", "conv-vae", "conv-cvae", "mlp-cvae", "vq-vae", "classifier"]


def parameter_hash(checkpoint):
    """SHA-256 over the model's arrays of a checkpoint, in name order."""
    import numpy as np

    digest = hashlib.sha256()
    with np.load(checkpoint) as npz:
        for key in sorted(k for k in npz.files if k.startswith("model/")):
            array = np.ascontiguousarray(npz[key])
            digest.update(key.encode())
            digest.update(str(array.dtype).encode() + str(array.shape).encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def run(model):
    """Train ``model`` for STEPS steps in a temporary run directory; its hash."""
    from scratchvae.config import TrainConfig
    from scratchvae.train import train

    config = TrainConfig(model=model, epochs=1, batch_size=BATCH, train_limit=STEPS * BATCH,
                         test_limit=500, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        train(config, out, progress=False, log=lambda *a, **k: None)
        return parameter_hash(os.path.join(out, "checkpoint.npz"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--threads", type=int, default=0,
                        help="NUMBA_NUM_THREADS for the run (0: Numba's default)")
    parser.add_argument("--save", help="write the hashes to this JSON file")
    parser.add_argument("--check", help="compare with the hashes in this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["NUMBA_NUM_THREADS"] = str(args.threads)
    hashes = {}
    for model in args.models:
        hashes[model] = run(model)
        print(f"{model:12s} {hashes[model]}", flush=True)
    if args.save:
        with open(args.save, "w") as f:
            json.dump(hashes, f, indent=1)
            f.write("\n")
    if args.check:
        with open(args.check) as f:
            expected = json.load(f)
        differ = [m for m in hashes if expected.get(m) != hashes[m]]
        print("identical to " + args.check if not differ else f"DIFFERENT: {differ}")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

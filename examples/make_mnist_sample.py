"""Regenerate scratchvae/sample_data/mnist-sample/ from the official MNIST files.

The bundled sample is the first 10,000 training and the first 2,000 test
examples of MNIST, cut from the official IDX files and written back as IDX
(same header layout, N changed) with deterministic gzip (no file name, mtime 0).

Usage::

    python examples/make_mnist_sample.py [--data-dir DIR] [--out DIR]

``--data-dir`` is any directory the normal lookup accepts (default: the usual
lookup order: $SCRATCHVAE_DATA, the cache, ...). The official files are verified
against their sha256 before cutting. Prints the sha256 of each decompressed
sample file; they must equal the "mnist-sample" entry of scratchvae.data.REGISTRY.
"""
import argparse
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too
from scratchvae import data  # noqa: E402

N_TRAIN, N_TEST = 10000, 2000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="directory with the official MNIST files")
    parser.add_argument("--out", default=str(data.SAMPLE_DIR / "mnist-sample"),
                        help="output directory (default: the package's sample_data/mnist-sample)")
    args = parser.parse_args()

    full = data.load_dataset("mnist", data_dir=args.data_dir, download=False, allow_sample=False)
    print(f"cutting from {full.source}")
    cut = {
        "train_images": full.train_images[:N_TRAIN],
        "train_labels": full.train_labels[:N_TRAIN].astype("uint8"),
        "test_images": full.test_images[:N_TEST],
        "test_labels": full.test_labels[:N_TEST].astype("uint8"),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = data.REGISTRY["mnist-sample"]
    ok = True
    for role, array in cut.items():
        fspec = spec.files[role]
        path = data.write_idx(out / (fspec.filename + ".gz"), array)
        digest = hashlib.sha256(data.read_bytes(path)).hexdigest()
        match = "ok" if digest == fspec.sha256 else "DIFFERS from the registry"
        ok &= digest == fspec.sha256
        print(f"{path}  {path.stat().st_size:>9} bytes gz  sha256(decompressed) {digest}  {match}")
    if not ok:
        raise SystemExit("the sample does not match scratchvae.data.REGISTRY['mnist-sample']")


if __name__ == "__main__":
    main()

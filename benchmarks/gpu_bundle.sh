#!/usr/bin/env bash
# Fill gpu_bundle/ (git-ignored) with what benchmarks/gpu_check.sh needs on a GPU
# machine that reaches no network: the MNIST files, and wheels for Python 3.12
# x86_64 of the packages that machine lacks (dask, distributed and the
# dependencies of theirs it does not have; everything else is installed there).
#
#     bash benchmarks/gpu_bundle.sh [DATA_DIR]      # DATA_DIR: default ../shared/data
#
# DATA_DIR holds mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (the layout
# SCRATCHVAE_DATA points to); they are copied to gpu_bundle/data/mnist/.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=${1:-../shared/data}
BUNDLE=gpu_bundle
MNIST="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
# pinned: the versions this project is tested with; each one's dependencies that the GPU
# machine has (click, cloudpickle, fsspec, jinja2, msgpack, packaging, psutil, pyyaml,
# sortedcontainers, toolz) are not bundled
WHEELS="dask==2026.8.0 distributed==2026.8.0 partd==1.4.2 locket==1.0.0 tblib==3.2.2 zict==3.0.0 tornado==6.6.1"

for f in $MNIST; do
    if [ ! -f "$DATA_DIR/mnist/$f" ]; then
        echo "error: $DATA_DIR/mnist/$f not found: expected DATA_DIR to hold mnist/$f" \
             "(pass the data directory as the first argument)" >&2
        exit 2
    fi
done

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/data/mnist" "$BUNDLE/wheels"
for f in $MNIST; do
    cp "$DATA_DIR/mnist/$f" "$BUNDLE/data/mnist/"
done

# shellcheck disable=SC2086  # WHEELS is a list
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$BUNDLE/wheels" $WHEELS

echo "gpu_bundle/: $(du -sh "$BUNDLE" | cut -f1)"
ls -1 "$BUNDLE/wheels" "$BUNDLE/data/mnist"

"""The data sets: their files, shapes, checksums and mirrors, and the check of a file.

A file is used only if its header is valid, its length matches the header
exactly, and the sha256 of its *decompressed* bytes equals the registry's value
(some mirrors recompress the archives, so the gzip bytes themselves are not a
stable key): :func:`load_verified`.
"""
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .idx import IMAGES_MAGIC, LABELS_MAGIC, DataError, idx_decode, read_bytes

#: the four files of a data set, by role
ROLES = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class FileSpec:
    """One IDX file of a data set; ``sha256`` and ``nbytes`` are of the decompressed bytes."""
    filename: str      # name without ``.gz``
    shape: tuple       # array shape, e.g. (60000, 28, 28)
    nbytes: int        # decompressed size: header + payload
    sha256: str
    gz_md5: str = ""   # md5 of the gzip archive as the mirrors publish it (informative)

    @property
    def magic(self):
        return IMAGES_MAGIC if len(self.shape) == 3 else LABELS_MAGIC


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    files: dict                       # role -> FileSpec
    mirrors: tuple = ()               # base URLs; a file is fetched from <mirror><filename>.gz
    citation: str = ""
    licence: str = ""
    homepage: str = ""
    classes: tuple = field(default=())


def _files(n_train, n_test, sums):
    """FileSpecs of a 28x28 uint8 set; ``sums[role] = (sha256, gz_md5)``."""
    shapes = {"train_images": (n_train, 28, 28), "train_labels": (n_train,),
              "test_images": (n_test, 28, 28), "test_labels": (n_test,)}
    names = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
    out = {}
    for role in ROLES:
        shape = shapes[role]
        nbytes = 4 + 4 * len(shape) + int(np.prod(shape))
        out[role] = FileSpec(names[role], shape, nbytes, *sums[role])
    return out


REGISTRY = {
    "mnist": DatasetSpec(
        name="mnist",
        files=_files(60000, 10000, {
            "train_images": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                             "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            "train_labels": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                             "d53e105ee54ea40749a09fcbcd1e9432"),
            "test_images": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                            "9fb629c4189551a2d022fa330f9573f3"),
            "test_labels": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                            "ec29112dd5afa0611ce80d1b7f02629c"),
        }),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        citation="Y. LeCun, C. Cortes, C. J. C. Burges, The MNIST database of handwritten digits",
        licence="CC BY-SA 3.0",
        homepage="http://yann.lecun.com/exdb/mnist/",
        classes=tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        files=_files(60000, 10000, {
            "train_images": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                             "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            "train_labels": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                             "25c81989df183df01b3e8a0aad5dffbe"),
            "test_images": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                            "bef4ecab320f06d8554ea6380940ec79"),
            "test_labels": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                            "bb300cfdad3c16e7a12a480ee83cd310"),
        }),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        citation="H. Xiao, K. Rasul, R. Vollgraf, Fashion-MNIST: a Novel Image Dataset for "
                 "Benchmarking Machine Learning Algorithms, arXiv:1708.07747 (2017)",
        licence="MIT",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    # The first 10,000 training and 2,000 test examples of the official MNIST files,
    # shipped in scratchvae/sample_data/mnist-sample/ (see the README there).
    "mnist-sample": DatasetSpec(
        name="mnist-sample",
        files=_files(10000, 2000, {
            "train_images": ("2889698e6bc3614913e76901316712919d1998fc2b44512451bfe65bc1e668b1", ""),
            "train_labels": ("651e38e2ac0632f5113ec18f1df4977117f953197819034009971a6675a0df78", ""),
            "test_images": ("3f6bd66dee48df299584c67669bceee490faa25f931496bd7473b42106d7daed", ""),
            "test_labels": ("7b098e5f6a3065807cebeabf36fb1724a8aff19f2673ac08b4923e0e8c715bce", ""),
        }),
        citation="Y. LeCun, C. Cortes, C. J. C. Burges, The MNIST database of handwritten digits",
        licence="CC BY-SA 3.0",
        homepage="http://yann.lecun.com/exdb/mnist/",
        classes=tuple(str(d) for d in range(10)),
    ),
}

#: data sets that :func:`~scratchvae.data.sources.load_dataset` can find or download
FULL_DATASETS = ("mnist", "fashion-mnist")
#: the package's bundled sample(s): data set name -> registry entry
SAMPLES = {"mnist": "mnist-sample"}


def get_spec(name):
    """The registry entry of ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; expected one of "
                         + ", ".join(repr(n) for n in REGISTRY)) from None


# --------------------------------------------------------------------------
# verifying one file
# --------------------------------------------------------------------------

def find_file(directory, filename):
    """``directory/filename.gz`` or ``directory/filename``, whichever exists first, or None."""
    for candidate in (Path(directory) / (filename + ".gz"), Path(directory) / filename):
        if candidate.is_file():
            return candidate
    return None


def load_verified(path, spec):
    """Read the IDX file ``path`` and check it against ``spec`` (a :class:`FileSpec`).

    Order of checks: gzip integrity, IDX magic and exact length, the shape
    from the registry, then the sha256 of the decompressed bytes. Any failure
    is a :class:`DataError` naming the file. Returns the uint8 array.
    """
    raw = read_bytes(path)
    array = idx_decode(raw, source=str(path), expect_magic=spec.magic)
    if array.shape != spec.shape:
        raise DataError(f"{path}: wrong dimensions {array.shape}, expected {spec.shape} "
                        f"for {spec.filename}")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != spec.sha256:
        raise DataError(f"{path}: checksum mismatch: sha256 of the decompressed bytes is "
                        f"{digest}, expected {spec.sha256} ({spec.filename}). The file is "
                        f"damaged or a different file; replace or delete it")
    return array

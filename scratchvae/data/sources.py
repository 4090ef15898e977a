"""Where the data sets are found: the lookup order, the bundled sample, :func:`load_dataset`.

A directory named explicitly, the ``data_dir`` argument (``--data-dir`` on
the command line), is the only place looked: it must hold all four files, or
:class:`DataNotFoundError` names those missing. Otherwise the files are looked
for, in order (the first directory holding all four files wins; within a root
both ``<root>/<name>/<file>`` and ``<root>/<file>`` are accepted, each file
gzipped (``.gz``) or not):

1. ``recorded_dir``: where a saved run found its data (its config.json),
2. ``$SCRATCHVAE_DATA``: it must be a directory, and a data set it holds in
   part (some files, not all) is an error, never passed over,
3. the user cache: ``$SCRATCHVAE_CACHE``, else ``$XDG_CACHE_HOME/scratchvae``,
   else ``~/.cache/scratchvae``,
4. ``/usr/share/datasets/<name>`` (Debian's ``dataset-fashion-mnist`` package),
5. a download from the registry's mirrors into the cache (:mod:`.download`).

If all of this fails, :func:`load_dataset` falls back (for MNIST) to a small
sample bundled with the package: the first 10,000 training and 2,000 test
images of the official files. Every file is verified against the registry
(:func:`~scratchvae.data.registry.load_verified`) before it is used.
"""
import os
from pathlib import Path

import numpy as np

from . import download as _download
from .download import DataNotFoundError, absolute, cache_dir
from .registry import FULL_DATASETS, REGISTRY, ROLES, SAMPLES, find_file, get_spec, load_verified


#: where the bundled samples live
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"
#: system-wide data directory (Debian's dataset-* packages); a module constant so tests can move it
SYSTEM_DATA_DIR = Path("/usr/share/datasets")


# --------------------------------------------------------------------------
# a data set's files in one directory
# --------------------------------------------------------------------------

def dataset_files(directory, name):
    """role -> path of each file of ``name`` found in ``directory`` (possibly incomplete)."""
    spec = get_spec(name)
    found = {}
    for role, fspec in spec.files.items():
        path = find_file(directory, fspec.filename)
        if path is not None:
            found[role] = path
    return found


def load_directory(directory, name):
    """The four verified arrays of ``name`` from ``directory``: role -> array."""
    spec = get_spec(name)
    files = dataset_files(directory, name)
    missing = [spec.files[r].filename for r in ROLES if r not in files]
    if missing:
        raise DataNotFoundError(f"{directory}: missing {', '.join(missing)} (.gz or raw) "
                                f"of data set {name!r}")
    return {role: load_verified(files[role], spec.files[role]) for role in ROLES}


# --------------------------------------------------------------------------
# where to look
# --------------------------------------------------------------------------

#: the labels of the roots, as the places looked at name them
DATA_DIR, ENV_DATA, RECORDED = "--data-dir", "$SCRATCHVAE_DATA", "recorded data_dir"


def search_roots(data_dir=None, recorded_dir=None):
    """The root directories searched, in order, as ``(label, path)`` pairs.

    A ``data_dir`` named explicitly is the only root. Otherwise: ``recorded_dir``
    (where a saved run found its data), ``$SCRATCHVAE_DATA``, the user cache and
    the system directory.
    """
    if data_dir is not None:
        return [(DATA_DIR, absolute(data_dir))]
    roots = []
    if recorded_dir is not None:
        roots.append((RECORDED, absolute(recorded_dir)))
    if os.environ.get("SCRATCHVAE_DATA"):
        roots.append((ENV_DATA, absolute(os.environ["SCRATCHVAE_DATA"])))
    roots.append(("user cache", cache_dir()))
    roots.append(("system", Path(SYSTEM_DATA_DIR)))
    return roots


def locate_dataset(name, data_dir=None, recorded_dir=None):
    """Find a directory that holds all four files of ``name``.

    Returns ``(directory or None, places)`` where ``places`` lists every
    directory looked at, in order, as ``"<dir> (<where from>: <what was found>)"``.
    Only existence is checked here; :func:`load_directory` verifies contents.

    A root the user named is never passed over: a ``data_dir`` that does not
    hold all four files, a ``$SCRATCHVAE_DATA`` that is not a directory or holds
    some of the files but not all, raises :class:`DataNotFoundError` naming
    what is missing. (``$SCRATCHVAE_DATA`` may lack a data set entirely: it
    names a directory of several, and the search goes on.)
    """
    spec = get_spec(name)
    places = []
    for label, root in search_roots(data_dir, recorded_dir):
        found = {directory: dataset_files(directory, name) for directory in (root / name, root)}
        for directory, files in found.items():
            if len(files) == len(ROLES):
                places.append(f"{directory} ({label}: all files found)")
                return directory, places
            if files:
                missing = ", ".join(spec.files[r].filename for r in ROLES if r not in files)
                note = f"incomplete, missing {missing}"
            else:
                note = "not here" if directory.is_dir() else "no such directory"
            places.append(f"{directory} ({label}: {note})")
        if label == DATA_DIR or (label == ENV_DATA and (not root.is_dir()
                                                        or any(found.values()))):
            raise DataNotFoundError(_named_root_problem(name, label, root, found))
    return None, places


def _named_root_problem(name, label, root, found):
    """What is wrong with a root the user named (``found``: directory -> files of
    ``name`` in it), and how to fix it."""
    spec = get_spec(name)
    if not root.exists():
        what = f"{label} {root} does not exist"
    elif not root.is_dir():
        what = f"{label} {root} is not a directory"
    elif not any(found.values()):
        what = f"{label} {root} holds none of its files (neither in {root / name} nor in {root})"
    else:
        directory, files = max(found.items(), key=lambda item: len(item[1]))
        missing = ", ".join(spec.files[r].filename + "[.gz]" for r in ROLES if r not in files)
        what = (f"{label} {root} is incomplete: {directory} holds {len(files)} of its "
                f"{len(ROLES)} files, missing {missing}")
    expected = (f"The {name} files are " + ", ".join(f.filename + "[.gz]"
                                                      for f in spec.files.values())
                + f", as DIR/{name}/<file> or DIR/<file>.")
    if label == DATA_DIR:
        fix = ("A directory named by --data-dir (data_dir=) is the only place looked: correct "
               "it, complete its files, or leave it out to search $SCRATCHVAE_DATA, the cache "
               "and the system directory (and to --download into the cache).")
    else:
        fix = "Correct or unset $SCRATCHVAE_DATA, or complete its files."
    return f"{name} not found: {what}.\n{expected}\n{fix}"


# --------------------------------------------------------------------------
# the Dataset and load_dataset
# --------------------------------------------------------------------------

class Dataset:
    """Images and labels of one data set, on the host.

    ``train_images`` uint8 (N, 28, 28), ``train_labels`` int64 (N,), same for
    ``test_*``; ``name`` e.g. ``'mnist'``; ``source`` the directory read, or
    ``'bundled sample'``; ``is_sample`` True for the bundled sample.
    """

    def __init__(self, name, train_images, train_labels, test_images, test_labels,
                 source, is_sample=False):
        for split, x, y in (("train", train_images, train_labels),
                            ("test", test_images, test_labels)):
            if x.dtype != np.uint8 or x.ndim != 3:
                raise ValueError(f"Dataset: expected {split}_images uint8 (N, H, W), "
                                 f"got {x.dtype} {x.shape}")
            if y.shape != (x.shape[0],):
                raise ValueError(f"Dataset: expected {split}_labels of shape ({x.shape[0]},), "
                                 f"got {y.shape}")
        self.name = name
        self.train_images = train_images
        self.train_labels = train_labels.astype(np.int64)
        self.test_images = test_images
        self.test_labels = test_labels.astype(np.int64)
        self.source = str(source)
        self.is_sample = bool(is_sample)

    def __repr__(self):
        sample = ", sample" if self.is_sample else ""
        return (f"Dataset({self.name!r}{sample}: {len(self.train_images)} train, "
                f"{len(self.test_images)} test, from {self.source})")


def _dataset_from(name, arrays, source, is_sample=False):
    return Dataset(name, arrays["train_images"], arrays["train_labels"],
                   arrays["test_images"], arrays["test_labels"], source, is_sample)


def load_sample(name="mnist"):
    """The sample of ``name`` bundled with the package (checksums verified)."""
    if name not in SAMPLES:
        raise ValueError(f"no bundled sample of {name!r}; samples exist for "
                         + ", ".join(repr(n) for n in SAMPLES))
    key = SAMPLES[name]
    arrays = load_directory(SAMPLE_DIR / key, key)
    return _dataset_from(name, arrays, "bundled sample", is_sample=True)


def _offline():
    return os.environ.get("SCRATCHVAE_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _how_to(name):
    spec = get_spec(name)
    names = ", ".join(f.filename + "[.gz]" for f in spec.files.values())
    return (f"To provide the {name} files ({names}):\n"
            f"  - download them (needs the network): pass --download (download=True);\n"
            f"    they go to {cache_dir() / name}\n"
            f"  - or point at a directory holding them: --data-dir DIR or "
            f"export SCRATCHVAE_DATA=DIR\n"
            f"    (as DIR/{name}/<file> or DIR/<file>, gzipped or not)\n"
            f"  - or fetch them by hand from {spec.mirrors[0] if spec.mirrors else spec.homepage}")


def load_dataset(name="mnist", data_dir=None, download="auto", allow_sample=True,
                 progress=True, log=print, recorded_dir=None):
    """Load a data set, from disk if possible, else by download, else (MNIST) the sample.

    ``download``:

    - ``"auto"``: use local files (see the module docstring for the order);
      if none, try the mirrors (giving up within a few seconds when offline);
      if that fails too and ``name == 'mnist'`` and ``allow_sample``, return
      the bundled sample and say so through ``log``. ``$SCRATCHVAE_OFFLINE=1``
      makes ``"auto"`` behave like ``False``.
    - ``True``: the full set is required: download it if it is not found,
      raise :class:`DataNotFoundError` if that is impossible (no sample).
    - ``False``: never touch the network; fall back to the sample as in ``"auto"``.

    ``data_dir``: the only directory looked in, which must hold all four files
    (else :class:`DataNotFoundError` naming those missing, whatever ``download``);
    ``recorded_dir``: a directory looked in first, passed over if it does not
    hold the set (a saved run's record of where its data were found).
    A file that is found but fails verification raises :class:`DataError`.
    ``log`` (``None`` to silence) receives plain-text progress messages.
    """
    if name in SAMPLES.values():
        return load_sample(next(k for k, v in SAMPLES.items() if v == name))
    if name not in FULL_DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of "
                         + ", ".join(repr(n) for n in FULL_DATASETS))
    if download != "auto":
        if isinstance(download, str) or download not in (True, False):
            raise ValueError(f"load_dataset: download must be 'auto', True or False, "
                             f"got {download!r}")
        download = bool(download)
    log = log or (lambda *a, **k: None)

    directory, places = locate_dataset(name, data_dir, recorded_dir)
    if directory is not None:
        return _dataset_from(name, load_directory(directory, name), directory)

    if download == "auto" and _offline():
        why = "offline mode ($SCRATCHVAE_OFFLINE is set)"
    elif download is False:
        why = "downloading is disabled (download=False)"
    else:
        spec = REGISTRY[name]
        mirrors = _download.reachable_mirrors(spec.mirrors)
        if not mirrors:
            why = "no download mirror is reachable (offline?): " + ", ".join(spec.mirrors)
        else:
            dest = cache_dir() / name
            log(f"{name} not found locally; downloading into {dest}")
            try:
                directory = _download.download_dataset(name, dest, mirrors, progress=progress,
                                                       log=None)
            except (DataNotFoundError, OSError) as e:
                why = f"the download failed: {e}"
            else:
                return _dataset_from(name, load_directory(directory, name), directory)

    if download is not True and allow_sample and name in SAMPLES:
        ds = load_sample(name)
        log(f"Using the bundled {name.upper()} sample ({len(ds.train_images):,} training / "
            f"{len(ds.test_images):,} test images, the first ones of the official files) "
            f"because the full set was not found locally and {why}.\n"
            f"For the full set (60,000 / 10,000): pass --download, or --data-dir DIR, "
            f"or set SCRATCHVAE_DATA=DIR to a directory holding the four IDX files.")
        return ds

    raise DataNotFoundError(f"could not find the {name} data set.\nLooked in:\n  - "
                            + "\n  - ".join(places)
                            + f"\nNot downloaded: {why}.\n" + _how_to(name))

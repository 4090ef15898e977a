"""Where the data sets are found: the lookup order, the download, the bundled sample.

Where the files are looked for, in order (the first directory holding all four
files wins; within a root both ``<root>/<name>/<file>`` and ``<root>/<file>``
are accepted, each file gzipped (``.gz``) or not):

1. the ``data_dir`` argument (``--data-dir`` on the command line),
2. ``$SCRATCHVAE_DATA``,
3. the user cache: ``$SCRATCHVAE_CACHE``, else ``$XDG_CACHE_HOME/scratchvae``,
   else ``~/.cache/scratchvae``,
4. ``/usr/share/datasets/<name>`` (Debian's ``dataset-fashion-mnist`` package),
5. a download from the registry's mirrors into the cache.

If all of this fails, :func:`load_dataset` falls back (for MNIST) to a small
sample bundled with the package: the first 10,000 training and 2,000 test
images of the official files. Every file is verified against the registry
(:func:`~scratchvae.data.registry.load_verified`) before it is used.
"""
import http.client
import os
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from ..files import atomic_write
from .idx import DataError
from .registry import FULL_DATASETS, REGISTRY, ROLES, SAMPLES, get_spec, load_verified


class DataNotFoundError(FileNotFoundError):
    """A data set could not be found locally nor downloaded."""


#: where the bundled samples live
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"
#: system-wide data directory (Debian's dataset-* packages); a module constant so tests can move it
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
#: seconds a network connection may stall before a mirror is given up
DOWNLOAD_TIMEOUT = 10.0
#: seconds to decide whether any mirror is reachable at all
PROBE_TIMEOUT = 3.0


# --------------------------------------------------------------------------
# a data set's files in one directory
# --------------------------------------------------------------------------

def _find_file(directory, filename):
    """``directory/filename.gz`` or ``directory/filename``, whichever exists first, or None."""
    for candidate in (directory / (filename + ".gz"), directory / filename):
        if candidate.is_file():
            return candidate
    return None


def dataset_files(directory, name):
    """role -> path of each file of ``name`` found in ``directory`` (possibly incomplete)."""
    spec = get_spec(name)
    found = {}
    for role, fspec in spec.files.items():
        path = _find_file(Path(directory), fspec.filename)
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

def cache_dir():
    """The user cache directory.

    ``$SCRATCHVAE_CACHE``, else ``$XDG_CACHE_HOME/scratchvae``, else ``~/.cache/scratchvae``.
    """
    if os.environ.get("SCRATCHVAE_CACHE"):
        return _absolute(os.environ["SCRATCHVAE_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return _absolute(os.environ["XDG_CACHE_HOME"]) / "scratchvae"
    return Path.home() / ".cache" / "scratchvae"


def _absolute(path):
    """``path`` with ``~`` expanded, made absolute and normalised (symlinks kept)."""
    return Path(os.path.abspath(os.path.expanduser(path)))


def search_roots(data_dir=None):
    """The root directories searched, in order, as ``(label, path)`` pairs."""
    roots = []
    if data_dir is not None:
        roots.append(("data_dir / --data-dir", _absolute(data_dir)))
    if os.environ.get("SCRATCHVAE_DATA"):
        roots.append(("$SCRATCHVAE_DATA", _absolute(os.environ["SCRATCHVAE_DATA"])))
    roots.append(("user cache", cache_dir()))
    roots.append(("system", Path(SYSTEM_DATA_DIR)))
    return roots


def locate_dataset(name, data_dir=None):
    """Find a directory that holds all four files of ``name``.

    Returns ``(directory or None, places)`` where ``places`` lists every
    directory looked at, in order, as ``"<dir> (<where from>: <what was found>)"``.
    Only existence is checked here; :func:`load_directory` verifies contents.
    """
    spec = get_spec(name)
    places = []
    for label, root in search_roots(data_dir):
        for directory in (root / name, root):
            files = dataset_files(directory, name)
            if len(files) == len(ROLES):
                places.append(f"{directory} ({label}: all files found)")
                return directory, places
            if files:
                missing = ", ".join(spec.files[r].filename for r in ROLES if r not in files)
                note = f"incomplete, missing {missing}"
            else:
                note = "not here" if directory.is_dir() else "no such directory"
            places.append(f"{directory} ({label}: {note})")
    return None, places


# --------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------

def _probe(url, timeout):
    """True if ``url``'s host (or the proxy for it) accepts a TCP connection within ``timeout``.

    Runs in a daemon thread so that a hanging DNS lookup cannot stall the caller.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return True  # file:// and friends: let urlopen report
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
        host, port = p.hostname, p.port or 80
    result = []

    def attempt():
        import socket
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            pass

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result)


def reachable_mirrors(mirrors, timeout=PROBE_TIMEOUT):
    """The mirrors whose host answers within ``timeout`` seconds (probed in parallel)."""
    results = [None] * len(mirrors)

    def check(i, m):
        results[i] = _probe(m, timeout)

    threads = [threading.Thread(target=check, args=(i, m), daemon=True)
               for i, m in enumerate(mirrors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 0.5)
    return [m for m, ok in zip(mirrors, results) if ok]


def _fetch(url, dest_path, fspec, progress, timeout):
    """Download ``url`` to ``dest_path`` atomically; the file is verified against
    ``fspec`` before it takes the final name, so no partial or unverified file
    ever bears it."""
    from tqdm import tqdm

    def download(f):
        with urllib.request.urlopen(url, timeout=timeout) as r:
            total = r.headers.get("Content-Length")
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                      unit_divisor=1024, desc=dest_path.name, disable=not progress,
                      leave=False) as bar:
                received = 0
                while True:
                    chunk = r.read(1 << 16)
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total and received != int(total):
            raise DataError(f"incomplete download: the connection ended after {received} "
                            f"of {total} bytes")

    atomic_write(dest_path, download, check=lambda tmp: load_verified(tmp, fspec))


def download_dataset(name, dest=None, mirrors=None, progress=True, timeout=DOWNLOAD_TIMEOUT,
                     log=None):
    """Download the four files of ``name`` into ``dest`` (default: ``cache_dir()/name``).

    Each file is fetched as ``<mirror><filename>.gz``, trying the mirrors in
    order; a mirror that fails (network error, corrupt or wrong file) is
    skipped for the next. A file is written to a temp file in ``dest``,
    verified (decompressed sha256), and only then renamed into place, so no
    partial or unverified file is ever left under the final name. Files already
    in ``dest`` that verify are kept. Returns ``dest``; raises
    :class:`DataNotFoundError` listing every attempt if a file cannot be had.
    """
    spec = get_spec(name)
    mirrors = tuple(spec.mirrors if mirrors is None else mirrors)
    if not mirrors:
        raise DataNotFoundError(f"data set {name!r} has no download mirrors")
    dest = Path(cache_dir() / name if dest is None else dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    for role in ROLES:
        fspec = spec.files[role]
        existing = _find_file(dest, fspec.filename)
        if existing is not None:
            try:
                load_verified(existing, fspec)
                continue
            except DataError as e:
                if log:
                    log(f"{e}; downloading it again")
        target = dest / (fspec.filename + ".gz")
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + fspec.filename + ".gz"
            if log:
                log(f"downloading {url}")
            try:
                _fetch(url, target, fspec, progress, timeout)
            except (OSError, DataError, http.client.HTTPException) as e:
                # URLError, HTTPError and timeouts are OSErrors; IncompleteRead is an HTTPException
                errors.append(f"{url}: {e}")
                continue
            if existing is not None and existing != target:
                existing.unlink(missing_ok=True)  # the raw, corrupt copy would shadow nothing but confuse
            break
        else:
            raise DataNotFoundError(f"could not download {fspec.filename} of {name!r}:\n  "
                                    + "\n  ".join(errors))
    return dest


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
                 progress=True, log=print):
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

    directory, places = locate_dataset(name, data_dir)
    if directory is not None:
        return _dataset_from(name, load_directory(directory, name), directory)

    if download == "auto" and _offline():
        why = "offline mode ($SCRATCHVAE_OFFLINE is set)"
    elif download is False:
        why = "downloading is disabled (download=False)"
    else:
        spec = REGISTRY[name]
        mirrors = reachable_mirrors(spec.mirrors)
        if not mirrors:
            why = "no download mirror is reachable (offline?): " + ", ".join(spec.mirrors)
        else:
            dest = cache_dir() / name
            log(f"{name} not found locally; downloading into {dest}")
            try:
                directory = download_dataset(name, dest, mirrors, progress=progress, log=None)
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

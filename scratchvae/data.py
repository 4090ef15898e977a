"""Data layer: IDX files, the MNIST / Fashion-MNIST registry, lookup, download, batches.

The data sets are stored in the IDX format of LeCun et al.: a big-endian header
followed by the raw array, usually gzip-compressed::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 = uint8 (the only one MNIST uses), 0x09 int8,
                0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    4 .. 4+4d   the d sizes, each a big-endian uint32
    then        prod(sizes) elements, big-endian, C order

so an MNIST image file starts with the magic number 0x00000803 (uint8, 3 dims:
N, 28, 28) and a label file with 0x00000801 (uint8, 1 dim: N). A file is used
only if its header is valid, its length matches the header exactly, and the
sha256 of its *decompressed* bytes equals the registry's value (some mirrors
recompress the archives, so the gzip bytes themselves are not a stable key).

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
images of the official files.

Batches: :class:`BatchIterator` walks a data set in a random order drawn from an
explicit ``numpy.random.Generator``, optionally with dynamic binarization
(each pixel intensity p in [0, 1] is replaced by a fresh Bernoulli(p) draw).
"""
import gzip
import hashlib
import http.client
import os
import struct
import tempfile
import threading
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backend import check_float, get_xp, to_device


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------

class DataError(ValueError):
    """A data file exists but is corrupt, truncated, or not the expected file."""


class DataNotFoundError(FileNotFoundError):
    """A data set could not be found locally nor downloaded."""


# --------------------------------------------------------------------------
# IDX format
# --------------------------------------------------------------------------

#: magic number of an MNIST image file: uint8 elements, 3 dimensions (N, rows, cols)
IMAGES_MAGIC = 0x00000803
#: magic number of an MNIST label file: uint8 elements, 1 dimension (N,)
LABELS_MAGIC = 0x00000801

#: IDX element type code -> big-endian NumPy dtype
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_CODES = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"


def idx_encode(array):
    """The IDX bytes (header + big-endian payload) of ``array``.

    ``array`` may have any dtype listed in :data:`IDX_TYPES` and 1 to 255 dims.
    """
    a = np.asarray(array)
    native = a.dtype.newbyteorder("=")
    if native not in _TYPE_CODES:
        raise ValueError(f"idx_encode: dtype {a.dtype} has no IDX type code; expected one of "
                         + ", ".join(str(t.newbyteorder("=")) for t in IDX_TYPES.values()))
    if not 1 <= a.ndim <= 255:
        raise ValueError(f"idx_encode: expected 1 to 255 dimensions, got {a.ndim}")
    code = _TYPE_CODES[native]
    header = struct.pack(">BBBB", 0, 0, code, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    payload = np.ascontiguousarray(a, dtype=IDX_TYPES[code]).tobytes()
    return header + payload


#: the advice that ends the message of a truncated file
CUT_SHORT = "The file is damaged (a copy or download cut short?); replace or delete it"


def idx_decode(raw, source="<bytes>", expect_magic=None):
    """Parse IDX bytes into a native-endian NumPy array (a fresh, writable copy).

    Checks, raising :class:`DataError` naming ``source`` on failure:
    the two leading zero bytes, a known type code, the magic number
    ``expect_magic`` if given, and that the length is *exactly*
    header + prod(dims) * itemsize (a truncated file or trailing garbage is refused).
    """
    if len(raw) < 4:
        raise DataError(f"{source}: not an IDX file: only {len(raw)} bytes, "
                        f"too short for the 4-byte magic number")
    magic = struct.unpack(">I", raw[:4])[0]
    zero, code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    want = "" if expect_magic is None else f" (expected 0x{expect_magic:08x})"
    if zero != 0 or code not in IDX_TYPES or ndim == 0:
        raise DataError(f"{source}: not an IDX file: bad magic number 0x{magic:08x}{want}")
    if expect_magic is not None and magic != expect_magic:
        raise DataError(f"{source}: wrong IDX magic number 0x{magic:08x}{want}: "
                        f"type 0x{code:02x} with {ndim} dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{source}: truncated IDX header: {ndim} dimensions need "
                        f"{header_len} header bytes, file has {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    dtype = IDX_TYPES[code]
    expected = header_len + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(f"{source}: {what}: header says shape {dims} of {dtype.newbyteorder('=')} "
                        f"= {expected} bytes in all, the (decompressed) file has {len(raw)}. "
                        + CUT_SHORT)
    flat = np.frombuffer(raw, dtype=dtype, offset=header_len)
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def read_bytes(path):
    """The bytes of ``path``, gunzipped if the file starts with the gzip magic."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
            raise DataError(f"{path}: corrupt or truncated gzip data ({e}). "
                            + CUT_SHORT) from None
    return raw


def read_idx(path, expect_magic=None):
    """Read an IDX file (gzip or raw) into a NumPy array; see :func:`idx_decode`."""
    return idx_decode(read_bytes(path), source=str(path), expect_magic=expect_magic)


def write_idx(path, array, compress=None):
    """Write ``array`` as an IDX file, atomically (temp file + ``os.replace``).

    ``compress=None`` gzips when the name ends in ``.gz``. The gzip stream has
    no file name and mtime 0, so the same array always gives the same bytes.
    Returns the path.
    """
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    data = idx_encode(array)
    if compress:
        data = gzip.compress(data, compresslevel=9, mtime=0)
    _atomic_write(path, data)
    return path


def _temp_beside(path):
    """A new temp file next to ``path`` (same file system, so ``os.replace`` is atomic).

    ``mkstemp`` creates it with mode 0600; data files are not secret, so make it 0644.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.chmod(tmp, 0o644)
    return fd, tmp


def _atomic_write(path, data):
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------

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

#: data sets that :func:`load_dataset` can find or download
FULL_DATASETS = ("mnist", "fashion-mnist")
#: the package's bundled sample(s): data set name -> registry entry
SAMPLES = {"mnist": "mnist-sample"}
#: where the bundled samples live
SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"
#: system-wide data directory (Debian's dataset-* packages); a module constant so tests can move it
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
#: seconds a network connection may stall before a mirror is given up
DOWNLOAD_TIMEOUT = 10.0
#: seconds to decide whether any mirror is reachable at all
PROBE_TIMEOUT = 3.0


def get_spec(name):
    """The registry entry of ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; expected one of "
                         + ", ".join(repr(n) for n in REGISTRY)) from None


# --------------------------------------------------------------------------
# loading and verifying one file / one directory
# --------------------------------------------------------------------------

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
    """Download ``url`` to ``dest_path`` via a temp file; verify; ``os.replace`` into place."""
    from tqdm import tqdm

    fd, tmp = _temp_beside(dest_path)
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
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
        load_verified(tmp, fspec)
        os.replace(tmp, dest_path)
    except BaseException:
        _unlink(tmp)
        raise


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
                _unlink(existing)  # the raw, corrupt copy would shadow nothing but confuse
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


# --------------------------------------------------------------------------
# arrays for training
# --------------------------------------------------------------------------

def images_to_float(images, dtype=np.float32):
    """uint8 images (N, H, W) -> float (N, 1, H, W) in [0, 1]: x / 255.

    Works on NumPy or CuPy arrays (the result lives where the input does).
    """
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (
            images.ndim == 4 and images.shape[1] != 1):
        raise ValueError(f"images_to_float: expected uint8 images of shape (N, H, W) or "
                         f"(N, 1, H, W), got {images.dtype} {tuple(images.shape)}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"images_to_float: expected dtype float32 or float64, got {dtype}")
    x = images.reshape(images.shape[0], 1, images.shape[-2], images.shape[-1])
    return x.astype(dtype) / dtype.type(255)


class BatchIterator:
    """Mini-batches of ``(x, y)``; each ``iter()`` is one epoch.

    ``x``: float (N, 1, H, W) in [0, 1] (NumPy or CuPy); ``y``: (N,) or None.
    With ``shuffle`` the epoch's order is ``rng.permutation(N)``, so a seeded
    generator gives the same batches every run; every index appears exactly
    once per epoch. With ``binarize`` (dynamic binarization) each batch is
    replaced by ``(rng.random(xb.shape) < xb).astype(xb.dtype)``: pixel value
    p becomes 1 with probability p, drawn fresh for every batch from the same
    ``rng``. With ``shift`` = s > 0 (data augmentation, for a classifier)
    each image is translated by its own (dy, dx), both drawn uniformly from
    {-s, ..., s}, the uncovered border filled with 0 (see :func:`random_shift`).
    The last, smaller batch is kept unless ``drop_last``.
    ``len()`` is ceil(N / batch_size), or floor(N / batch_size) with ``drop_last``.
    """

    def __init__(self, x, y, batch_size, rng=None, shuffle=True, binarize=False,
                 drop_last=False, shift=0):
        n = x.shape[0]
        if y is not None and y.shape[:1] != (n,):
            raise ValueError(f"BatchIterator: expected y with {n} rows (one per x), "
                             f"got shape {tuple(y.shape)}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"BatchIterator: expected a positive integer batch_size, "
                             f"got {batch_size!r}")
        if not isinstance(shift, (int, np.integer)) or shift < 0:
            raise ValueError(f"BatchIterator: expected an integer shift >= 0, got {shift!r}")
        if rng is None and (shuffle or binarize or shift):
            raise ValueError("BatchIterator: shuffle/binarize/shift need an explicit random "
                             "generator, e.g. rng=backend.new_rng(seed)")
        if binarize:
            check_float("BatchIterator", "x (to binarize)", x)
        self.x, self.y, self.batch_size = x, y, int(batch_size)
        self.rng, self.shuffle, self.binarize, self.drop_last = rng, shuffle, binarize, drop_last
        self.shift = int(shift)

    def __len__(self):
        n, b = self.x.shape[0], self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        xp = get_xp(self.x)
        n = self.x.shape[0]
        order = self.rng.permutation(n) if self.shuffle else np.arange(n)
        for k in range(len(self)):
            idx = order[k * self.batch_size:(k + 1) * self.batch_size]   # host indices
            xb = self.x[idx if xp is np else xp.asarray(idx)]
            # labels stay where they are, indexed with the host indices (a device
            # index would need an implicit device-to-host copy for host labels)
            yb = None if self.y is None else self.y[idx]
            if self.shift:
                xb = random_shift(xb, self.shift, self.rng)
            if self.binarize:
                u = to_device(self.rng.random(xb.shape), xp)
                xb = (u < xb).astype(xb.dtype)
            yield xb, yb


def random_shift(x, s, rng):
    """Translate each image of x (N, C, H, W) by its own random (dy, dx).

    dy and dx are drawn uniformly from {-s, ..., s} (two integers per image,
    from ``rng``): out[n, :, h, w] = x[n, :, h - dy_n, w - dx_n], 0 where that
    pixel lies outside the image. Done on a zero-padded copy, one slice per
    distinct offset (at most (2s+1)^2 of them).
    """
    if x.ndim != 4:
        raise ValueError(f"random_shift: expected images (N, C, H, W), got shape {tuple(x.shape)}")
    xp = get_xp(x)
    n, _, H, W = x.shape
    offsets = rng.integers(-s, s + 1, size=(n, 2))
    padded = xp.zeros(x.shape[:2] + (H + 2 * s, W + 2 * s), dtype=x.dtype)
    padded[:, :, s:s + H, s:s + W] = x
    out = xp.empty_like(x)
    for dy, dx in np.unique(offsets, axis=0):
        rows = np.flatnonzero((offsets[:, 0] == dy) & (offsets[:, 1] == dx))
        if xp is not np:
            rows = xp.asarray(rows)
        top, left = s - dy, s - dx          # out[h] = x[h - dy] = padded[h - dy + s]
        out[rows] = padded[rows, :, top:top + H, left:left + W]
    return out


def iterate_batches(x, y, batch_size, rng=None, shuffle=True, binarize=False, drop_last=False,
                    shift=0):
    """A :class:`BatchIterator` over ``(x, y)``; see there."""
    return BatchIterator(x, y, batch_size, rng=rng, shuffle=shuffle, binarize=binarize,
                         drop_last=drop_last, shift=shift)

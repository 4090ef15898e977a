"""Tests of scratchvae.data: IDX I/O, verification, lookup order, download, sample, batches.

All offline: every test runs with $SCRATCHVAE_OFFLINE=1, a temporary cache and
a temporary "system" directory; downloads go to file:// URLs or to an HTTP
server on 127.0.0.1. Most lookup/download tests replace the registry's
"mnist" entry by a tiny data set (20 train / 10 test random images) whose
checksums are computed here, so the real code paths run on small files.
"""
import gzip
import hashlib
import http.server
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from scratchvae import data
from scratchvae.data import DataError, DataNotFoundError, download, registry, sources

REPO = Path(__file__).resolve().parents[1]
#: $SCRATCHVAE_DATA as the test session found it (the autouse fixture clears it)
_ENV_DATA = os.environ.get("SCRATCHVAE_DATA")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No network, a private cache, an empty system dir, no $SCRATCHVAE_DATA."""
    monkeypatch.setenv("SCRATCHVAE_OFFLINE", "1")
    monkeypatch.setenv("SCRATCHVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCRATCHVAE_DATA", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_DATA_DIR", tmp_path / "system")
    return tmp_path


# --------------------------------------------------------------------------
# a tiny data set standing in for MNIST
# --------------------------------------------------------------------------

N_TRAIN, N_TEST = 20, 10


def _tiny_arrays():
    rng = np.random.default_rng(0)
    return {
        "train_images": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


TINY = _tiny_arrays()


def _tiny_spec(mirrors=()):
    sums = {role: (hashlib.sha256(data.idx_encode(a)).hexdigest(), "") for role, a in TINY.items()}
    return data.DatasetSpec(name="mnist", files=registry._files(N_TRAIN, N_TEST, sums),
                            mirrors=mirrors)


@pytest.fixture
def tiny(monkeypatch):
    """Make 'mnist' mean the tiny set; returns a writer ``put(directory, gz=True)``."""
    monkeypatch.setitem(data.REGISTRY, "mnist", _tiny_spec())

    def put(directory, gz=True, arrays=TINY):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for role, a in arrays.items():
            name = data.REGISTRY["mnist"].files[role].filename + (".gz" if gz else "")
            data.write_idx(directory / name, a)
        return directory

    return put


def _set_mirrors(monkeypatch, mirrors):
    monkeypatch.setitem(data.REGISTRY, "mnist", _tiny_spec(tuple(mirrors)))


def _same_as_tiny(ds):
    for role, a in TINY.items():
        np.testing.assert_array_equal(getattr(ds, role), a)
    assert ds.train_labels.dtype == np.int64 and ds.test_labels.dtype == np.int64
    assert ds.train_images.dtype == np.uint8 and ds.train_images.shape == (N_TRAIN, 28, 28)


# --------------------------------------------------------------------------
# IDX format
# --------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype,shape", [(np.uint8, (7, 28, 28)), (np.uint8, (13,)),
                                         (np.int16, (3, 4)), (np.float32, (2, 3, 4, 5)),
                                         (np.float64, (6,)), (np.int32, (5, 2))])
def test_idx_roundtrip(tmp_path, suffix, dtype, shape):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal(shape) * 100).astype(dtype)
    path = data.write_idx(tmp_path / ("a.idx" + suffix), a)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    b = data.read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.shape == shape
    np.testing.assert_array_equal(a, b)
    b[...] = 0  # a fresh writable array
    # same array, same bytes (deterministic gzip header)
    assert data.write_idx(tmp_path / ("b.idx" + suffix), a).read_bytes() == raw


def test_idx_header_is_the_mnist_layout():
    raw = data.idx_encode(np.zeros((2, 28, 28), np.uint8))
    assert raw[:4] == bytes.fromhex("00000803")
    assert raw[4:16] == bytes.fromhex("00000002 0000001c 0000001c")
    assert len(raw) == 16 + 2 * 784
    assert data.idx_encode(np.arange(3, dtype=np.uint8))[:8] == bytes.fromhex("00000801 00000003")
    # gzip or raw is decided by content, not by the name
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(data.idx_decode(data.idx_encode(a)), a)


def test_idx_encode_refuses_unknown_dtype():
    with pytest.raises(ValueError, match="no IDX type code"):
        data.idx_encode(np.zeros(3, np.uint16))


def test_wrong_magic_is_refused_naming_the_file(tmp_path):
    labels = data.write_idx(tmp_path / "labels.gz", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match=r"labels\.gz.*magic number 0x00000801.*expected 0x00000803"):
        data.read_idx(labels, expect_magic=data.IMAGES_MAGIC)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match=r"garbage: not an IDX file: bad magic"):
        data.read_idx(garbage)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="too short"):
        data.read_idx(tiny)


def test_truncated_and_padded_files_are_refused(tmp_path):
    raw = data.idx_encode(np.ones((4, 28, 28), np.uint8))
    short = tmp_path / "short"
    short.write_bytes(raw[:-1])
    with pytest.raises(DataError, match=r"short: truncated: header says shape \(4, 28, 28\)"):
        data.read_idx(short)
    long = tmp_path / "long"
    long.write_bytes(raw + b"\x00")
    with pytest.raises(DataError, match="trailing bytes"):
        data.read_idx(long)
    header_only = tmp_path / "header"
    header_only.write_bytes(raw[:10])
    with pytest.raises(DataError, match="truncated IDX header"):
        data.read_idx(header_only)
    gz = gzip.compress(raw)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataError, match=r"cut\.gz: corrupt or truncated gzip"):
        data.read_idx(cut)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8b" + b"\xff" * 40)
    with pytest.raises(DataError, match=r"bad\.gz: corrupt or truncated gzip"):
        data.read_idx(bad)


def test_wrong_dims_are_refused(tmp_path, tiny):
    arrays = dict(TINY, train_images=np.zeros((N_TRAIN, 27, 28), np.uint8))
    d = tiny(tmp_path / "d", arrays=arrays)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: wrong dimensions "
                                        r"\(20, 27, 28\), expected \(20, 28, 28\)"):
        data.load_dataset("mnist", data_dir=d, log=None)


def test_wrong_checksum_is_an_error_not_skipped(tmp_path, tiny, monkeypatch):
    bad = dict(TINY, test_images=TINY["test_images"].copy())
    bad["test_images"][3, 4, 5] ^= 1  # one pixel, one bit
    d = tiny(tmp_path / "d", arrays=bad)
    tiny(data.cache_dir() / "mnist")  # a good copy later in the lookup order
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: checksum mismatch"):
        data.load_dataset("mnist", data_dir=d, log=None)
    # also when the bad copy is the $SCRATCHVAE_DATA one
    monkeypatch.setenv("SCRATCHVAE_DATA", str(d))
    with pytest.raises(DataError, match="checksum mismatch"):
        data.load_dataset("mnist", log=None)


# --------------------------------------------------------------------------
# lookup order
# --------------------------------------------------------------------------

def test_lookup_order(tmp_path, tiny, monkeypatch):
    explicit = tiny(tmp_path / "explicit" / "mnist")
    env = tiny(tmp_path / "env" / "mnist")
    cache = tiny(data.cache_dir() / "mnist")
    system = tiny(tmp_path / "system" / "mnist")
    monkeypatch.setenv("SCRATCHVAE_DATA", str(tmp_path / "env"))

    ds = data.load_dataset("mnist", data_dir=tmp_path / "explicit", log=None)
    assert Path(ds.source) == explicit and not ds.is_sample
    _same_as_tiny(ds)
    assert data.locate_dataset("mnist")[0] == env
    monkeypatch.delenv("SCRATCHVAE_DATA")
    assert data.locate_dataset("mnist")[0] == cache
    for f in cache.iterdir():
        f.unlink()
    directory, places = data.locate_dataset("mnist")
    assert directory == system
    assert f"{cache} (user cache: not here)" in places
    assert places[-1].startswith(f"{system} (system: all files found")


def test_cache_dir_env(monkeypatch, tmp_path):
    assert data.cache_dir() == tmp_path / "cache"  # $SCRATCHVAE_CACHE
    monkeypatch.delenv("SCRATCHVAE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "xdg" / "scratchvae"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "scratchvae"


def test_flat_layout_and_raw_files(tmp_path, tiny):
    flat = tiny(tmp_path / "flat", gz=False)  # <root>/<file>, not gzipped
    ds = data.load_dataset("mnist", data_dir=flat, log=None)
    assert Path(ds.source) == flat
    _same_as_tiny(ds)


def test_incomplete_directory_is_skipped_and_reported(tmp_path, tiny, monkeypatch):
    """An incomplete directory the user did not name (here the cache) is passed over
    for the next place and reported; a named one: tests/test_data_strict.py."""
    d = tiny(data.cache_dir() / "mnist")
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    directory, places = data.locate_dataset("mnist")
    assert directory is None
    assert any(str(d) in p and "missing t10k-labels-idx1-ubyte" in p for p in places)


def test_not_found_lists_every_place_and_the_remedies(tmp_path, tiny, monkeypatch):
    (tmp_path / "env").mkdir()
    monkeypatch.setenv("SCRATCHVAE_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as err:
        data.load_dataset("mnist", recorded_dir=tmp_path / "recorded", download=False,
                          allow_sample=False, log=None)
    msg = str(err.value)
    for place in (tmp_path / "recorded" / "mnist", tmp_path / "recorded", tmp_path / "env",
                  data.cache_dir() / "mnist", tmp_path / "system" / "mnist"):
        assert str(place) in msg
    for remedy in ("--download", "--data-dir", "SCRATCHVAE_DATA", "download=False"):
        assert remedy in msg
    assert isinstance(err.value, FileNotFoundError)
    # fashion-mnist has no sample: not found is an error even in auto mode
    with pytest.raises(DataNotFoundError, match="fashion-mnist"):
        data.load_dataset("fashion-mnist", log=None)


def test_download_true_without_reachable_mirror_fails_fast(tmp_path, monkeypatch):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    _set_mirrors(monkeypatch, [f"http://127.0.0.1:{port}/"])
    t = time.perf_counter()
    with pytest.raises(DataNotFoundError, match="no download mirror is reachable"):
        data.load_dataset("mnist", download=True, log=None)
    assert time.perf_counter() - t < 5


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        data.load_dataset("cifar")
    with pytest.raises(ValueError, match="download must be"):
        data.load_dataset("mnist", download="yes")


# --------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------

def _mirror(directory, arrays=TINY):
    """A directory laid out like a mirror: <file>.gz for each of the four files."""
    names = data.REGISTRY["mnist"].files
    directory.mkdir(parents=True)
    for role, a in arrays.items():
        data.write_idx(directory / (names[role].filename + ".gz"), a)
    return directory


def test_download_from_file_mirrors_rejects_corrupt_and_uses_next(tmp_path, tiny):
    bad = dict(TINY, train_images=255 - TINY["train_images"])  # valid IDX, wrong checksum
    bad_mirror = _mirror(tmp_path / "bad", bad)
    # a second bad mirror serving a truncated file for the labels
    cut_mirror = _mirror(tmp_path / "cut")
    f = cut_mirror / "train-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-9])
    good_mirror = _mirror(tmp_path / "good")
    missing = tmp_path / "does-not-exist"
    mirrors = [p.as_uri() + "/" for p in (missing, bad_mirror, cut_mirror, good_mirror)]
    logged = []
    dest = data.download_dataset("mnist", dest=tmp_path / "dl", mirrors=mirrors,
                                 progress=False, log=logged.append)
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        f.filename + ".gz" for f in data.REGISTRY["mnist"].files.values())
    arrays = data.load_directory(dest, "mnist")
    for role, a in TINY.items():
        np.testing.assert_array_equal(arrays[role], a)
    assert any("bad/train-images" in m for m in logged)
    # already present and valid: nothing is fetched again
    logged.clear()
    data.download_dataset("mnist", dest=dest, mirrors=[missing.as_uri()], log=logged.append)
    assert logged == []


def test_failed_download_leaves_no_partial_file(tmp_path, tiny):
    bad = dict(TINY, test_labels=(TINY["test_labels"] + 1) % 10)
    mirror = _mirror(tmp_path / "bad", bad)
    dest = tmp_path / "dl"
    with pytest.raises(DataNotFoundError) as err:
        data.download_dataset("mnist", dest=dest, mirrors=[mirror.as_uri()], progress=False)
    assert "t10k-labels-idx1-ubyte" in str(err.value) and "checksum mismatch" in str(err.value)
    names = sorted(p.name for p in dest.iterdir())
    # the three good files are kept (each verified); no .tmp, no bad labels file
    assert names == ["t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz",
                     "train-labels-idx1-ubyte.gz"]


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; ``/cut/<file>`` announces the full length but stops halfway."""

    def do_GET(self):
        if self.path.startswith("/cut/"):
            body = (Path(self.directory) / self.path[len("/cut/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_mirror(tmp_path):
    root = _mirror(tmp_path / "www")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_over_http_with_an_interrupted_mirror(tmp_path, tiny, http_mirror, capsys):
    dest = tmp_path / "dl"
    d = data.download_dataset("mnist", dest=dest, mirrors=[http_mirror + "cut/", http_mirror],
                              progress=True)
    arrays = data.load_directory(d, "mnist")
    np.testing.assert_array_equal(arrays["train_images"], TINY["train_images"])
    assert not any(p.name.endswith(".tmp") for p in dest.iterdir())
    assert len(list(dest.iterdir())) == 4
    with pytest.raises(DataNotFoundError, match="(?s)could not download train-images.*"
                                                "incomplete download"):
        data.download_dataset("mnist", dest=tmp_path / "dl2", mirrors=[http_mirror + "cut/"],
                              progress=False)
    assert list((tmp_path / "dl2").iterdir()) == []


def test_auto_downloads_into_the_cache(tmp_path, monkeypatch, http_mirror):
    monkeypatch.delenv("SCRATCHVAE_OFFLINE")
    _set_mirrors(monkeypatch, [http_mirror])
    logged = []
    ds = data.load_dataset("mnist", progress=False, log=logged.append)
    assert Path(ds.source) == data.cache_dir() / "mnist" and not ds.is_sample
    _same_as_tiny(ds)
    assert "downloading into" in logged[0]
    # offline mode never touches the network: with an empty cache it falls back to the sample
    for f in (data.cache_dir() / "mnist").iterdir():
        f.unlink()
    monkeypatch.setenv("SCRATCHVAE_OFFLINE", "1")
    monkeypatch.setattr(download, "_fetch", None)  # would raise TypeError if called
    assert data.load_dataset("mnist", log=None).is_sample


# --------------------------------------------------------------------------
# the bundled sample
# --------------------------------------------------------------------------

def test_sample_loads_verified_with_right_shapes():
    ds = data.load_sample()
    assert ds.is_sample and ds.name == "mnist" and ds.source == "bundled sample"
    assert ds.train_images.shape == (10000, 28, 28) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (2000, 28, 28)
    assert ds.train_labels.shape == (10000,) and ds.train_labels.dtype == np.int64
    assert ds.test_labels.shape == (2000,)
    assert set(np.unique(ds.train_labels)) == set(range(10))
    assert 0.10 < ds.train_images.mean() / 255 < 0.16  # MNIST's mean intensity is ~0.13
    # the files verify against the registry, and the README states the same sums
    spec = data.REGISTRY["mnist-sample"]
    readme = (data.SAMPLE_DIR / "mnist-sample" / "README.md").read_text()
    total = 0
    for f in spec.files.values():
        path = data.SAMPLE_DIR / "mnist-sample" / (f.filename + ".gz")
        raw = data.read_bytes(path)
        assert hashlib.sha256(raw).hexdigest() == f.sha256 and len(raw) == f.nbytes
        assert f.sha256 in readme
        total += path.stat().st_size
    assert total < 2.5e6
    assert data.load_dataset("mnist-sample", log=None).is_sample


def test_auto_falls_back_to_the_sample_with_a_message(tmp_path):
    logged = []
    ds = data.load_dataset("mnist", recorded_dir=tmp_path / "nothing", log=logged.append)
    assert ds.is_sample and ds.train_images.shape == (10000, 28, 28)
    assert len(logged) == 1
    msg = logged[0]
    assert "bundled MNIST sample" in msg and "offline" in msg
    for remedy in ("--download", "--data-dir", "SCRATCHVAE_DATA"):
        assert remedy in msg
    with pytest.raises(DataNotFoundError):
        data.load_dataset("mnist", allow_sample=False, log=None)


def test_sample_is_the_head_of_full_mnist():
    root = _full_data_root()
    if root is None or not (root / "mnist").is_dir():
        pytest.skip("full MNIST not available ($SCRATCHVAE_DATA or ../shared/data)")
    full = data.load_dataset("mnist", data_dir=root, download=False, allow_sample=False, log=None)
    sample = data.load_sample()
    np.testing.assert_array_equal(sample.train_images, full.train_images[:10000])
    np.testing.assert_array_equal(sample.train_labels, full.train_labels[:10000])
    np.testing.assert_array_equal(sample.test_images, full.test_images[:2000])
    np.testing.assert_array_equal(sample.test_labels, full.test_labels[:2000])


# --------------------------------------------------------------------------
# the full data sets (CI: SCRATCHVAE_DATA=../shared/data)
# --------------------------------------------------------------------------

def _full_data_root():
    candidates = [_ENV_DATA] if _ENV_DATA else []
    candidates.append("../shared/data")
    for c in candidates:
        for base in (Path.cwd(), REPO):
            p = (base / c).resolve()
            if p.is_dir():
                return p
    return None


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_full_dataset_loads_verified(name, monkeypatch):
    root = _full_data_root()
    if root is None or not (root / name).is_dir():
        pytest.skip(f"full {name} not available ($SCRATCHVAE_DATA or ../shared/data)")
    monkeypatch.setenv("SCRATCHVAE_DATA", str(root))
    ds = data.load_dataset(name, download=False, allow_sample=False, log=None)
    assert not ds.is_sample and Path(ds.source) == root / name
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_images.shape == (10000, 28, 28)
    assert ds.train_labels.shape == (60000,) and ds.test_labels.shape == (10000,)
    assert np.bincount(ds.train_labels).tolist() == (
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949] if name == "mnist"
        else [6000] * 10)


# --------------------------------------------------------------------------
# arrays and batches
# --------------------------------------------------------------------------

def test_images_to_float():
    u = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    x = data.images_to_float(u)
    assert x.shape == (1, 1, 16, 16) and x.dtype == np.float32
    assert x.min() == 0 and x.max() == 1
    np.testing.assert_array_equal(x.ravel(), np.arange(256, dtype=np.float32) / np.float32(255))
    assert data.images_to_float(u, np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="images_to_float: expected uint8"):
        data.images_to_float(u.astype(np.float32))


def _xy(n=103):
    rng = np.random.default_rng(5)
    x = rng.random((n, 1, 4, 4)).astype(np.float32)
    return x, np.arange(n)


def test_batches_cover_every_index_once_per_epoch():
    x, y = _xy()
    it = data.iterate_batches(x, y, 10, rng=np.random.default_rng(0))
    assert len(it) == 11
    for _ in range(2):
        batches = list(it)
        assert len(batches) == 11 and [len(b[1]) for b in batches] == [10] * 10 + [3]
        seen = np.concatenate([yb for _, yb in batches])
        assert sorted(seen.tolist()) == list(range(103))
        for xb, yb in batches:
            np.testing.assert_array_equal(xb, x[yb])
    assert not np.array_equal(seen, np.arange(103))  # shuffled
    dropped = data.iterate_batches(x, y, 10, rng=np.random.default_rng(0), drop_last=True)
    assert len(dropped) == 10 and len(list(dropped)) == 10
    ordered = np.concatenate([yb for _, yb in data.iterate_batches(x, y, 7, shuffle=False)])
    np.testing.assert_array_equal(ordered, y)


def test_batches_are_reproducible_from_the_seed():
    x, y = _xy()

    def run(seed):
        it = data.iterate_batches(x, y, 16, rng=np.random.default_rng(seed), binarize=True)
        return [(xb, yb) for _ in range(2) for xb, yb in it]

    a, b, c = run(1), run(1), run(2)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)
    assert not all(np.array_equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))
    # the two epochs of one run use different orders
    assert not np.array_equal(a[0][1], a[len(a) // 2][1])


def test_dynamic_binarization():
    n = 4000
    p = np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    x = np.repeat(p, n, axis=0)
    it = data.iterate_batches(x, None, 500, rng=np.random.default_rng(3), binarize=True)
    xs = np.concatenate([xb for xb, yb in it])
    assert xs.dtype == np.float32 and set(np.unique(xs).tolist()) == {0.0, 1.0}
    # each pixel is Bernoulli(p): the mean over n draws is p within 5 standard errors
    mean = xs.mean(axis=0)
    se = np.sqrt(p * (1 - p) / n) + 1e-12
    assert np.all(np.abs(mean - p) <= 5 * se + 1e-6)
    assert mean.ravel()[0] == 0 and mean.ravel()[-1] == 1
    # fresh draws for each epoch
    again = np.concatenate([xb for xb, _ in it])
    assert not np.array_equal(xs, again)


def test_batch_iterator_validation():
    x, y = _xy()
    with pytest.raises(ValueError, match="explicit random generator"):
        data.iterate_batches(x, y, 8)
    with pytest.raises(ValueError, match="batch_size"):
        data.iterate_batches(x, y, 0, shuffle=False)
    with pytest.raises(ValueError, match="one per x"):
        data.iterate_batches(x, y[:-1], 8, shuffle=False)
    with pytest.raises(ValueError, match="float32 or float64"):
        data.BatchIterator((x * 255).astype(np.uint8), y, 8, rng=np.random.default_rng(0),
                           binarize=True)


# ---------------------------------------------------------------------------
# random translations (data augmentation)
# ---------------------------------------------------------------------------

def _shift_naive(image, dy, dx):
    """out[h, w] = image[h - dy, w - dx], 0 outside: one pixel at a time."""
    C, H, W = image.shape
    out = np.zeros_like(image)
    for h in range(H):
        for w in range(W):
            if 0 <= h - dy < H and 0 <= w - dx < W:
                out[:, h, w] = image[:, h - dy, w - dx]
    return out


def test_random_shift_matches_a_pixel_loop():
    rng = np.random.default_rng(0)
    x = rng.random((40, 2, 7, 6)).astype(np.float32)
    x = x[:, :, :, ::-1]                                   # a non-contiguous view
    out = data.random_shift(x, 2, np.random.default_rng(5))
    offsets = np.random.default_rng(5).integers(-2, 3, size=(40, 2))
    assert len({tuple(o) for o in offsets}) > 10           # many different offsets
    for n in range(40):
        np.testing.assert_array_equal(out[n], _shift_naive(x[n], *offsets[n]))
    assert out.dtype == x.dtype and out.shape == x.shape


def test_batches_with_shift_keep_labels_and_centred_content():
    x = np.zeros((64, 1, 12, 12), np.float32)
    x[:, :, 4:8, 4:8] = np.arange(64, dtype=np.float32)[:, None, None, None] + 1
    y = np.arange(64)
    seen = 0
    for xb, yb in data.iterate_batches(x, y, 16, rng=np.random.default_rng(1), shift=3):
        # content 3 pixels from every border is never cut: each image keeps its 16 pixels
        np.testing.assert_array_equal(xb.sum(axis=(1, 2, 3)), 16 * (yb + 1))
        seen += yb.size
        assert any(not np.array_equal(xb[i], x[yb[i]]) for i in range(yb.size))
    assert seen == 64


def test_shift_arguments_are_checked():
    x, y = np.zeros((4, 1, 5, 5), np.float32), np.arange(4)
    with pytest.raises(ValueError, match="integer shift >= 0"):
        data.iterate_batches(x, y, 2, rng=np.random.default_rng(0), shift=-1)
    with pytest.raises(ValueError, match="need an explicit random generator"):
        data.iterate_batches(x, y, 2, shuffle=False, shift=1)
    with pytest.raises(ValueError, match=r"expected images \(N, C, H, W\)"):
        data.random_shift(np.zeros((4, 25), np.float32), 1, np.random.default_rng(0))


# --------------------------------------------------------------------------
# messages that say how to fix what went wrong
# --------------------------------------------------------------------------

def test_truncated_gzip_says_how_to_fix_it(tmp_path, tiny):
    directory = tiny(tmp_path / "d")
    cut = directory / "t10k-labels-idx1-ubyte.gz"
    cut.write_bytes(cut.read_bytes()[:-9])
    with pytest.raises(DataError, match=r"(?s)t10k-labels-idx1-ubyte\.gz: corrupt or truncated "
                                        r"gzip data.*; replace or delete it"):
        data.load_dataset("mnist", data_dir=directory, log=None)


def test_truncated_raw_file_says_how_to_fix_it(tmp_path, tiny):
    directory = tiny(tmp_path / "d")
    packed = directory / "t10k-labels-idx1-ubyte.gz"
    raw = directory / "t10k-labels-idx1-ubyte"
    raw.write_bytes(gzip.decompress(packed.read_bytes())[:-3])
    packed.unlink()
    with pytest.raises(DataError, match=r"(?s)t10k-labels-idx1-ubyte: truncated: .*"
                                        r"; replace or delete it"):
        data.load_dataset("mnist", data_dir=directory, log=None)


def test_cli_data_not_found_is_an_error_on_stderr(tmp_path, capsys):
    from scratchvae.cli import main

    assert main(["data"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: mnist not found; looked in:")
    for needle in (str(data.cache_dir() / "mnist"), "--download", "SCRATCHVAE_DATA"):
        assert needle in captured.err, needle
    # a --data-dir named explicitly: the same, about it alone (tests/test_data_strict.py)
    assert main(["data", "--data-dir", str(tmp_path / "none")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: mnist not found: --data-dir")
    for needle in (str(tmp_path / "none"), "--download", "SCRATCHVAE_DATA"):
        assert needle in captured.err, needle


def test_cli_data_download_failure_says_where_it_looked_and_what_to_do(tmp_path, tiny,
                                                                       monkeypatch, capsys):
    from scratchvae.cli import main

    missing = tmp_path / "no-mirror"
    _set_mirrors(monkeypatch, [missing.as_uri() + "/"])
    assert main(["data", "--download"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not find the mnist data set")
    for needle in ("Looked in", str(data.cache_dir() / "mnist"), str(tmp_path / "system"),
                   "could not download train-images-idx3-ubyte", missing.as_uri(),
                   "--data-dir DIR", "SCRATCHVAE_DATA"):
        assert needle in err, needle
    # and from a working mirror it downloads into the cache and verifies
    _set_mirrors(monkeypatch, [_mirror(tmp_path / "good").as_uri() + "/"])
    assert main(["data", "--download"]) == 0
    out = capsys.readouterr().out
    assert f"{N_TRAIN} train / {N_TEST} test images, checksums verified" in out
    assert str(data.cache_dir() / "mnist") in out


# --------------------------------------------------------------------------
# a training run records the data it used
# --------------------------------------------------------------------------

RUN = dict(epochs=1, batch_size=32, train_limit=128, test_limit=64, eval_batch_size=64)


def _quiet(*args, **kwargs):
    pass


def test_a_run_that_fell_back_to_the_sample_keeps_to_it(tmp_path, tiny, monkeypatch):
    """No full set anywhere (offline): the run trains on the bundled sample and its
    config.json says so; evaluate and --resume keep to the sample when a full set
    turns up later (here the tiny set standing in for MNIST)."""
    import json

    from scratchvae import files
    from scratchvae.cli import main
    from scratchvae.config import TrainConfig
    from scratchvae.rundir import evaluate_run
    from scratchvae.train import train

    run, logged = tmp_path / "run", []
    train(TrainConfig(**RUN), str(run), progress=False, log=logged.append)
    assert any("Using the bundled MNIST sample" in m for m in logged)
    assert json.loads((run / "config.json").read_text())["use_sample"] is True
    monkeypatch.setenv("SCRATCHVAE_DATA", str(tiny(tmp_path / "env")))
    epoch1 = files.read_jsonl(run / "metrics.jsonl")[0]
    assert evaluate_run(str(run), log=_quiet)["test_nelbo"] == pytest.approx(
        epoch1["test_nelbo"], rel=1e-12)
    # the resume continues on the sample, exactly as one run of two epochs on it
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    straight = train(TrainConfig(**{**RUN, "epochs": 2, "use_sample": True}),
                     str(tmp_path / "straight"), progress=False, log=_quiet)
    assert [r["train_loss"] for r in files.read_jsonl(run / "metrics.jsonl")] == \
        [r["train_loss"] for r in straight]


def test_a_run_on_the_full_set_records_its_data_dir_and_never_falls_back(tmp_path, tiny,
                                                                         monkeypatch):
    import json
    import shutil

    from scratchvae.config import TrainConfig
    from scratchvae.rundir import evaluate_run
    from scratchvae.train import train

    tiny(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    history = train(TrainConfig(**{**RUN, "batch_size": 8, "eval_batch_size": 10,
                                   "data_dir": "data"}), str(run), progress=False, log=_quiet)
    config = json.loads((run / "config.json").read_text())
    assert config["use_sample"] is False and os.path.isabs(config["data_dir"])
    assert os.path.samefile(config["data_dir"], tmp_path / "data")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert evaluate_run(str(run), log=_quiet)["test_nelbo"] == pytest.approx(
        history[-1]["test_nelbo"], rel=1e-12)
    # the data gone: an error, not the bundled sample in its place
    shutil.rmtree(tmp_path / "data")
    with pytest.raises(DataNotFoundError, match="trained on the full mnist set"):
        evaluate_run(str(run), log=_quiet)


def test_a_run_records_the_directory_its_data_came_from_however_it_was_found(
        tmp_path, tiny, monkeypatch):
    """Found through $SCRATCHVAE_DATA, not --data-dir: config.json still names the
    directory, so the run evaluates without the variable."""
    import json

    from scratchvae.config import TrainConfig
    from scratchvae.rundir import evaluate_run
    from scratchvae.train import train

    tiny(tmp_path / "data")
    monkeypatch.setenv("SCRATCHVAE_DATA", str(tmp_path / "data"))
    run = tmp_path / "run"
    history = train(TrainConfig(**{**RUN, "batch_size": 8, "eval_batch_size": 10}), str(run),
                    progress=False, log=_quiet)
    config = json.loads((run / "config.json").read_text())
    assert config["use_sample"] is False and os.path.samefile(config["data_dir"],
                                                              tmp_path / "data")
    monkeypatch.delenv("SCRATCHVAE_DATA")
    assert evaluate_run(str(run), log=_quiet)["test_nelbo"] == pytest.approx(
        history[-1]["test_nelbo"], rel=1e-12)

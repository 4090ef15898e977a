"""The download of a data set from the registry's mirrors into the user cache.

Each file is fetched as ``<mirror><filename>.gz``, trying the mirrors in
order, and bounded three ways, so that no mirror can hold a download for long:

- ``timeout``: seconds one network operation (connect, one read) may stall;
- ``deadline``: seconds the whole file may take, from the connection on;
- ``min_rate``: bytes per second, averaged over the last ``rate_window``
  seconds, below which the mirror is given up (checked once a whole window
  has passed).

A watchdog thread enforces the last two: it shuts the connection's socket
down, which ends a read blocked on it at once. A mirror that fails in any way
(network error, too slow, corrupt or wrong file) is skipped for the next; when
every mirror has failed, :class:`DataNotFoundError` names each URL tried and why.

A file is written to a temporary file beside its final name
(:func:`~scratchvae.files.atomic_write`), verified, and only then renamed, so
no partial or unverified file ever bears the final name. One download at a
time holds a directory (an OS lock, released by the kernel when the process
dies), and it first removes the temporary files a killed download left there.
"""
import collections
import contextlib
import fcntl
import glob
import http.client
import os
import socket
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from ..files import atomic_write
from .idx import DataError
from .registry import ROLES, find_file, get_spec, load_verified


class DataNotFoundError(FileNotFoundError):
    """A data set could not be found locally nor downloaded."""


#: seconds a network connection may stall before a mirror is given up
DOWNLOAD_TIMEOUT = 10.0
#: seconds to decide whether any mirror is reachable at all
PROBE_TIMEOUT = 3.0
#: seconds one file may take from one mirror (the largest, 26 MB, needs 44 KB/s)
DOWNLOAD_DEADLINE = 600.0
#: bytes per second under which a mirror is given up ...
MIN_RATE = 16 * 1024
#: ... averaged over this many seconds (and checked once this many have passed)
RATE_WINDOW = 20.0


def cache_dir():
    """The user cache directory, where downloads go.

    ``$SCRATCHVAE_CACHE``, else ``$XDG_CACHE_HOME/scratchvae``, else ``~/.cache/scratchvae``.
    """
    if os.environ.get("SCRATCHVAE_CACHE"):
        return absolute(os.environ["SCRATCHVAE_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return absolute(os.environ["XDG_CACHE_HOME"]) / "scratchvae"
    return Path.home() / ".cache" / "scratchvae"


def absolute(path):
    """``path`` with ``~`` expanded, made absolute and normalised (symlinks kept)."""
    return Path(os.path.abspath(os.path.expanduser(path)))


# --------------------------------------------------------------------------
# is a mirror reachable at all
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


# --------------------------------------------------------------------------
# one file from one mirror, within a deadline and above a minimum rate
# --------------------------------------------------------------------------

class _Watchdog:
    """Ends a fetch that runs past ``deadline`` seconds or averages under ``min_rate``
    bytes/s over the last ``window`` seconds: sets ``reason`` and shuts down the
    fetch's sockets. The fetch adds what it reads to ``received``."""

    def __init__(self, deadline, min_rate, window):
        self.deadline, self.min_rate, self.window = deadline, min_rate, window
        self.received = 0
        self.reason = None
        self._sockets = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        for s in self._sockets:
            s.close()

    def track(self, sock):
        """Watch a new connection's socket (a duplicate: the original may be wrapped in TLS)."""
        with self._lock:
            self._sockets.append(sock.dup())
            if self.reason:
                self._shut(self._sockets[-1])

    @staticmethod
    def _shut(sock):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _watch(self):
        samples = collections.deque([(self._start, 0)])   # (time, bytes received by then)
        while not self._done.wait(min(0.25, self.window / 4, self.deadline / 4)):
            now, received = time.monotonic(), self.received
            samples.append((now, received))
            while len(samples) > 1 and samples[1][0] <= now - self.window:
                samples.popleft()    # samples[0]: the last one at least a window old
            then, before = samples[0]
            rate = (received - before) / max(now - then, 1e-9)
            if now - self._start > self.deadline:
                reason = (f"not complete after {self.deadline:g} s, the deadline of one "
                          f"file ({received:,} bytes received)")
            elif now - then >= self.window and rate < self.min_rate:
                reason = (f"too slow: {rate / 1024:.2f} KiB/s over the last {self.window:g} s, "
                          f"under the minimum of {self.min_rate / 1024:g} KiB/s")
            else:
                continue
            with self._lock:
                self.reason = reason
                for s in self._sockets:
                    self._shut(s)
            return


def _tracking_opener(track):
    """A urllib opener whose HTTP(S) connections pass each new socket to ``track``."""

    def tracked(connection_class):
        class Tracked(connection_class):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                create = self._create_connection

                def create_and_track(*a, **k):
                    sock = create(*a, **k)
                    track(sock)
                    return sock
                self._create_connection = create_and_track
        return Tracked

    class HTTPHandler(urllib.request.HTTPHandler):
        def do_open(self, http_class, req, **kwargs):
            return super().do_open(tracked(http_class), req, **kwargs)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def do_open(self, http_class, req, **kwargs):
            return super().do_open(tracked(http_class), req, **kwargs)

    return urllib.request.build_opener(HTTPHandler(), HTTPSHandler())


def _fetch(url, dest_path, fspec, progress, timeout, deadline, min_rate, rate_window):
    """Download ``url`` to ``dest_path`` atomically, within ``deadline`` seconds and above
    ``min_rate`` bytes/s; the file is verified against ``fspec`` before it takes the
    final name, so no partial or unverified file ever bears it."""
    from tqdm import tqdm

    watchdog = _Watchdog(deadline, min_rate, rate_window)
    opener = _tracking_opener(watchdog.track)

    def download(f):
        with opener.open(url, timeout=timeout) as r:
            read = getattr(r, "read1", r.read)  # read1: what has arrived, not a full 64 KiB
            total = r.headers.get("Content-Length")
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                      unit_divisor=1024, desc=dest_path.name, disable=not progress,
                      leave=False) as bar:
                while watchdog.reason is None:
                    chunk = read(1 << 16)
                    if not chunk:
                        break
                    f.write(chunk)
                    watchdog.received += len(chunk)
                    bar.update(len(chunk))
        if watchdog.reason:
            raise DataError(watchdog.reason)
        if total and watchdog.received != int(total):
            raise DataError(f"incomplete download: the connection ended after "
                            f"{watchdog.received} of {total} bytes")

    try:
        with watchdog:
            atomic_write(dest_path, download, check=lambda tmp: load_verified(tmp, fspec))
    except (OSError, DataError, http.client.HTTPException):
        if watchdog.reason:   # whatever the shut-down socket raised: the watchdog's reason
            raise DataError(watchdog.reason) from None
        raise


# --------------------------------------------------------------------------
# the four files of a data set
# --------------------------------------------------------------------------

def stale_temporary_files(directory, filename):
    """The temporary files :func:`~scratchvae.files.atomic_write` leaves beside
    ``directory/filename`` when its process is killed: ``.<filename><random>.tmp``."""
    return sorted(Path(directory).glob("." + glob.escape(filename) + "*.tmp"))


@contextlib.contextmanager
def _one_download_at_a_time(directory):
    """An exclusive OS lock on ``directory`` (the kernel releases it when the process
    dies): a second download into it waits, so removing a stale temporary file never
    removes one being written."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # releases the lock


def download_dataset(name, dest=None, mirrors=None, progress=True, timeout=None, log=None,
                     deadline=None, min_rate=None, rate_window=None):
    """Download the four files of ``name`` into ``dest`` (default: ``cache_dir()/name``).

    Limits (None: the module's ``DOWNLOAD_TIMEOUT``, ``DOWNLOAD_DEADLINE``,
    ``MIN_RATE``, ``RATE_WINDOW``): see the module docstring. Files already in
    ``dest`` that verify are kept; the temporary files of a killed download of
    the same files are removed first. Returns ``dest``; raises
    :class:`DataNotFoundError` naming every URL tried and why it failed if a
    file cannot be had.
    """
    limits = (DOWNLOAD_TIMEOUT if timeout is None else timeout,
              DOWNLOAD_DEADLINE if deadline is None else deadline,
              MIN_RATE if min_rate is None else min_rate,
              RATE_WINDOW if rate_window is None else rate_window)
    spec = get_spec(name)
    mirrors = tuple(spec.mirrors if mirrors is None else mirrors)
    if not mirrors:
        raise DataNotFoundError(f"data set {name!r} has no download mirrors")
    dest = Path(cache_dir() / name if dest is None else dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    with _one_download_at_a_time(dest):
        for role in ROLES:
            _download_file(spec.files[role], name, dest, mirrors, progress, limits, log)
    return dest


def _download_file(fspec, name, dest, mirrors, progress, limits, log):
    """One file of ``name`` into ``dest``: kept if present and verified, else fetched."""
    target = dest / (fspec.filename + ".gz")
    for stale in stale_temporary_files(dest, target.name):
        stale.unlink(missing_ok=True)
    existing = find_file(dest, fspec.filename)
    if existing is not None:
        try:
            load_verified(existing, fspec)
            return
        except DataError as e:
            if log:
                log(f"{e}; downloading it again")
    errors = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + fspec.filename + ".gz"
        if log:
            log(f"downloading {url}")
        try:
            _fetch(url, target, fspec, progress, *limits)
        except (OSError, DataError, http.client.HTTPException) as e:
            # URLError, HTTPError and timeouts are OSErrors; IncompleteRead is an HTTPException
            errors.append(f"{url}: {e}")
            continue
        if existing is not None and existing != target:
            existing.unlink(missing_ok=True)  # the raw, corrupt copy: it would only confuse
        return
    for stale in stale_temporary_files(dest, target.name):
        stale.unlink(missing_ok=True)
    raise DataNotFoundError(f"could not download {fspec.filename} of {name!r} from any of "
                            f"{len(mirrors)} mirror(s):\n  " + "\n  ".join(errors))

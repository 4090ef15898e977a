"""Downloads are bounded in time and leave no litter (scratchvae/data/download.py).

A local HTTP server on 127.0.0.1 plays mirrors that answer slowly: a byte at
a time (each byte well within the per-read timeout), endlessly at a fair rate,
or with headers that never end. The limits are made small (a fraction of a
second) so that each case takes about a second. No network beyond loopback.
"""
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_data import TINY, _mirror, _set_mirrors, isolated, tiny  # noqa: F401 (fixtures)

from scratchvae import data
from scratchvae.data import DataNotFoundError, download

REPO = Path(__file__).resolve().parents[1]
#: small limits: a window of 0.3 s at >= 4 KiB/s, 1.5 s per file
FAST = dict(deadline=1.5, min_rate=4096, rate_window=0.3, progress=False)


class _SlowHandler(http.server.SimpleHTTPRequestHandler):
    """``/trickle/<file>``: the file's length announced, then one byte every 20 ms;
    ``/endless/<file>``: 4 KiB every 10 ms of a body that never ends;
    ``/headers/<file>``: the status line one byte every 50 ms, for 4 s, never a body;
    anything else: the file."""

    def do_GET(self):
        kind, _, name = self.path.strip("/").partition("/")
        try:
            if kind == "trickle":
                body = (Path(self.directory) / name).read_bytes()
                self._head(len(body))
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.02)
            elif kind == "endless":
                self._head(10 ** 9)
                while True:
                    self.wfile.write(b"\0" * 4096)
                    self.wfile.flush()
                    time.sleep(0.01)
            elif kind == "headers":
                for byte in b"HTTP/1.0 200 OK\r\nX-Slow: " + b"a" * 60:   # 4 s, then it hangs up
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
            else:
                super().do_GET()
        except OSError:   # the client gave up: what the test wants
            self.close_connection = True

    def _head(self, length):
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_mirror(tmp_path):
    root = _mirror(tmp_path / "www")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _SlowHandler(*a, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _timed_failure(mirrors, dest, **limits):
    t0 = time.monotonic()
    with pytest.raises(DataNotFoundError) as err:
        data.download_dataset("mnist", dest=dest, mirrors=mirrors, **limits)
    return str(err.value), time.monotonic() - t0


@pytest.mark.parametrize("kind,min_rate,said", [
    ("trickle", 4096, r"too slow: \d+\.\d+ KiB/s over the last 0\.3 s, under the minimum of "
                      r"4 KiB/s"),
    ("headers", 4096, r"too slow: 0\.00 KiB/s"),
    ("endless", 4096, r"not complete after 1\.5 s, the deadline of one file"),
    ("headers", 0, r"not complete after 1\.5 s, the deadline of one file \(0 bytes")])
def test_a_slow_mirror_is_given_up_within_the_limits(tmp_path, tiny, slow_mirror, kind, min_rate,
                                                     said):
    """Each byte comes well within the per-read timeout (10 s): only the rate and
    the deadline end these; a read blocked in the headers ends as soon as either does."""
    import re

    url = slow_mirror + kind + "/"
    msg, seconds = _timed_failure([url], tmp_path / "dl", **dict(FAST, min_rate=min_rate))
    assert seconds < (1.5 if "deadline" in said else 0.3) + 0.6, seconds
    assert re.search(rf"could not download train-images-idx3-ubyte of 'mnist' from any of 1 "
                     rf"mirror\(s\):\n  {re.escape(url)}train-images-idx3-ubyte\.gz: {said}",
                     msg), msg
    assert list((tmp_path / "dl").iterdir()) == []   # nothing partial left


def test_a_slow_mirror_is_passed_over_for_the_next(tmp_path, tiny, slow_mirror):
    logged = []
    limits = dict(FAST, deadline=0.5, rate_window=0.2)
    dest = data.download_dataset("mnist", dest=tmp_path / "dl", log=logged.append,
                                 mirrors=[slow_mirror + "trickle/", slow_mirror], **limits)
    arrays = data.load_directory(dest, "mnist")
    np.testing.assert_array_equal(arrays["train_images"], TINY["train_images"])
    assert sum("trickle/" in m for m in logged) == 4       # tried first for each file
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        f.filename + ".gz" for f in data.REGISTRY["mnist"].files.values())


def test_the_data_command_names_every_mirror_tried(tmp_path, tiny, slow_mirror, monkeypatch,
                                                  capsys):
    """`data --download` (load_dataset, the module's limits): error, exit 1."""
    from scratchvae.cli import main

    monkeypatch.delenv("SCRATCHVAE_OFFLINE")
    mirrors = [slow_mirror + "trickle/", slow_mirror + "endless/"]
    _set_mirrors(monkeypatch, mirrors)
    for name, value in (("DOWNLOAD_DEADLINE", 0.6), ("MIN_RATE", 4096), ("RATE_WINDOW", 0.3)):
        monkeypatch.setattr(download, name, value)
    assert main(["data", "--download"]) == 1
    err = capsys.readouterr().err      # after the progress bars, the error
    assert "\nerror: could not find the mnist data set" in "\n" + err.split("\r")[-1], err
    for url, why in zip(mirrors, ("too slow", "not complete after 0.6 s")):
        assert f"{url}train-images-idx3-ubyte.gz: {why}" in err, err
    assert "Traceback" not in err


def test_download_removes_the_temporary_files_a_killed_download_left(tmp_path, tiny):
    dest = tmp_path / "dl"
    dest.mkdir()
    stale = [dest / ".train-images-idx3-ubyte.gz4kq2x9_a.tmp",
             dest / ".t10k-labels-idx1-ubyte.gzzz8w1c0.tmp"]
    other = [dest / ".checkpoint.npzab12.tmp", dest / "notes.tmp"]   # not the download's
    for p in stale + other:
        p.write_bytes(b"partial")
    assert data.stale_temporary_files(dest, "train-images-idx3-ubyte.gz") == stale[:1]
    good = _mirror(tmp_path / "good").as_uri() + "/"
    data.download_dataset("mnist", dest=dest, mirrors=[good], progress=False)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in other)
    # and when the download fails: a stale file of the failing file goes too
    for p in dest.glob("*.gz"):
        p.unlink()
    stale[0].write_bytes(b"partial")
    with pytest.raises(DataNotFoundError):
        data.download_dataset("mnist", dest=dest, mirrors=[(tmp_path / "none").as_uri()],
                              progress=False)
    assert not stale[0].exists() and all(p.exists() for p in other)


def test_a_killed_download_leaves_a_partial_file_the_next_one_removes(tmp_path, tiny,
                                                                      slow_mirror):
    """SIGKILL in the middle of a download (no handler runs) leaves its temporary
    file; the next download of the same data set into the same place removes it."""
    dest = tmp_path / "dl"
    code = ("import sys; from scratchvae import data; from test_data import _tiny_spec; "
            "data.REGISTRY['mnist'] = _tiny_spec(); "
            "data.download_dataset('mnist', dest=sys.argv[1], mirrors=[sys.argv[2]], "
            "progress=False, deadline=60, min_rate=1, rate_window=60)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    child = subprocess.Popen([sys.executable, "-c", code, str(dest), slow_mirror + "trickle/"],
                             env=env)
    try:
        t0 = time.monotonic()
        while not (dest.is_dir() and any(p.suffix == ".tmp" for p in dest.iterdir())):
            assert time.monotonic() - t0 < 30 and child.poll() is None
            time.sleep(0.05)
        time.sleep(0.2)                      # a few bytes written
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    left = [p.name for p in dest.iterdir()]
    assert len(left) == 1 and left[0].startswith(".train-images-idx3-ubyte.gz"), left
    data.download_dataset("mnist", dest=dest, mirrors=[slow_mirror], progress=False)
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        f.filename + ".gz" for f in data.REGISTRY["mnist"].files.values())

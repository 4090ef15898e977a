"""Files written atomically, and the JSON and JSON-lines files of a run.

:func:`atomic_write` is the one way the project replaces a file: the bytes go
to a temporary file in the same directory, which is flushed to disk, then
renamed over the target with ``os.replace`` (atomic on POSIX), and the
directory is flushed too. A crash mid-write leaves the previous version intact,
never a torn file. The new file gets the mode of any new file,
0o666 & ~umask (``mkstemp`` alone would leave it 0o600).

JSON-lines files (one JSON object per line) grow by appending one line with a
single ``write``; a crash can tear only the last line, which
:func:`read_jsonl` ignores.
"""
import json
import os
import tempfile


class FileError(ValueError):
    """A file that is missing, damaged or not what its reader expects."""


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_file_mode():
    """0o666 & ~umask: the mode ``open()`` gives a new file. (The umask can only be
    read by setting it, so it is set and at once put back.)"""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path, write, check=None):
    """Call ``write(fileobj)`` on a temp file beside ``path``, then rename it to ``path``.

    ``check(temp_path)``, if given, runs on the complete, closed temp file before
    the rename (e.g. a download's checksum); whatever it raises leaves ``path``
    as it was. The temp file never outlives the call.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _new_file_mode())  # mkstemp creates it 0o600
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileError(f"expected a file {path}, but it does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise FileError(f"{path} is not valid JSON: {e}") from None
    except OSError as e:   # a directory, no permission to read, ...
        raise FileError(f"expected a readable file {path}: {e.strerror}") from None


# --------------------------------------------------------------------------
# JSON lines: one JSON object per line
# --------------------------------------------------------------------------

def append_jsonl(path, record):
    """Append one line with a single write, then fsync."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # & ~umask
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path):
    """All complete records of a JSON-lines file (a torn last line is ignored).

    A complete line that is not a JSON object raises :class:`FileError`
    naming the file and line: the file was damaged otherwise than by a crash.
    """
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break  # an append cut short by a crash
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise FileError(f"{path}, line {number}: not JSON ({e}); the file is "
                                f"damaged") from None
            if not isinstance(record, dict):
                raise FileError(f"{path}, line {number}: a JSON {type(record).__name__}, "
                                f"not an object; the file is damaged")
            records.append(record)
    return records


def truncate_jsonl(path, keep):
    """Atomically rewrite a JSON-lines file keeping the records where keep(r)."""
    records = [r for r in read_jsonl(path) if keep(r)]
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))

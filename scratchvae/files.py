"""Files written atomically, and the JSON and JSON-lines files of a run.

:func:`atomic_write` is the one way the project replaces a file: the bytes go
to a temporary file in the same directory, which is flushed to disk, then
renamed over the target with ``os.replace`` (atomic on POSIX), and the
directory is flushed too. A crash mid-write leaves the previous version intact,
never a torn file. The new file gets the mode of any new file,
0o666 & ~umask (``mkstemp`` alone would leave it 0o600).

A process killed mid-write leaves the temporary file behind (``.NAME*.tmp``
beside NAME): :func:`remove_temp_files` removes those of a file, which its
writer does when it starts again, holding the directory's lock.

JSON-lines files (one JSON object per line) grow by appending one line with a
single ``write``; a crash can tear only the last line, which
:func:`read_jsonl` ignores.

Output paths: :func:`check_output_dir` and :func:`check_output_file` say
before any work whether a directory or a file can be written where asked.
A directory written by one process at a time is held with :func:`locked`,
an exclusive ``flock`` on ``DIR/.lock`` that the kernel releases when the
process ends, however it ends.
"""
import contextlib
import glob
import json
import os
import tempfile

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, directories are not locked
    fcntl = None


class FileError(ValueError):
    """A file that is missing, damaged or not what its reader expects."""


class UnwritablePath(FileError):
    """An output path that cannot be written: a read-only directory or file, a
    path under a regular file, a file where a directory is asked for or the reverse."""


class DirectoryInUse(FileError):
    """A directory that another process holds locked (:func:`locked`)."""


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


def temp_files(path):
    """The temporary files of :func:`atomic_write` calls on ``path`` that did not
    end (their process was killed): ``.NAME*.tmp`` beside ``path``."""
    directory, name = os.path.split(os.path.abspath(path))
    return sorted(glob.glob(os.path.join(glob.escape(directory),
                                         "." + glob.escape(name) + "*.tmp")))


def remove_temp_files(path):
    """Remove :func:`temp_files` of ``path``; only the writer of ``path``, holding its
    directory's lock, may call it (another writer's temp file is live)."""
    for tmp in temp_files(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


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


# --------------------------------------------------------------------------
# output paths: checked before any work
# --------------------------------------------------------------------------

def _writable_dir(directory):
    """Whether this process may create and rename files in ``directory``."""
    return os.access(directory, os.W_OK | os.X_OK)


def _nearest_existing(path):
    """The deepest of ``path`` and its ancestors that exists (as any kind of file)."""
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def _kind(path):
    return "a file" if os.path.isfile(path) else "not a directory"


def _check_ancestor(existing, what):
    """Raise :class:`UnwritablePath` (``what: ...``) unless the existing path
    ``existing``, under which something is to be created, is a writable directory."""
    if not os.path.isdir(existing):
        raise UnwritablePath(f"{what}: {existing} is {_kind(existing)}, not a directory")
    if not _writable_dir(existing):
        raise UnwritablePath(f"{what}: {existing} is read-only (permission denied)")


def check_output_dir(path):
    """Raise :class:`UnwritablePath` unless ``path`` is a directory this process
    can write into, or one it can create (its nearest existing ancestor is a
    writable directory)."""
    existing = _nearest_existing(path)
    if existing == os.path.abspath(path):
        if not os.path.isdir(path):
            raise UnwritablePath(f"cannot write into {path}: it is {_kind(path)}, not a "
                                 f"directory")
        if not _writable_dir(path):
            raise UnwritablePath(f"cannot write into {path}: the directory is read-only "
                                 f"(permission denied)")
    else:
        _check_ancestor(existing, f"cannot create {path}")


def check_output_file(path):
    """Raise :class:`UnwritablePath` unless the file ``path`` can be written: created
    (or replaced) in a directory that :func:`check_output_dir` accepts."""
    if os.path.isdir(path):
        raise UnwritablePath(f"cannot write {path}: it is a directory, not a file")
    _check_ancestor(_nearest_existing(os.path.dirname(os.path.abspath(path))),
                    f"cannot write {path}")
    if os.path.lexists(path) and not os.access(path, os.W_OK):
        raise UnwritablePath(f"cannot write {path}: the file is read-only (permission denied)")


def make_dirs(path):
    """``os.makedirs(path, exist_ok=True)``; returns the directories it created,
    outermost first (for :func:`remove_empty_dirs`)."""
    created, parent = [], os.path.abspath(path)
    while not os.path.lexists(parent):
        created.insert(0, parent)
        parent = os.path.dirname(parent)
    os.makedirs(path, exist_ok=True)
    return created


def remove_empty_dirs(created):
    """Remove the directories of ``created`` (from :func:`make_dirs`), innermost
    first, as long as they are empty."""
    for directory in reversed(created):
        try:
            os.rmdir(directory)
        except OSError:   # not empty (or gone): its parents are not empty either
            return


# --------------------------------------------------------------------------
# one writer per directory
# --------------------------------------------------------------------------

#: the lock file of a directory held by :func:`locked`
LOCK = ".lock"


def _holder(fd):
    """The process id written in a lock file ("another process" while it is unwritten)."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return f"process {text}" if text.isdigit() else "another process"


@contextlib.contextmanager
def locked(directory):
    """Hold ``directory`` for the ``with`` block: an exclusive ``flock`` on
    ``directory/.lock`` (which holds this process's id), or at once
    :class:`DirectoryInUse` naming the process that holds it.

    The kernel releases the lock when the process ends, however it ends, so a
    killed holder leaves no stale lock. The holder removes the file on release;
    a process that locked the file just removed tries again on a new one.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = os.path.join(directory, LOCK)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise DirectoryInUse(f"{directory} is in use by {holder}: wait until it ends, or "
                                 f"write into another directory") from None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)   # its holder removed the file meanwhile: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)

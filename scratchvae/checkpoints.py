"""Checkpoints and run files, written atomically.

Every file is written to a temporary file in the same directory, flushed to
disk, then renamed over the target with ``os.replace`` (atomic on POSIX). A
crash mid-write leaves the previous version intact, never a torn file. Run
files get the mode of any new file, 0o666 & ~umask (``mkstemp`` alone would
leave them 0o600).

A checkpoint is one ``.npz``: model parameters under ``model/<name>``,
optimiser arrays under ``optim/<key>/<index>``, and everything else (epoch,
random-generator states, optimiser scalars) as JSON under ``meta``.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

CHECKPOINT = "checkpoint.npz"
CONFIG = "config.json"
METRICS = "metrics.jsonl"


class CheckpointError(ValueError):
    """A checkpoint or run directory that cannot be used."""


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


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a temp file, then rename it to ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _new_file_mode())  # mkstemp creates it 0o600
            write(f)
            f.flush()
            os.fsync(f.fileno())
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
        raise CheckpointError(f"expected a file {path}, but it does not exist") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


# --------------------------------------------------------------------------
# metrics.jsonl: one JSON object per epoch
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

    A complete line that is not a JSON object raises :class:`CheckpointError`
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
                raise CheckpointError(f"{path}, line {number}: not JSON ({e}); the file is "
                                      f"damaged") from None
            if not isinstance(record, dict):
                raise CheckpointError(f"{path}, line {number}: a JSON {type(record).__name__}, "
                                      f"not an object; the file is damaged")
            records.append(record)
    return records


def truncate_jsonl(path, keep):
    """Atomically rewrite a JSON-lines file keeping the records where keep(r)."""
    records = [r for r in read_jsonl(path) if keep(r)]
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


# --------------------------------------------------------------------------
# checkpoint.npz
# --------------------------------------------------------------------------

def save_checkpoint(path, model_state, optim_state, meta):
    """Atomically write model and optimiser state plus JSON-able ``meta``.

    ``optim_state`` maps keys to scalars, arrays or lists of arrays/None.
    """
    arrays = {f"model/{k}": np.asarray(v) for k, v in model_state.items()}
    optim_scalars = {}
    for key, value in optim_state.items():
        if isinstance(value, (list, tuple)):
            optim_scalars[key] = {"list": len(value)}
            for i, a in enumerate(value):
                if a is not None:
                    arrays[f"optim/{key}/{i}"] = np.asarray(a)
        elif isinstance(value, np.ndarray):
            optim_scalars[key] = {"array": True}
            arrays[f"optim/{key}"] = value
        else:
            optim_scalars[key] = {"value": value}
    header = {"meta": meta, "optim": optim_scalars, "format": 1}
    arrays["meta"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns ``(model_state, optim_state, meta)``. A missing, truncated or
    foreign file raises :class:`CheckpointError` naming the file.
    """
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}: expected a file written by "
                              f"`python -m scratchvae train --out DIR` (DIR/{CHECKPOINT})")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {e}") from None
    if "meta" not in data:
        raise CheckpointError(f"{path} is not a scratchvae checkpoint (no 'meta' entry)")
    try:
        header = json.loads(bytes(data.pop("meta")).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} has an unreadable header: {e}") from None
    model_state = {k[len("model/"):]: v for k, v in data.items() if k.startswith("model/")}
    optim_state = {}
    try:
        for key, desc in header["optim"].items():
            if "list" in desc:
                optim_state[key] = [data.get(f"optim/{key}/{i}") for i in range(desc["list"])]
            elif "array" in desc:
                optim_state[key] = data[f"optim/{key}"]
            else:
                optim_state[key] = desc["value"]
        meta = header["meta"]
    except (KeyError, TypeError, AttributeError) as e:   # an entry the header lists is gone
        raise CheckpointError(f"checkpoint {path} is incomplete: its header lists an entry "
                              f"the file does not hold ({type(e).__name__}: {e})") from None
    return model_state, optim_state, meta

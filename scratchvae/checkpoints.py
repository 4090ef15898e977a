"""Checkpoints: a model's and an optimiser's state in one file, written atomically.

A checkpoint is one ``.npz``: model parameters under ``model/<name>``,
optimiser arrays under ``optim/<key>/<index>``, and everything else (epoch,
random-generator states, optimiser scalars) as JSON under ``meta``. It is
written with :func:`scratchvae.files.atomic_write`, so a crash mid-write
leaves the previous checkpoint intact.
"""
import json
import os
import zipfile

import numpy as np

from .files import FileError, atomic_write

#: the checkpoint's file name in a run directory
CHECKPOINT = "checkpoint.npz"


class CheckpointError(FileError):
    """A checkpoint or run directory that cannot be used."""


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

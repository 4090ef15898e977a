"""Checkpoints: a model's and an optimiser's state in one file, written atomically.

A checkpoint is one ``.npz``: model parameters under ``model/<name>``,
optimiser arrays under ``optim/<key>/<index>``, and everything else (epoch,
random-generator states, optimiser scalars) as JSON under ``meta``. It is
written with :func:`scratchvae.files.atomic_write`, so a crash mid-write
leaves the previous checkpoint intact.
"""
import json
import math
import os
import zipfile

import numpy as np

from .files import FileError, atomic_write

#: the checkpoint's file name in a run directory
CHECKPOINT = "checkpoint.npz"


class CheckpointError(FileError):
    """A checkpoint or run directory that cannot be used."""


class StateMismatch(CheckpointError):
    """A checkpoint whose members are not those of the state it is read for;
    ``detail`` says which."""

    def __init__(self, path, detail):
        super().__init__(f"checkpoint {path} does not fit the state it is read for: {detail}")
        self.detail = detail


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


#: the largest ``meta`` member (JSON: epoch, generator states, config, optimiser scalars)
META_LIMIT = 1 << 20
#: the most entries a list of optimiser state may have: far more than any model has
#: parameter tensors, so a damaged count cannot make the reader loop for hours
LIST_LIMIT = 1 << 16
#: the array kinds a checkpoint holds: bool, signed and unsigned integers, floats
KINDS = "biuf"


def _member_header(z, info, path):
    """``(shape, dtype)`` of the .npy member ``info`` of the open zip ``z``, read from
    its header alone; a member that is compressed, not a plain numeric array, or whose
    declared size differs from what its header says raises :class:`CheckpointError`."""
    fmt = np.lib.format
    name = info.filename
    if info.compress_type != zipfile.ZIP_STORED:   # np.savez stores; a compressed member
        raise CheckpointError(f"checkpoint {path}: member {name} is compressed; a checkpoint "
                              f"stores its arrays uncompressed (np.savez)")
    try:
        with z.open(info) as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            header_bytes = f.tell()
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"checkpoint {path}: member {name} has no readable array "
                              f"header: {e}") from None
    if dtype.kind not in KINDS or dtype.hasobject:
        raise CheckpointError(f"checkpoint {path}: member {name} holds {dtype}, not a "
                              f"numeric array")
    claimed = math.prod(shape) * dtype.itemsize
    if header_bytes + claimed != info.file_size:
        raise CheckpointError(f"checkpoint {path}: member {name} claims shape {shape} of "
                              f"{dtype} ({claimed:,} bytes) but holds "
                              f"{info.file_size - header_bytes:,} bytes")
    return tuple(shape), dtype


def _read_member(z, info, path):
    try:
        with z.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {e}") from None


def _optim_state(header, data, path):
    """The optimiser state that the header's ``optim`` entry describes, its arrays
    taken from ``data``."""
    optim = header.get("optim")
    if not isinstance(optim, dict):
        raise CheckpointError(f"checkpoint {path}: its header has no 'optim' object")
    state = {}
    for key, desc in optim.items():
        if not isinstance(desc, dict) or len(desc) != 1:
            raise CheckpointError(f"checkpoint {path}: optimiser entry {key!r} is {desc!r}, "
                                  f"not one of {{'list': n}}, {{'array': true}}, "
                                  f"{{'value': v}}")
        if "list" in desc:
            n = desc["list"]
            if type(n) is not int or not 0 <= n <= LIST_LIMIT:
                raise CheckpointError(f"checkpoint {path}: optimiser entry {key!r} claims a "
                                      f"list of {n!r} arrays; expected 0 to {LIST_LIMIT}")
            state[key] = [data.get(f"optim/{key}/{i}") for i in range(n)]
        elif "array" in desc:
            if f"optim/{key}" not in data:
                raise CheckpointError(f"checkpoint {path} is incomplete: its header lists an "
                                      f"entry the file does not hold (optim/{key})")
            state[key] = data[f"optim/{key}"]
        elif "value" in desc:
            state[key] = desc["value"]
        else:
            raise CheckpointError(f"checkpoint {path}: optimiser entry {key!r} is {desc!r}")
    return state


def load_checkpoint(path, expected=None, optim=True):
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns ``(model_state, optim_state, meta)``. Before any array is read, every
    member's .npy header is checked: stored uncompressed, numeric, its declared size
    that of its shape and dtype, ``meta`` at most :data:`META_LIMIT` bytes. With
    ``expected`` (member name -> ``(shape, dtype)``, e.g. from the model and optimiser
    the state is for), the file's ``model/`` members must be exactly those, and each
    ``optim/`` member one of them, of that shape and dtype: the arrays read are then
    at most the state they are loaded into. ``optim=False`` reads no optimiser
    member (``optim_state`` is then ``{}``). A missing, truncated, foreign or
    crafted file raises :class:`CheckpointError` naming the file and what is wrong.
    """
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}: expected a file written by "
                              f"`python -m scratchvae train --out DIR` (DIR/{CHECKPOINT})")
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {e}") from None
    with z:
        members = {}
        for info in z.infolist():
            key = info.filename[:-len(".npy")]
            if not info.filename.endswith(".npy") or not (
                    key == "meta" or key.startswith(("model/", "optim/"))):
                raise CheckpointError(f"checkpoint {path}: unexpected member "
                                      f"{info.filename!r}; a checkpoint holds meta, model/* "
                                      f"and optim/*")
            if key.startswith("optim/") and not optim:
                continue
            members[key] = (info, *_member_header(z, info, path))
        if "meta" not in members:
            raise CheckpointError(f"{path} is not a scratchvae checkpoint (no 'meta' entry)")
        _, shape, dtype = members["meta"]
        if dtype != np.uint8 or len(shape) != 1 or shape[0] > META_LIMIT:
            raise CheckpointError(f"checkpoint {path}: its meta entry is {shape} of {dtype}; "
                                  f"expected at most {META_LIMIT:,} bytes of JSON")
        if expected is not None:
            _check_members(members, expected, path)
        data = {key: _read_member(z, info, path) for key, (info, _, _) in members.items()}
    try:
        header = json.loads(bytes(data.pop("meta")).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"checkpoint {path} has an unreadable header: {e}") from None
    if not isinstance(header, dict) or not isinstance(header.get("meta"), dict):
        raise CheckpointError(f"checkpoint {path}: its header is not an object with a "
                              f"'meta' object")
    model_state = {k[len("model/"):]: v for k, v in data.items() if k.startswith("model/")}
    optim_state = _optim_state(header, data, path) if optim else {}
    return model_state, optim_state, header["meta"]


def _check_members(members, expected, path):
    """The members of the file (key -> (info, shape, dtype)) against ``expected``
    (key -> (shape, dtype)): the same model/ members, optim/ members among those
    expected, each of the expected shape and dtype."""
    held = {k for k in members if k.startswith("model/")}
    wanted = {k for k in expected if k.startswith("model/")}
    if held != wanted:
        missing, extra = sorted(wanted - held), sorted(held - wanted)
        raise StateMismatch(path, f"its parameters do not match: missing {missing[:5]}, "
                                  f"unexpected {extra[:5]}")
    for key, (_, shape, dtype) in members.items():
        if key == "meta":
            continue
        if key not in expected:
            raise StateMismatch(path, f"unexpected member {key}")
        want_shape, want_dtype = expected[key]
        if (shape, dtype) != (tuple(want_shape), np.dtype(want_dtype)):
            raise StateMismatch(path, f"{key} is {shape} of {dtype}, expected "
                                      f"{tuple(want_shape)} of {np.dtype(want_dtype)}")

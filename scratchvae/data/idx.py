"""The IDX file format of LeCun et al.: encode, decode, read and write.

A big-endian header followed by the raw array, usually gzip-compressed::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 = uint8 (the only one MNIST uses), 0x09 int8,
                0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    4 .. 4+4d   the d sizes, each a big-endian uint32
    then        prod(sizes) elements, big-endian, C order

so an MNIST image file starts with the magic number 0x00000803 (uint8, 3 dims:
N, 28, 28) and a label file with 0x00000801 (uint8, 1 dim: N). A file is
decoded only if its header is valid and its length matches the header exactly.
"""
import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ..files import atomic_write


class DataError(ValueError):
    """A data file exists but is corrupt, truncated, or not the expected file."""


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
    """Write ``array`` as an IDX file, atomically (:func:`scratchvae.files.atomic_write`).

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
    atomic_write(path, lambda f: f.write(data))
    return path

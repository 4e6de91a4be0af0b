"""Refuse data arrays by their declared size before reading them.

A file can declare any shape: an ``.npy`` header or an HDF5 dataset of 64·10¹² elements costs a few
bytes to write, and reading it ended in ``MemoryError`` (an internal error). The header's shape and
element size are checked first: against the bytes the file really holds (``.npz``), and against the
memory this machine has available for the rows that will be read (``limit`` of them).
"""

from __future__ import annotations

import math
import tokenize
import zipfile
import zlib
from typing import Any

import numpy as np
import torch

from uncert_cli.core.errors import UserError
from uncert_cli.core.memory import available_memory_bytes, format_size

# What numpy raises for a damaged npz: a truncated or overwritten zip (BadZipFile, also for a bad CRC), a
# corrupt compressed member (zlib.error), a cut-off member (EOFError), a garbled array header (its Python
# literal fails to tokenize or parse), an object array (ValueError: no pickle).
NPZ_READ_ERRORS: tuple[type[Exception], ...] = (
    OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, tokenize.TokenError, SyntaxError,
)
# What h5py raises for a damaged HDF5 file besides OSError: RuntimeError from the C library's own checks
# ("Object visitation failed (unable to offset into local heap data block)"), ValueError/TypeError/KeyError
# for metadata that decodes to nonsense.
HDF5_READ_ERRORS: tuple[type[Exception], ...] = (OSError, RuntimeError, ValueError, TypeError, KeyError)


def check_declared_size(shape: tuple[int, ...], itemsize: int, limit: int | None, source: str) -> None:
    """Refuse an array of ``shape`` whose first ``limit`` rows would not fit in available memory."""
    if not shape:
        return
    rows = shape[0] if limit is None else min(limit, shape[0])
    row_elements = math.prod(shape[1:])
    needed = rows * row_elements * itemsize
    # Reading converts to float32 (or int64 for labels): up to twice the stored size for uint8/int32.
    available = available_memory_bytes(torch.device("cpu"))
    if available is not None and 2 * needed > available:
        shown = "×".join(f"{d:,}" for d in shape)
        raise UserError(
            f"{source} declares an array of shape {shown}: reading {rows:,} rows needs {format_size(needed)} or more, "
            f"more than the {format_size(available)} available; use fewer examples with {{param}} or check the file",
            param="limit",
        )


def _npy_header(handle: Any) -> tuple[tuple[int, ...], np.dtype] | None:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    else:  # format 3.0 (utf-8 field names) has no public reader; numpy itself checks it
        return None
    return tuple(int(d) for d in shape), np.dtype(dtype)


def check_npz_member(archive: Any, key: str, limit: int | None, source: str) -> None:
    """Check the ``.npy`` header of ``archive[key]`` (a ``numpy.lib.npyio.NpzFile``) before reading it.

    Refuses a header that declares more bytes than the member holds (a damaged or forged file)
    and arrays too large for available memory (:func:`check_declared_size`).
    """
    member = key if key in archive.zip.namelist() else f"{key}.npy"
    try:
        with archive.zip.open(member) as handle:
            header = _npy_header(handle)
            header_size = handle.tell()
        stored = archive.zip.getinfo(member).file_size - header_size
    except (KeyError, ValueError, OSError):
        return  # not a plain .npy member: numpy's own reader reports what is wrong
    if header is None:
        return
    shape, dtype = header
    declared = math.prod(shape) * dtype.itemsize
    if declared > stored:
        shown = "×".join(f"{d:,}" for d in shape)
        raise UserError(
            f"array {key!r} in {source} declares shape {shown} ({format_size(declared)}) but the file holds only "
            f"{format_size(stored)} of it; the file is damaged: save it again with numpy.savez(path, x=..., y=...)"
        )
    check_declared_size(shape, dtype.itemsize, limit, f"{source}:{key}")

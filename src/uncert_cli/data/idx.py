"""Reader for the idx format of MNIST-like datasets (LeCun's "IDX" files, optionally gzipped).

Layout: 2 zero bytes, a type code (0x08 = uint8), the number of dimensions ``d``, then ``d``
big-endian uint32 sizes, then the data in C order. Images files are ``(N, H, W)``, label files ``(N,)``.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np

from uncert_cli.core.errors import UserError
from uncert_cli.core.input_files import check_input_file

# Type codes of the idx format -> numpy dtype (multi-byte types are big-endian).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open(path: Path) -> BinaryIO:
    # Decide by content, not by name: torchvision leaves both "x" and "x.gz", and people rename files.
    check_input_file(path, "dataset file", whole=False)  # records are read up to --limit only
    with open(path, "rb") as probe:
        is_gzip = probe.read(2) == b"\x1f\x8b"
    return cast(BinaryIO, gzip.open(path, "rb")) if is_gzip else open(path, "rb")


def read_idx(path: Path, limit: int | None = None) -> np.ndarray:
    """Read an idx file into a numpy array of shape ``(N, *dims)`` (native byte order).

    ``limit`` reads only the first ``limit`` records, which keeps ``--limit`` cheap on big files.
    """
    try:
        with _open(path) as stream:
            header = stream.read(4)
            if len(header) != 4 or header[0] != 0 or header[1] != 0 or header[2] not in _IDX_DTYPES:
                raise UserError(f"{path} is not an idx file (bad magic number); re-download it with {{param}}", param="download")
            dtype = _IDX_DTYPES[header[2]]
            ndim = header[3]
            shape = list(struct.unpack(f">{ndim}I", stream.read(4 * ndim)))
            if limit is not None:
                shape[0] = min(shape[0], limit)
            count = int(np.prod(shape))
            payload = stream.read(count * dtype.itemsize)
    except (OSError, EOFError, struct.error) as err:
        raise UserError(f"cannot read idx file {path}: {err}; re-download it with {{param}}", param="download") from err
    if len(payload) != count * dtype.itemsize:
        raise UserError(
            f"idx file {path} is truncated ({len(payload)} of {count * dtype.itemsize} bytes); re-download it with {{param}}",
            param="download",
        )
    return np.frombuffer(payload, dtype=dtype).astype(dtype.newbyteorder("="), copy=False).reshape(shape)

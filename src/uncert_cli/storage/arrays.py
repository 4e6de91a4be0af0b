"""Leaf helpers of the factor file shared by the writer, the reader, the codecs and the checks:
how an array is written and read, which dtypes a dataset may have, and the "damaged" message.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from uncert_cli.core.errors import UserError

COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
FLOAT_DTYPES = tuple(np.dtype(t) for t in ("float16", "float32", "float64"))
INDEX_DTYPES = tuple(np.dtype(t) for t in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"))
WEIGHT_DTYPES = FLOAT_DTYPES + INDEX_DTYPES + tuple(np.dtype(t) for t in ("bool", "complex64", "complex128"))


def write_array(group: h5py.Group, name: str, tensor: torch.Tensor) -> None:
    """One dataset ``name`` in ``group`` holding ``tensor`` (moved to the CPU)."""
    array = tensor.detach().cpu().numpy()
    # Fletcher-32 checksums let the reader tell a flipped byte from a value (they need chunking, which
    # scalars and empty arrays cannot have); compression only pays from a few dozen values on.
    if array.size >= 64:
        group.create_dataset(name, data=array, fletcher32=True, **COMPRESSION)
    elif array.ndim and array.size:
        group.create_dataset(name, data=array, fletcher32=True)
    else:
        group.create_dataset(name, data=array)


def read_tensor(dataset: h5py.Dataset) -> torch.Tensor:
    """A dataset as a tensor in native byte order, of the dataset's shape (0-d stays 0-d)."""
    # torch refuses big-endian arrays (files written by other tools may hold them). np.require, not
    # np.ascontiguousarray: the latter turns a 0-d value (BatchNorm's num_batches_tracked) into shape
    # (1,), and the weights would no longer match their fingerprint.
    array = np.asarray(dataset[()], dtype=dataset.dtype.newbyteorder("="))
    return torch.from_numpy(np.require(array, requirements="C"))


def damaged(path: Path, where: str, problem: str) -> UserError:
    return UserError(f"'{path}' is damaged: {where} {problem}; refit it with 'uncert fit'")

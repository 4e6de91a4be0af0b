"""Fixtures for the dataset-layer tests: the genuine data under $UNCERT_DATA and small file writers."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """The genuine datasets: ``$UNCERT_DATA``, else ``<repo>/../shared/data``; skips when absent."""
    root = Path(os.environ.get("UNCERT_DATA", str(REPO_ROOT.parent / "shared" / "data"))).resolve()
    if not (root / "MNIST").is_dir():
        pytest.skip(f"genuine datasets not found under {root} (set UNCERT_DATA to the shared data folder)")
    return root


@pytest.fixture(scope="session")
def mnist_train(shared_data_root: Path):
    """MNIST train, loaded once per session (60,000 images)."""
    from uncert_cli.data import load_dataset

    return load_dataset("mnist", split="train", root=shared_data_root)


@pytest.fixture(scope="session")
def write_idx():
    """The idx writer below, as a fixture (test modules here are not a package, so they cannot import it)."""
    return _write_idx


def _write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    """Write a uint8 array in idx format (header: 0, 0, 0x08, ndim, then big-endian sizes)."""
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)
    return path

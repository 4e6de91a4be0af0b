"""Shared fixtures: the genuine data root, and a tiny real checkpoint for CLI tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_root() -> Path | None:
    candidates = [os.environ.get("UNCERT_DATA"), str(REPO.parent / "shared" / "data")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "MNIST").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The genuine datasets (``$UNCERT_DATA`` or ``../shared/data``); tests skip when absent."""
    root = _shared_data_root()
    if root is None:
        pytest.skip("genuine datasets not found: set UNCERT_DATA to the shared data folder")
    return root

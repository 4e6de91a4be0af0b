"""Make ``tests.reference`` importable and run the curvature tests in float64 on 2 threads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)

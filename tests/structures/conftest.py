"""Structure tests: float64 tiny networks with explicit GGNs (see ``reference``)."""

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

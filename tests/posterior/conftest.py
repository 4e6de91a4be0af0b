import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # for posterior_refs

from posterior_refs import DT, mlp  # noqa: E402


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(30, 4, generator=g, dtype=DT)


@pytest.fixture
def model():
    return mlp(seed=0)

"""The posterior tests' default network (``seeded_mlp``, 4-6-5-3) and its 30 float64 inputs."""

import pytest
import torch

from tests.reference.models import DT, seeded_mlp


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(30, 4, generator=g, dtype=DT)


@pytest.fixture
def model():
    return seeded_mlp(seed=0)

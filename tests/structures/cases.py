"""Tiny networks + data for the structure tests, with their explicit GGN."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor, nn

from tests.curvature.models import AttentionSequenceFirstNet, Conv1dNet, SequenceFirstNet, SequenceNet, SharedNet, mlp
from tests.structures.reference import explicit_ggn


@dataclass
class Case:
    name: str
    model: nn.Module
    x: Tensor
    y: Tensor
    task: str

    def source(self):
        x, y = self.x, self.y
        return lambda: [(x[:5], y[:5]), (x[5:], y[5:])]

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.model.named_parameters()]

    def ggn(self, names: list[str] | None = None) -> Tensor:
        return _ggn(self.name, tuple(names or self.names))


def _make(name: str) -> Case:
    g = torch.Generator().manual_seed(1)
    if name == "mlp-cls":
        torch.manual_seed(2)
        return Case(name, mlp(), torch.randn(9, 4, generator=g, dtype=torch.float64),
                    torch.randint(0, 3, (9,), generator=g), "classification")
    if name == "mlp-reg":
        torch.manual_seed(3)
        return Case(name, mlp(d_out=2), torch.randn(9, 4, generator=g, dtype=torch.float64),
                    torch.randn(9, 2, generator=g, dtype=torch.float64), "regression")
    if name == "conv1d":
        torch.manual_seed(4)
        return Case(name, Conv1dNet().double(), torch.randn(7, 2, 5, generator=g, dtype=torch.float64),
                    torch.randint(0, 2, (7,), generator=g), "classification")
    if name == "sequence":
        torch.manual_seed(5)
        return Case(name, SequenceNet().double(), torch.randn(7, 3, 3, generator=g, dtype=torch.float64),
                    torch.randint(0, 2, (7,), generator=g), "classification")
    if name == "sequence-first":  # (T, B, I) at the Linear layers, T = 3 differs from both batch sizes
        torch.manual_seed(7)
        return Case(name, SequenceFirstNet().double(), torch.randn(7, 3, 3, generator=g, dtype=torch.float64),
                    torch.randint(0, 2, (7,), generator=g), "classification")
    if name == "attention-first":  # nn.MultiheadAttention(batch_first=False) between two Linear layers
        torch.manual_seed(8)
        return Case(name, AttentionSequenceFirstNet().double(), torch.randn(7, 3, 3, generator=g, dtype=torch.float64),
                    torch.randint(0, 2, (7,), generator=g), "classification")
    if name == "shared":
        torch.manual_seed(6)
        return Case(name, SharedNet().double(), torch.randn(7, 4, generator=g, dtype=torch.float64),
                    torch.randint(0, 3, (7,), generator=g), "classification")
    raise KeyError(name)


@lru_cache(maxsize=None)
def case(name: str) -> Case:
    return _make(name)


@lru_cache(maxsize=None)
def _ggn(name: str, names: tuple[str, ...]) -> Tensor:
    c = case(name)
    return explicit_ggn(c.model, list(names), c.x, c.y, c.task)


CASES = ("mlp-cls", "mlp-reg", "conv1d", "sequence", "sequence-first", "attention-first", "shared")

"""The declared table of reference cases: tiny float64 networks × inputs × task, with their explicit GGN.

Each row names a network, the seed of its weights, the shape of its inputs (``(N, ...)``, standard
normal) and the task with its number of outputs (classes, or regression targets). Inputs and targets
come from one generator seeded 1, so a case is the same in every test and every process. Tests take a
case through the ``ref_case`` fixture (``tests/conftest.py``), parametrised indirectly by row name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor, nn

from tests.reference.ggn import explicit_ggn
from tests.reference.models import (
    DT,
    AttentionSequenceFirstNet,
    Conv1dNet,
    SequenceFirstNet,
    SequenceNet,
    SharedNet,
    cnn,
    mlp,
)


@dataclass(frozen=True)
class CaseSpec:
    """One row of the table: how to build the network, its inputs and its targets."""

    network: Callable[[], nn.Module]
    seed: int  # torch.manual_seed before the network is built (its initial weights)
    input_shape: tuple[int, ...]  # (N, ...) standard-normal inputs
    task: str  # "classification" or "regression"
    outputs: int  # classes (classification) or target dimensions (regression)


CASE_TABLE: dict[str, CaseSpec] = {
    "mlp-cls": CaseSpec(mlp, 2, (9, 4), "classification", 3),
    "mlp-reg": CaseSpec(lambda: mlp(d_out=2), 3, (9, 4), "regression", 2),
    "conv1d": CaseSpec(lambda: Conv1dNet().double(), 4, (7, 2, 5), "classification", 2),
    "sequence": CaseSpec(lambda: SequenceNet().double(), 5, (7, 3, 3), "classification", 2),
    # (T, B, I) at the Linear layers; T = 3 differs from both batch sizes of Case.source
    "sequence-first": CaseSpec(lambda: SequenceFirstNet().double(), 7, (7, 3, 3), "classification", 2),
    # nn.MultiheadAttention(batch_first=False) between two Linear layers
    "attention-first": CaseSpec(lambda: AttentionSequenceFirstNet().double(), 8, (7, 3, 3), "classification", 2),
    "shared": CaseSpec(lambda: SharedNet().double(), 6, (7, 4), "classification", 3),
    # task and bias variants (the exact-diagonal tests run on every row)
    "mlp-cls-nobias": CaseSpec(lambda: mlp(bias=False), 2, (9, 4), "classification", 3),
    "mlp-reg-nobias": CaseSpec(lambda: mlp(bias=False, d_out=2), 3, (9, 4), "regression", 2),
    "cnn-cls": CaseSpec(cnn, 9, (5, 2, 4, 4), "classification", 3),
    "cnn-reg": CaseSpec(cnn, 10, (5, 2, 4, 4), "regression", 3),
    "cnn-cls-nobias": CaseSpec(lambda: cnn(bias=False), 11, (5, 2, 4, 4), "classification", 3),
    "cnn-reg-nobias": CaseSpec(lambda: cnn(bias=False), 12, (5, 2, 4, 4), "regression", 3),
    "sequence-reg": CaseSpec(lambda: SequenceNet().double(), 13, (7, 3, 3), "regression", 2),
    "sequence-nobias": CaseSpec(lambda: SequenceNet(bias=False).double(), 14, (7, 3, 3), "classification", 2),
    "sequence-reg-nobias": CaseSpec(lambda: SequenceNet(bias=False).double(), 15, (7, 3, 3), "regression", 2),
    "shared-reg": CaseSpec(lambda: SharedNet().double(), 16, (7, 4), "regression", 3),
}
CASES = tuple(CASE_TABLE)
# The rows the structure tests (full, lowrank, ekfac, kfac-diag against the explicit GGN) run on: one per
# network shape; the task and bias variants above add nothing there but minutes.
STRUCTURE_CASES = ("mlp-cls", "mlp-reg", "conv1d", "sequence", "sequence-first", "attention-first", "shared")


@dataclass
class Case:
    """A built row: the network, its inputs ``x (N, ...)`` and targets ``y`` (``(N,)`` or ``(N, outputs)``)."""

    name: str
    model: nn.Module
    x: Tensor
    y: Tensor
    task: str

    def source(self):
        """A data source of two batches (5 and N − 5 examples), as the curvature builders take it."""
        x, y = self.x, self.y
        return lambda: [(x[:5], y[:5]), (x[5:], y[5:])]

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.model.named_parameters()]

    def ggn(self, names: list[str] | None = None) -> Tensor:
        """``(P, P)`` explicit GGN over ``names`` (default all parameters), computed once per case."""
        return _ggn(self.name, tuple(names or self.names))


def _build(name: str) -> Case:
    spec = CASE_TABLE[name]
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(spec.seed)
    model = spec.network()
    x = torch.randn(*spec.input_shape, generator=g, dtype=DT)
    n = spec.input_shape[0]
    if spec.task == "classification":
        y = torch.randint(0, spec.outputs, (n,), generator=g)
    else:
        y = torch.randn(n, spec.outputs, generator=g, dtype=DT)
    return Case(name, model, x, y, spec.task)


@cache
def case(name: str) -> Case:
    """The case of row ``name``, built once per process."""
    return _build(name)


@cache
def _ggn(name: str, names: tuple[str, ...]) -> Tensor:
    c = case(name)
    return explicit_ggn(c.model, c.x, c.task, names)

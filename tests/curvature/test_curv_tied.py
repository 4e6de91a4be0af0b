"""Tied weights form one block whose curvature is that of the shared tensor (every use summed),
and frozen parameters are left out unless asked for (issue 20)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests.reference.ggn import explicit_ggn
from tests.reference.indices import param_diagonal, param_index, restrict
from uncert_cli.curvature import DiagonalBlock, compute_curvature
from uncert_cli.curvature.structured import compute_structured_curvature
from uncert_cli.curvature.subset import select_units
from uncert_cli.errors import UserError


class TiedMLP(nn.Module):
    """Two Linear layers share one weight (each keeps its own bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 5)
        self.tied = nn.Linear(5, 5)
        self.tied2 = nn.Linear(5, 5)
        self.tied2.weight = self.tied.weight
        self.out = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.fc1(x))
        h = torch.tanh(self.tied(h))
        return self.out(torch.tanh(self.tied2(h)))


class TiedEmbedding(nn.Module):
    """A language-model head tied to its embedding (``head.weight is emb.weight``), a Linear and an
    Embedding sharing one tensor, the head also called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(6, 4)
        self.mix = nn.Linear(8, 4)
        self.head = nn.Linear(4, 6, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, idx: Tensor) -> Tensor:
        h = torch.tanh(self.mix(self.emb(idx).flatten(1)))
        return self.head(h) + 0.5 * self.head(h.flip(1))


def _data(model: nn.Module) -> tuple[Tensor, Tensor]:
    x = torch.randint(0, 6, (7, 2)) if isinstance(model, TiedEmbedding) else torch.randn(7, 4, dtype=torch.float64)
    return x, torch.randint(0, 3, (7,))


@pytest.mark.parametrize("make", [TiedMLP, TiedEmbedding])
@pytest.mark.parametrize("method", ["diag", "kfac"])
def test_tied_block_is_the_exact_ggn_diagonal(make, method: str) -> None:
    model = make().double()
    x, y = _data(model)
    curv = compute_curvature(model, [(x, y)], method=method)
    ggn = explicit_ggn(model, x, "classification")
    names = [n for b in curv.blocks for n in b.param_names]
    # every tensor exactly once, under the name named_parameters() gives it
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert curv.num_params == sum(p.numel() for p in model.parameters())
    tied = [b for b in curv.blocks if "+" in b.module]
    assert len(tied) == 1 and isinstance(tied[0], DiagonalBlock)
    for name, diag in zip(tied[0].param_names, tied[0].diagonal):
        torch.testing.assert_close(diag, param_diagonal(model, ggn, name), rtol=1e-9, atol=1e-12)


def test_tied_block_by_use_would_be_wrong() -> None:
    """The reference really has cross terms between the uses: the sum of each use's own diagonal
    is not the shared tensor's diagonal, so the test above could fail."""
    model = TiedMLP().double()
    x, y = _data(model)
    untied = TiedMLP().double()
    untied.load_state_dict(model.state_dict())
    untied.tied2.weight = nn.Parameter(model.tied.weight.detach().clone())  # same values, two tensors
    ggn_untied = explicit_ggn(untied, x, "classification")
    summed = param_diagonal(untied, ggn_untied, "tied.weight") + param_diagonal(untied, ggn_untied, "tied2.weight")
    exact = param_diagonal(model, explicit_ggn(model, x, "classification"), "tied.weight")
    assert (summed - exact).norm() > 1e-3 * exact.norm()


def test_tied_full_block_matches_the_explicit_ggn() -> None:
    model = TiedMLP().double()
    x, y = _data(model)
    curv = compute_structured_curvature(model, lambda: iter([(x, y)]), method="full")
    (block,) = curv.blocks
    ggn = explicit_ggn(model, x, "classification")
    torch.testing.assert_close(block.matrix, restrict(ggn, param_index(model, block.param_names)), rtol=1e-8, atol=1e-12)


def test_a_tied_unit_is_chosen_by_any_of_its_modules() -> None:
    model = TiedMLP()
    (unit,) = select_units(model, "tied2")
    assert unit.name == "tied+tied2"
    assert unit.param_names == ("tied.weight", "tied.bias", "tied2.bias")
    assert [u.name for u in select_units(model, "tied+tied2,out")] == ["tied+tied2", "out"]


def test_frozen_parameters_are_left_out_unless_included() -> None:
    model = TiedMLP().double()
    model.fc1.requires_grad_(False)
    model.out.bias.requires_grad_(False)
    x, y = _data(model)
    curv = compute_curvature(model, [(x, y)], method="kfac")
    names = [n for b in curv.blocks for n in b.param_names]
    assert "fc1.weight" not in names and "out.bias" not in names and "out.weight" in names
    out = next(b for b in curv.blocks if b.module == "out")
    ggn = explicit_ggn(model, x, "classification")
    # a partly frozen Linear keeps its trainable weight as an exact diagonal
    assert isinstance(out, DiagonalBlock)
    torch.testing.assert_close(out.diagonal[0], param_diagonal(model, ggn, "out.weight"), rtol=1e-9, atol=1e-12)
    assert [p.requires_grad for p in model.fc1.parameters()] == [False, False]  # flags restored
    every = compute_curvature(model, [(x, y)], method="kfac", include_frozen=True)
    assert every.num_params == sum(p.numel() for p in model.parameters())


def test_all_frozen_says_how_to_include_them() -> None:
    model = TiedMLP().requires_grad_(False)
    with pytest.raises(UserError, match="pass include_frozen to fit"):  # the CLI shows --include-frozen
        select_units(model, "all")

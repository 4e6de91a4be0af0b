"""Curvatures built without the uncert engine: KFAC and diagonal blocks from explicit references, and
Kronecker blocks with random SPD factors. Parameter order within a block is ``W_aug = [W | b]`` row-major.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import jacrev, vmap

from tests.reference.ggn import loss_hessians, waug_ggn
from tests.reference.indices import param_name
from tests.reference.models import DT
from uncert_cli.curvature.blocks import Curvature, DiagonalBlock, KroneckerBlock


def linear_modules(model: nn.Module, only: tuple[str, ...] | None = None) -> list[tuple[str, nn.Linear]]:
    """``(name, layer)`` of every ``nn.Linear`` (of ``only``, when given), in module order."""
    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return [(n, m) for n, m in mods if only is None or n in only]


def _layers(model: nn.Module):
    """A bare Linear is its own single layer (module name ""), else the Sequential's children."""
    return [("", model)] if isinstance(model, nn.Linear) else list(model.named_children())


def _forward_with_eps(model: nn.Sequential, x: Tensor, eps: dict[str, Tensor], acts: dict[str, Tensor] | None):
    h = x
    for name, m in _layers(model):
        if isinstance(m, nn.Linear):
            if acts is not None:
                acts[name] = h
            h = m(h) + eps[name]
        else:
            h = m(h)
    return h


def kfac_factors(model: nn.Sequential, x: Tensor, task: str, modules: list[str]) -> dict[str, tuple[Tensor, Tensor]]:
    """KFAC factors from captured activations and pre-activation Jacobians: ``A = E[a aᵀ]``, ``G = E[J_hᵀ H J_h]``."""
    acts: dict[str, Tensor] = {}
    zeros = {n: torch.zeros(m.out_features, dtype=DT) for n, m in _layers(model) if isinstance(m, nn.Linear)}
    with torch.no_grad():
        f = _forward_with_eps(model, x, {n: z.expand(x.shape[0], -1) for n, z in zeros.items()}, acts)
    h = loss_hessians(f, task)

    def single(eps, xi):
        return _forward_with_eps(model, xi.unsqueeze(0), eps, None)[0]

    jh = vmap(jacrev(single), in_dims=(None, 0))(zeros, x)  # name -> (B, C, O)
    out = {}
    for m in modules:
        a = torch.cat([acts[m], torch.ones(x.shape[0], 1, dtype=DT)], 1)
        A = (a.T @ a / x.shape[0]).detach()
        G = (torch.einsum("bco,bcd,bde->oe", jh[m], h, jh[m]) / x.shape[0]).detach()
        out[m] = (A.contiguous(), G.contiguous())
    return out


def _kronecker_block(model: nn.Module, module: str, A: Tensor, G: Tensor) -> KroneckerBlock:
    layer = model.get_submodule(module)
    return KroneckerBlock(module, (param_name(module, "weight"), param_name(module, "bias")),
                          (tuple(layer.weight.shape), tuple(layer.bias.shape)), A, G)


def kfac_curvature(model, x, task, modules=None, n_data=None) -> Curvature:
    """Exact KFAC of the Linear layers (``modules``: all) on the examples ``x``."""
    mods = [n for n, _ in linear_modules(model, modules)]
    facs = kfac_factors(model, x, task, mods)
    blocks = [_kronecker_block(model, m, *facs[m]) for m in mods]
    return Curvature(blocks, n_data or x.shape[0], task, "kfac", "exact")


def diag_curvature(model, x, task, modules=None, n_data=None) -> Curvature:
    """The explicit GGN's diagonal of the Linear layers (``modules``: all) on the examples ``x``."""
    mods = [n for n, _ in linear_modules(model, modules)]
    d = waug_ggn(model, x, task, mods).diagonal()
    blocks, start = [], 0
    for m in mods:
        lin = model.get_submodule(m)
        O, I = lin.weight.shape
        waug = d[start : start + O * (I + 1)].reshape(O, I + 1)
        start += O * (I + 1)
        blocks.append(
            DiagonalBlock(
                m,
                (param_name(m, "weight"), param_name(m, "bias")),
                (tuple(lin.weight.shape), tuple(lin.bias.shape)),
                (waug[:, :I].clone(), waug[:, I].clone()),
            )
        )
    return Curvature(blocks, n_data or x.shape[0], task, "diag", "exact")


def random_spd(n: int, g: torch.Generator) -> Tensor:
    """``(n, n)`` symmetric positive definite (eigenvalues ≥ 0.1)."""
    m = torch.randn(n, n, generator=g, dtype=DT)
    return (m @ m.T / n + 0.1 * torch.eye(n, dtype=DT)).contiguous()


def random_kfac_curvature(model: nn.Module, modules: list[str], task: str, n_data: int, seed: int = 0) -> Curvature:
    """Kronecker blocks with random SPD factors (any Linear/Conv module; weight reshaped to (O, -1))."""
    g = torch.Generator().manual_seed(seed)
    blocks = []
    for m in modules:
        layer = model.get_submodule(m)
        i, o = layer.weight[0].numel() + 1, layer.weight.shape[0]
        A = random_spd(i, g)
        blocks.append(_kronecker_block(model, m, A, random_spd(o, g)))
    return Curvature(blocks, n_data, task, "kfac", "exact")

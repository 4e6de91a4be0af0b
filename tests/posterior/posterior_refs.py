"""Explicit references for the posterior tests (float64, tiny networks, no uncert engine).

Parameter vectors of a block follow the library convention: ``W_aug = [W | b]`` flattened row-major.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from uncert_cli.curvature.blocks import Curvature, DiagonalBlock, KroneckerBlock

DT = torch.float64


def mlp(seed: int = 0, sizes=(4, 6, 5, 3), dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers).to(DT)


def linear_modules(model: nn.Module, only: tuple[str, ...] | None = None) -> list[tuple[str, nn.Linear]]:
    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return [(n, m) for n, m in mods if only is None or n in only]


def _pname(module: str, p: str) -> str:
    return f"{module}.{p}" if module else p


def jacobian(model: nn.Module, x: Tensor, modules: list[str]) -> Tensor:
    """Per-example Jacobian ``(B, C, P)`` of the flattened outputs w.r.t. the blocks' W_aug (in order)."""
    names = []
    for m in modules:
        names += [_pname(m, "weight"), _pname(m, "bias")]
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}
    jac = jacrev(lambda p: functional_call(model, p, (x,)).reshape(x.shape[0], -1))(params)
    cols = []
    for m in modules:
        jw, jb = jac[_pname(m, "weight")], jac[_pname(m, "bias")]  # (B, C, O, I), (B, C, O)
        cols.append(torch.cat([jw.flatten(3), jb.unsqueeze(-1)], -1).flatten(2))  # conv weights: (O, C*kh*kw)
    return torch.cat(cols, -1)


def loss_hessian(f: Tensor, task: str) -> Tensor:
    """Hessian of the per-example NLL w.r.t. the outputs ``(B, C, C)`` (regression at unit noise)."""
    if task == "regression":
        return torch.eye(f.shape[1], dtype=f.dtype).expand(f.shape[0], -1, -1)
    p = torch.softmax(f, -1)
    return torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)


def explicit_ggn(model: nn.Module, x: Tensor, task: str, modules: list[str]) -> Tensor:
    """Mean over the data of ``Jᵀ H J`` (full, over all listed modules)."""
    j = jacobian(model, x, modules)
    with torch.no_grad():
        h = loss_hessian(model(x), task)
    return (torch.einsum("bcp,bcd,bdq->pq", j, h, j) / x.shape[0]).detach()


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
    h = loss_hessian(f, task)

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


def kfac_curvature(model, x, task, modules=None, n_data=None) -> Curvature:
    mods = [n for n, _ in linear_modules(model, modules)]
    facs = kfac_factors(model, x, task, mods)
    blocks = []
    for m in mods:
        lin = model.get_submodule(m)
        A, G = facs[m]
        blocks.append(
            KroneckerBlock(
                m, (_pname(m, "weight"), _pname(m, "bias")), (tuple(lin.weight.shape), tuple(lin.bias.shape)), A, G
            )
        )
    return Curvature(blocks, n_data or x.shape[0], task, "kfac", "exact")


def diag_curvature(model, x, task, modules=None, n_data=None) -> Curvature:
    mods = [n for n, _ in linear_modules(model, modules)]
    ggn = explicit_ggn(model, x, task, mods)
    d = ggn.diagonal()
    blocks, start = [], 0
    for m in mods:
        lin = model.get_submodule(m)
        O, I = lin.weight.shape
        waug = d[start : start + O * (I + 1)].reshape(O, I + 1)
        start += O * (I + 1)
        blocks.append(
            DiagonalBlock(
                m,
                (_pname(m, "weight"), _pname(m, "bias")),
                (tuple(lin.weight.shape), tuple(lin.bias.shape)),
                (waug[:, :I].clone(), waug[:, I].clone()),
            )
        )
    return Curvature(blocks, n_data or x.shape[0], task, "diag", "exact")


def dense_block_precision(block, n_eff: float, tau: float, mode: str) -> Tensor:
    """The structured precision of one block, built densely (W_aug row-major order)."""
    if isinstance(block, DiagonalBlock):
        d = torch.cat([block.diagonal[0], block.diagonal[1].unsqueeze(1)], 1).reshape(-1)
        return torch.diag(n_eff * d + tau)
    A, G = block.input_factor, block.output_factor
    if mode == "eigen":
        return n_eff * torch.kron(G, A) + tau * torch.eye(A.shape[0] * G.shape[0], dtype=DT)
    ia, ig = torch.eye(A.shape[0], dtype=DT), torch.eye(G.shape[0], dtype=DT)
    return torch.kron(math.sqrt(n_eff) * G + math.sqrt(tau) * ig, math.sqrt(n_eff) * A + math.sqrt(tau) * ia)


def dense_covariance(curv: Curvature, n_eff: float, taus: dict[str, float], mode: str) -> Tensor:
    return torch.block_diag(
        *[torch.linalg.inv(dense_block_precision(b, n_eff, taus[b.module], mode)) for b in curv.blocks]
    )


def to_waug(tensors: dict[str, Tensor], module: str) -> Tensor:
    """Parameter dict -> W_aug of one module, flattened (leading dims kept)."""
    w, b = tensors[_pname(module, "weight")], tensors[_pname(module, "bias")]
    return torch.cat([w, b.unsqueeze(-1)], -1).flatten(-2)


def random_spd(n: int, g: torch.Generator) -> Tensor:
    m = torch.randn(n, n, generator=g, dtype=DT)
    return (m @ m.T / n + 0.1 * torch.eye(n, dtype=DT)).contiguous()


def random_kfac_curvature(model: nn.Module, modules: list[str], task: str, n_data: int, seed: int = 0) -> Curvature:
    """Kronecker blocks with random SPD factors (any Linear/Conv module; weight reshaped to (O, -1))."""
    g = torch.Generator().manual_seed(seed)
    blocks = []
    for m in modules:
        mod = model.get_submodule(m)
        o = mod.weight.shape[0]
        i = mod.weight[0].numel() + 1
        blocks.append(
            KroneckerBlock(
                m, (_pname(m, "weight"), _pname(m, "bias")), (tuple(mod.weight.shape), tuple(mod.bias.shape)),
                random_spd(i, g), random_spd(o, g),
            )
        )
    return Curvature(blocks, n_data, task, "kfac", "exact")

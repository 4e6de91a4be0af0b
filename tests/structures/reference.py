"""Explicit float64 references for the structure tests: the dense GGN via ``torch.func``.

Everything here forms ``P x P`` matrices, so it is only for the tiny test networks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev


def explicit_ggn(model: nn.Module, names: list[str], x: Tensor, y: Tensor, task: str) -> Tensor:
    """Mean per-example GGN ``1/N Σ_n J_nᵀ H_n J_n`` over ``names`` (flat concatenation order)."""
    params = dict(model.named_parameters())
    chosen = {n: params[n].detach() for n in names}

    def f(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        return functional_call(model, {**params, **p}, (xi.unsqueeze(0),)).reshape(-1)

    P = sum(v.numel() for v in chosen.values())
    ggn = torch.zeros(P, P, dtype=torch.float64)
    for xi in x:
        jac = jacrev(f)(chosen, xi)
        J = torch.cat([jac[n].reshape(jac[n].shape[0], -1) for n in names], dim=1).double()  # (C, P)
        if task == "classification":
            p = f(chosen, xi).double().softmax(0)
            H = torch.diag(p) - torch.outer(p, p)
        else:
            H = torch.eye(J.shape[0], dtype=torch.float64)
        ggn += J.T @ H @ J
    return ggn / x.shape[0]


def waug_index(model: nn.Module, names: list[str], module: str) -> Tensor:
    """Positions in the flat concatenation of ``names`` of ``module``'s ``W_aug`` entries, row-major."""
    params = dict(model.named_parameters())
    offset, pos = 0, {}
    for n in names:
        pos[n] = offset
        offset += params[n].numel()
    w = params[f"{module}.weight"]
    O, I = w.shape[0], w[0].numel()
    idx = pos[f"{module}.weight"] + torch.arange(O * I).reshape(O, I)
    if f"{module}.bias" in params and f"{module}.bias" in pos:
        idx = torch.cat([idx, (pos[f"{module}.bias"] + torch.arange(O)).reshape(O, 1)], dim=1)
    return idx.reshape(-1)


def block_diagonal_of(ggn: Tensor, groups: list[Tensor]) -> Tensor:
    """``ggn`` with every entry outside the given index groups set to 0."""
    out = torch.zeros_like(ggn)
    for g in groups:
        out[g.unsqueeze(1), g.unsqueeze(0)] = ggn[g.unsqueeze(1), g.unsqueeze(0)]
    return out

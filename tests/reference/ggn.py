"""The explicit GGN of a tiny network with ``torch.func``: ``GGN = 1/N Σ_n J_nᵀ H_n J_n``.

``J_n`` is the Jacobian (``jacrev``) of the flattened model output for example ``n`` with respect to a
flat parameter vector (``names``, default every parameter; layout in :mod:`tests.reference.indices`);
``H_n`` the loss Hessian with respect to the output: ``diag(p) − ppᵀ`` for cross-entropy, ``I`` for
unit-variance regression. Everything here forms ``P × P`` matrices, so it is for tiny networks only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev

from tests.reference.indices import restrict, waug_names, waug_order


def jacobian(model: nn.Module, x: Tensor, names: Sequence[str] | None = None) -> Tensor:
    """``(B, C, P)`` Jacobian of the eval-mode output w.r.t. the flat vector of ``names``.

    The model is put in eval mode for the call and every submodule's mode restored after it."""
    params = dict(model.named_parameters())
    names = list(params) if names is None else list(names)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    flat = torch.cat([params[n].detach().reshape(-1) for n in names])
    modes = {m: m.training for m in model.modules()}

    def outputs(theta: Tensor) -> Tensor:
        chosen = {n: t.reshape(s) for n, t, s in zip(names, theta.split(sizes), shapes)}
        out = functional_call(model, chosen, (x,))
        return out.reshape(out.shape[0], -1)

    model.eval()
    try:
        return jacrev(outputs)(flat)
    finally:
        for module, training in modes.items():
            module.training = training


def loss_hessians(out: Tensor, task: str) -> Tensor:
    """``(B, C, C)`` Hessians of the per-example NLL w.r.t. the outputs ``(B, C)`` (regression: unit noise)."""
    B, C = out.shape
    if task == "classification":
        p = out.softmax(1)
        return torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
    return torch.eye(C, dtype=out.dtype).expand(B, C, C)


def explicit_ggn(model: nn.Module, x: Tensor, task: str, names: Sequence[str] | None = None) -> Tensor:
    """``(P, P)`` mean GGN over the examples of ``x``, over the flat vector of ``names``."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            out = model(x).reshape(x.shape[0], -1)
    finally:
        for module, training in modes.items():
            module.training = training
    J = jacobian(model, x, names)
    H = loss_hessians(out, task)
    return (torch.einsum("bcd,bce,bef->df", J, H, J) / x.shape[0]).detach()


def waug_jacobian(model: nn.Module, x: Tensor, modules: Sequence[str]) -> Tensor:
    """``(B, C, P)`` Jacobian w.r.t. the ``W_aug`` of ``modules`` in turn (the Kronecker blocks' order)."""
    return jacobian(model, x, waug_names(model, modules))[..., waug_order(model, modules)]


def waug_ggn(model: nn.Module, x: Tensor, task: str, modules: Sequence[str]) -> Tensor:
    """``(P, P)`` explicit GGN over the ``W_aug`` of ``modules`` in turn."""
    return restrict(explicit_ggn(model, x, task, waug_names(model, modules)), waug_order(model, modules))

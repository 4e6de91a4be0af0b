"""Explicit GGN of a tiny network with ``torch.func``: ``GGN = 1/N Σ_n J_nᵀ H_n J_n``.

``J_n`` is the Jacobian (``jacrev``) of the model output for example ``n`` with respect to the
flattened parameter vector (``model.named_parameters()`` order); ``H_n`` the loss Hessian with
respect to the output: ``diag(p) − ppᵀ`` for cross-entropy, ``I`` for unit-variance regression.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev


def param_layout(model: nn.Module) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Offset and shape of every parameter in the flat vector."""
    layout, off = {}, 0
    for name, p in model.named_parameters():
        layout[name] = (off, tuple(p.shape))
        off += p.numel()
    return layout


def jacobian(model: nn.Module, x: Tensor) -> Tensor:
    """``(B, C, D)`` Jacobian of the (eval-mode) model output w.r.t. all parameters."""
    model.eval()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def f(theta: Tensor) -> Tensor:
        parts = theta.split(sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}
        out = functional_call(model, params, (x,))
        return out.reshape(out.shape[0], -1)

    return jacrev(f)(flat)


def loss_hessians(out: Tensor, task: str) -> Tensor:
    """``(B, C, C)`` Hessians of the per-example NLL w.r.t. the output."""
    B, C = out.shape
    if task == "classification":
        p = out.softmax(1)
        return torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
    return torch.eye(C, dtype=out.dtype).expand(B, C, C)


def explicit_ggn(model: nn.Module, x: Tensor, task: str) -> Tensor:
    """``(D, D)`` mean GGN over the examples of ``x``."""
    model.eval()
    with torch.no_grad():
        out = model(x).reshape(x.shape[0], -1)
    J = jacobian(model, x)
    H = loss_hessians(out, task)
    return torch.einsum("bcd,bce,bef->df", J, H, J) / x.shape[0]


def block_indices(model: nn.Module, param_names: tuple[str, ...]) -> Tensor:
    """Flat-vector indices of a block's parameters in the ``W_aug = [W.reshape(O,-1) | b]``
    row-major order (for Kronecker blocks) — for weight only, plain weight order."""
    layout = param_layout(model)
    w_off, w_shape = layout[param_names[0]]
    O = w_shape[0]
    I = int(torch.tensor(w_shape[1:]).prod()) if len(w_shape) > 1 else 1
    w_idx = (w_off + torch.arange(O * I)).reshape(O, I)
    if len(param_names) == 2:
        b_off, _ = layout[param_names[1]]
        b_idx = (b_off + torch.arange(O)).reshape(O, 1)
        w_idx = torch.cat([w_idx, b_idx], dim=1)
    return w_idx.reshape(-1)


def param_diagonal(model: nn.Module, ggn: Tensor, name: str) -> Tensor:
    """Diagonal of ``ggn`` restricted to parameter ``name``, in the parameter's shape."""
    off, shape = param_layout(model)[name]
    n = int(torch.tensor(shape).prod()) if shape else 1
    return ggn.diagonal()[off : off + n].reshape(shape)

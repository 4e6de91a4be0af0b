"""``J t`` from two reverse-mode passes, for networks forward-mode differentiation cannot run.

The linearised predictives need ``J(x) t`` for each tangent ``t``. ``torch.func.jvp`` forms it in one
forward-mode pass, but some operations have no forward-mode derivative (the deprecated
``torch.nn.utils.weight_norm``'s kernel) and an ``autograd.Function`` without ``setup_context`` runs
under no ``torch.func`` transform at all. Both still have a reverse-mode derivative that is itself
differentiable, and that is enough: ``u ↦ Jᵀu`` is linear in ``u``, so ``∂/∂u ⟨Jᵀu, t⟩ = J t``. One
forward, one backward with ``create_graph`` and one more backward give the same numbers as ``jvp``
(to rounding), and the result stays differentiable w.r.t. the inputs for an attack's gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def jvp_by_reverse_mode(
    f: Callable[[dict[str, Tensor]], Tensor], theta: dict[str, Tensor], tangent: dict[str, Tensor]
) -> Tensor:
    """``J t``, shape of ``f(theta)``: the derivative of ``f`` at ``theta`` along ``tangent`` (same keys
    and shapes as ``theta``), by the double-backward identity above.

    Differentiable w.r.t. whatever ``f`` reads besides ``theta`` (an input with ``requires_grad``)
    when grad mode is on; otherwise detached.
    """
    keep_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        params = {name: value.detach().requires_grad_(True) for name, value in theta.items()}
        out = f(params)
        probe = torch.zeros_like(out, requires_grad=True)
        grads = torch.autograd.grad(out, list(params.values()), probe, create_graph=True, allow_unused=True)
        pairs = [(g * tangent[name]).sum() for name, g in zip(params, grads) if g is not None]
        if not pairs:  # no parameter reaches the output: the derivative is 0
            return torch.zeros_like(out)
        # A network linear in its parameters gives Jᵀu independent of nothing but u; allow_unused covers
        # the degenerate case where ⟨Jᵀu, t⟩ does not depend on u through the graph (t = 0 everywhere).
        (jt,) = torch.autograd.grad(torch.stack(pairs).sum(), probe, create_graph=keep_graph, allow_unused=True)
    if jt is None:
        return torch.zeros_like(out)
    return jt if keep_graph else jt.detach()

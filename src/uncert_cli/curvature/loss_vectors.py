"""Square-root factors of the loss curvature ("backward vectors"), as pure tensor math.

For one example with network output ``f_n ∈ R^C`` the GGN/Fisher contribution of a parameter block
is ``J_nᵀ H_n J_n`` with ``J_n = ∂f_n/∂θ``. We write ``H_n = Σ_k v_{k,n} v_{k,n}ᵀ`` (exactly or in
expectation), so that the contribution becomes ``Σ_k (J_nᵀ v_{k,n}) (J_nᵀ v_{k,n})ᵀ``: every
``J_nᵀ v`` is one ordinary backward pass, and all curvature the engine computes is built from those.

Likelihoods (negative log-likelihood per example, no averaging over the output dimension):

* classification: categorical with logits ``f`` (cross-entropy), ``H = diag(p) − ppᵀ``, ``p = softmax(f)``;
* regression: Gaussian with unit noise variance, ``½‖f − y‖²``, ``H = I``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from uncert_cli.curvature.blocks import FisherType, Task


def num_backward_vectors(fisher_type: FisherType, task: Task, num_outputs: int, mc_samples: int) -> int:
    """``K``, the number of backward vectors per example."""
    if fisher_type == "exact":
        return num_outputs
    if fisher_type == "mc":
        return mc_samples
    return 1


def loss_backward_vectors(
    outputs: Tensor,
    targets: Tensor,
    fisher_type: FisherType,
    task: Task,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Vectors ``V`` of shape ``(K, B, C)`` with ``Σ_k V[k, n] V[k, n]ᵀ ≈ H_n``.

    Args:
        outputs: ``(B, C)`` network outputs (logits for classification). Not differentiated.
        targets: ``(B,)`` integer labels (classification) or ``(B, C)`` values (regression).
            Only read for ``fisher_type="empirical"``.
        fisher_type: ``"exact"`` (type-2 GGN, ``K = C``), ``"mc"`` (``K = mc_samples`` sampled
            labels, unbiased for ``H_n``) or ``"empirical"`` (``K = 1``, the gradient of the loss
            at the observed target; the empirical Fisher).
        task: ``"classification"`` or ``"regression"``.
        mc_samples: number of Monte-Carlo samples for ``fisher_type="mc"``.
        generator: random generator for ``"mc"`` (``None``: torch's default generator).

    Returns:
        ``(K, B, C)`` tensor with the dtype/device of ``outputs``.

    Sampling draws one label per example per ``k``, in a loop over ``k`` (``multinomial(p, 1)``
    for classification, ``randn(B, C)`` for regression). That order is deliberate: with the same
    seeded generator it reproduces the labels curvlinops' KFAC draws, which the tests rely on.
    """
    f = outputs.detach()
    B, C = f.shape
    if fisher_type == "exact":
        if task == "classification":
            # Columns of the symmetric square root S = diag(√p) − p √pᵀ of diag(p) − ppᵀ:
            # v_c = √p_c (e_c − p). V[c, n, :] = √p_{n,c} e_c − √p_{n,c} p_n.
            p = f.softmax(dim=1)
            sp = p.sqrt()  # (B, C)
            V = -sp.t().unsqueeze(2) * p.unsqueeze(0)  # (C, B, C): −√p_{n,c} p_n
            idx = torch.arange(C, device=f.device)
            V[idx, :, idx] += sp.t()
            return V
        # Unit-variance Gaussian: H = I, so V[k, n] = e_k.
        return torch.eye(C, dtype=f.dtype, device=f.device).unsqueeze(1).expand(C, B, C).contiguous()
    if fisher_type == "mc":
        if mc_samples < 1:
            raise ValueError(f"mc_samples must be >= 1, got {mc_samples}")
        scale = 1.0 / math.sqrt(mc_samples)
        if task == "classification":
            p = f.softmax(dim=1)
            V = p.unsqueeze(0).repeat(mc_samples, 1, 1)  # (K, B, C)
            rows = torch.arange(B, device=f.device)
            for k in range(mc_samples):
                y_hat = torch.multinomial(p, 1, generator=generator).squeeze(1)
                V[k, rows, y_hat] -= 1.0
            return V.mul_(scale)
        eps = torch.stack(
            [torch.randn(B, C, dtype=f.dtype, device=f.device, generator=generator) for _ in range(mc_samples)]
        )
        return eps.mul_(scale)
    if fisher_type == "empirical":
        if task == "classification":
            V = f.softmax(dim=1)
            V[torch.arange(B, device=f.device), targets.long()] -= 1.0
            return V.unsqueeze(0)
        return (f - targets.reshape(B, C).to(f.dtype)).unsqueeze(0)
    raise ValueError(f"unknown fisher_type {fisher_type!r}")

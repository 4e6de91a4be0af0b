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

from uncert_cli.core.vocabulary import FisherType, Task


def num_backward_vectors(fisher_type: FisherType, task: Task, num_outputs: int, mc_samples: int) -> int:
    """``K``, the number of backward vectors per example."""
    if fisher_type == "exact":
        # The softmax Hessian has rank C − 1 (√p spans the null space of its square root).
        return num_outputs - 1 if task == "classification" and num_outputs > 1 else num_outputs
    if fisher_type == "mc":
        return mc_samples
    return 1


def _drop_null_column(V: Tensor, sp: Tensor) -> Tensor:
    """``(C, B, C)`` columns of S → ``(C − 1, B, C)`` columns of S·Q with the same Σ v vᵀ.

    S √p = 0, so with the Householder reflection Q that swaps e_k and √p (k = argmin p, which keeps
    ‖√p − e_k‖² = 2 − 2√p_k away from 0) the k-th column of S·Q vanishes: every example needs one
    backward vector fewer (C − 1 instead of C, 10% of exact KFAC's work for ten classes), and
    S Q Qᵀ Sᵀ = S Sᵀ keeps the curvature exact. Column c of S·Q is s_c + 2 u_c/‖u‖² · s_k, u = √p − e_k.
    """
    C, B, _ = V.shape
    k = sp.argmin(dim=1)  # (B,)
    rows = torch.arange(B, device=V.device)
    u = sp.clone()
    u[rows, k] -= 1.0
    coef = 2.0 * u / (u * u).sum(dim=1, keepdim=True)  # (B, C)
    s_k = V[k, rows]  # (B, C): the k-th column of S for every example
    W = V + coef.t().unsqueeze(2) * s_k.unsqueeze(0)  # (C, B, C), column k is now zero
    keep = torch.arange(C, device=V.device).unsqueeze(1) != k.unsqueeze(0)  # (C, B)
    return W.transpose(0, 1)[keep.t()].reshape(B, C - 1, C).transpose(0, 1).contiguous()


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
        fisher_type: ``"exact"`` (type-2 GGN, ``K = C − 1`` for classification, ``K = C`` for regression),
            ``"mc"`` (``K = mc_samples`` sampled labels, unbiased for ``H_n``) or ``"empirical"`` (``K = 1``,
            the gradient of the loss at the observed target; the empirical Fisher).
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
            return _drop_null_column(V, sp) if C > 1 else V
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

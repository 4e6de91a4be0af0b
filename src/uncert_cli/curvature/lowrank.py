"""Top-K eigenpairs of a symmetric PSD operator known only through block products (``--method lowrank``).

Randomized subspace iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4 + Rayleigh-Ritz): start from
``K + oversample`` Gaussian probes, apply the operator ``power_iters`` times re-orthonormalising in
between, then diagonalise the operator restricted to the final subspace. Each application is one
pass over the data that multiplies *all* probes at once (curvlinops vmaps over the columns), so the
whole solve costs ``power_iters + 1`` data passes -- a Lanczos solver (``scipy.sparse.linalg.eigsh``)
would need one pass per vector, i.e. a few times ``K`` passes. When ``K + oversample`` reaches ``P``
the probes span everything and the result is exact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from uncert_cli.curvature.eigen import robust_eigh


def top_eigenpairs(
    matmat: Callable[[Tensor], Tensor],
    num_params: int,
    rank: int,
    *,
    dtype: torch.dtype,
    device: torch.device,
    oversample: int = 10,
    power_iters: int = 2,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``(λ (K,), V (P, K))``: the ``rank`` largest eigenvalues (descending) and orthonormal eigenvectors."""
    k = min(num_params, rank + oversample)
    if k >= num_params:  # the identity spans everything: exact
        Q = torch.eye(num_params, dtype=dtype, device=device)
    else:
        omega = torch.randn(num_params, k, dtype=dtype, device="cpu", generator=generator).to(device)
        Q = torch.linalg.qr(omega).Q
        for _ in range(power_iters):
            Q = torch.linalg.qr(matmat(Q)).Q
    Y = matmat(Q)  # (P, k)
    small = Q.T.double() @ Y.double()
    ritz = robust_eigh(small, what="the projected curvature of the low-rank block")  # k x k, ascending
    lam, E = ritz.eigenvalues, ritz.eigenvectors
    lam, E = lam.flip(0)[:rank], E.flip(1)[:, :rank]
    V = (Q.double() @ E).to(dtype)
    return lam.clamp_min(0).to(dtype), V

"""Sums of squared per-example weight gradients of a Linear/Conv, ``Σ_{k,n} (Σ_p g_{knp} a_{np}ᵀ)²``.

This is the whole cost of the exact diagonal of a layer with several positions ``P`` (conv output
pixels, sequence entries), where the square does not factorise. With ``g`` of shape ``(K, B, P, O)``
(``K`` backward vectors at the layer output) and ``a`` of shape ``(B, P, I)`` (input rows or conv
patches), two exact ways to form it:

* **per-example gradients**: ``G_{kn} = Σ_p g_{knp} a_{np}ᵀ`` (``O × I``) for every ``(k, n)``, then
  squared and summed: ``K·P·O·I`` multiply-adds per example plus ``K·O·I`` squares (read and written
  through memory, so each costs several multiply-adds' time).
* **position pairs**: expanding the square, ``Σ_{k,n} Σ_{p,q} g_{knpo} g_{knqo} a_{npi} a_{nqi}``. With
  ``M_n[pq, o] = Σ_k g_{knpo} g_{knqo}`` and ``N_n[pq, i] = a_{npi} a_{nqi}`` over the ``P(P+1)/2``
  pairs ``p ≤ q`` (off-diagonal pairs counted twice) the result is one matrix product ``Mᵀ N``:
  ``P(P+1)/2·O·I`` multiply-adds per example and no ``K·O·I`` tensor. Cheaper while ``P`` is below
  about ``2K`` — resnet18's layer2 and layer3 at 32×32 inputs (``P`` = 16 and 4, ``K`` = 9).

``P = 1`` is the factorised special case ``(Σ_k g²)ᵀ a²`` that the accumulator handles itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Elements of one chunk of per-example gradients (``b·K·O·I``): 16 MiB in float32, small enough to
# stay near the cache while it is squared and summed (2**26 was 9% slower on resnet18's layer1).
PER_EXAMPLE_CHUNK = 2**22
# Elements of one chunk of the position-pair products (``b·P(P+1)/2·max(O, I)``).
PAIR_CHUNK = 2**23
# A squared-and-summed element of a per-example gradient costs about this many multiply-adds
# (it is read and written through memory; measured on resnet18's conv shapes, 2 threads).
SQUARE_COST = 8


def prefers_pairs(K: int, P: int) -> bool:
    """Whether the position-pair form is the cheaper one for ``K`` vectors and ``P`` positions."""
    return P * (P + 1) // 2 < K * (P + SQUARE_COST)


def add_square_sums_(acc: Tensor, g: Tensor, a: Tensor, pairs: bool | None = None) -> None:
    """``acc += Σ_{k,n} (Σ_p g[k, n, p]ᵀ a[n, p])²`` elementwise.

    Args:
        acc: ``(O, I)`` running sum.
        g: ``(K, B, P, O)`` backward vectors at the layer output (any strides).
        a: ``(B, P, I)`` layer inputs (patches) per example and position.
        pairs: force the position-pair form (True) or per-example gradients (False); by default the
            cheaper one (:func:`prefers_pairs`).
    """
    K, B, P, O = g.shape
    if pairs is None:
        pairs = prefers_pairs(K, P)
    if pairs:
        _by_position_pairs(acc, g, a)
    else:
        _by_per_example_gradients(acc, g, a)


def _by_per_example_gradients(acc: Tensor, g: Tensor, a: Tensor) -> None:
    K, B, P, O = g.shape
    I = a.shape[2]
    # The K vectors side by side as extra output rows: one (K·O, P) × (P, I) product per example,
    # so ``a`` is not broadcast (copied) K times as a (K, B)-batched product would do.
    g_rows = g.permute(1, 0, 3, 2).reshape(B, K * O, P)  # (B, K·O, P), one copy of g
    chunk = max(1, PER_EXAMPLE_CHUNK // max(1, K * O * I))
    for start in range(0, B, chunk):
        per_example = torch.bmm(g_rows[start : start + chunk], a[start : start + chunk])  # (b, K·O, I)
        acc += per_example.square_().reshape(-1, O, I).sum(0)


def _by_position_pairs(acc: Tensor, g: Tensor, a: Tensor) -> None:
    K, B, P, O = g.shape
    I = a.shape[2]
    first, second = torch.triu_indices(P, P, device=g.device)
    weight = torch.where(first == second, 1.0, 2.0).to(g.dtype)  # (pairs,)
    pairs = first.shape[0]
    chunk = max(1, PAIR_CHUNK // max(1, pairs * max(O, I)))
    for start in range(0, B, chunk):
        gc = g[:, start : start + chunk]  # (K, b, P, O)
        b = gc.shape[1]
        # Σ_k g_p g_q for every output channel: a (P, K) × (K, P) product per (example, channel).
        per_channel = gc.permute(1, 3, 2, 0).reshape(b * O, P, K)
        outer = torch.bmm(per_channel, per_channel.transpose(1, 2)).reshape(b, O, P * P)
        M = outer[:, :, first * P + second].mul_(weight).transpose(1, 2).reshape(b * pairs, O)
        ac = a[start : start + chunk]
        N = (ac[:, first] * ac[:, second]).reshape(b * pairs, I)
        acc.addmm_(M.t(), N)


def scratch_elements(K: int, B: int, P: int, O: int, I: int) -> int:
    """Peak elements of the temporaries :func:`add_square_sums_` allocates for one layer (for the
    memory estimate): the rearranged copy of ``g`` and one chunk of products.
    """
    if P <= 1:
        return B * max(O, I)  # the accumulator's factorised path: (Σ_k g²) and a² per batch
    if prefers_pairs(K, P):
        pairs = P * (P + 1) // 2
        b = min(B, max(1, PAIR_CHUNK // max(1, pairs * max(O, I))))
        return b * O * P * (K + P) + b * pairs * (2 * O + I)
    b = min(B, max(1, PER_EXAMPLE_CHUNK // max(1, K * O * I)))
    return K * B * P * O + 2 * b * K * O * I

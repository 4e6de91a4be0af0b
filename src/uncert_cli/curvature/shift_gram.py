"""The input factor of a stride-1 convolution from products of shifted whole maps, without patches.

For a Conv2d with stride 1, dilation 1, zero padding ``(p_y, p_x)`` and a ``k_y × k_x`` kernel, the
Gram matrix of the patches (the sum of ``a aᵀ`` over examples and output positions that KFAC's
input factor needs) has, between kernel taps ``u`` and ``v`` (``δ = v − u``), the ``C × C`` block::

    A_uv[c, c'] = Σ_b Σ_{q ∈ R(u)} x[b, c, q] · x[b, c', q + δ]

where ``q`` runs over the input positions that tap ``u``'s window covers, ``R(u)`` (a rectangle:
the output positions shifted by ``u − p``, cut to the input), and ``x`` is zero outside the input.
Two facts make it cheap on large maps:

* the whole-map correlation ``S_δ = Σ_q x[q] x[q + δ]ᵀ`` depends on ``δ`` only. With ``u < v`` in
  the kernel's row-major order, ``δ`` is one of ``(k_y − 1)(2k_x − 1) + k_x`` offsets (13 for a 3×3
  kernel, against its 45 blocks on and above the diagonal), and in a channels-last copy of ``x``
  padded with zeros on the right and below, ``S_δ`` is one product of two row ranges of the same
  ``(rows, C)`` matrix, ``s = δ_y·W' + δ_x`` rows apart: no copy per offset.
* ``R(u)`` misses only the few rows and columns at the border its window does not reach; the sum
  over them is subtracted (inclusion–exclusion: rows, columns, corners added back), each a product
  over a strip one or two positions thin, and none at all where the partner ``q + δ`` lies outside.

For a 3×3 "same" conv on an ``H × W`` map this is ~13·(H+2)(W+2)·C² multiply-adds per example and
strips against ``H·W·(9C)²/2`` for the patch Gram product (2.9× fewer at 32×32, 1.9× at 8×8), and
the 9× larger patch copy is not made. :func:`shift_gram_cost` lets the caller choose per layer
(``conv_input.input_plan``; on 2×2 maps the patches win).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

# The shifted maps are chosen when their multiply-adds are this many times fewer: their many small
# products run below the rate of one large Gram product (at equal counts, on resnet18's layer2 at
# 4×4 maps with 128 channels, the two took the same time; at 8×8 with 64 channels shifts were 2× faster).
SHIFT_MARGIN = 1.25

Rect = tuple[int, int, int, int, int, int]  # (δ_y, δ_x, y0, y1, x0, x1): q in [y0, y1) × [x0, x1)


@dataclass(frozen=True)
class ShiftPlan:
    """What to compute for one input shape: the whole-map offsets, the border strips, and for each
    tap pair ``u ≤ v`` (row-major tap indices) its offset and signed strips.
    """

    width: int  # W' = W + k_x − 1, the padded row length of the flat layout
    height: int  # H' = H + k_y − 1
    offsets: tuple[tuple[int, int], ...]
    rects: tuple[Rect, ...]
    blocks: tuple[tuple[int, int, int, tuple[tuple[int, int], ...]], ...]  # (u, v, offset, ((sign, rect), ...))
    windows: tuple[tuple[int, int, int, int], ...]  # per tap u: R(u) as (y0, y1, x0, x1)


def _covered(u: int, pad: int, outputs: int, size: int) -> tuple[int, int]:
    """Input rows (or columns) ``[lo, hi)`` that tap offset ``u`` reads from inside the input."""
    return max(0, u - pad), min(size, u - pad + outputs)


def _crop(dy: int, dx: int, y0: int, y1: int, x0: int, x1: int, H: int, W: int) -> Rect | None:
    """The rectangle cut to the ``q`` whose partner ``q + δ`` is inside the input (None if empty)."""
    y0, y1, x0, x1 = max(y0, -dy), min(y1, H - dy), max(x0, -dx), min(x1, W - dx)
    return (dy, dx, y0, y1, x0, x1) if y0 < y1 and x0 < x1 else None


@lru_cache(maxsize=64)
def shift_plan(H: int, W: int, ky: int, kx: int, py: int, px: int) -> ShiftPlan:
    """The plan for an ``H × W`` input, a ``ky × kx`` kernel and padding ``(py, px)``, stride 1."""
    Ho, Wo = H + 2 * py - ky + 1, W + 2 * px - kx + 1
    offsets: list[tuple[int, int]] = []
    rects: list[Rect] = []
    blocks = []
    windows = []
    for u in range(ky * kx):
        uy, ux = divmod(u, kx)
        (ry0, ry1), (rx0, rx1) = _covered(uy, py, Ho, H), _covered(ux, px, Wo, W)
        windows.append((ry0, ry1, rx0, rx1))
        rows_out = [(0, ry0), (ry1, H)]  # the input rows the window misses, above and below
        cols_out = [(0, rx0), (rx1, W)]
        for v in range(u, ky * kx):
            dy, dx = v // kx - uy, v % kx - ux
            if (dy, dx) not in offsets:
                offsets.append((dy, dx))
            terms: list[tuple[int, int]] = []
            strips = [(-1, y, (0, W)) for y in rows_out] + [(-1, (0, H), x) for x in cols_out]
            strips += [(1, y, x) for y in rows_out for x in cols_out]  # corners, subtracted twice
            for sign, (y0, y1), (x0, x1) in strips:
                rect = _crop(dy, dx, y0, y1, x0, x1, H, W)
                if rect is None:
                    continue
                if rect not in rects:
                    rects.append(rect)
                terms.append((sign, rects.index(rect)))
            blocks.append((u, v, offsets.index((dy, dx)), tuple(terms)))
    return ShiftPlan(W + kx - 1, H + ky - 1, tuple(offsets), tuple(rects), tuple(blocks), tuple(windows))


def shift_gram_cost(C: int, H: int, W: int, ky: int, kx: int, py: int, px: int) -> int:
    """Multiply-adds per example of :func:`add_shift_gram_` (products, strips and block updates)."""
    plan = shift_plan(H, W, ky, kx, py, px)
    whole = len(plan.offsets) * plan.height * plan.width
    strips = sum((y1 - y0) * (x1 - x0) for _, _, y0, y1, x0, x1 in plan.rects)
    return (whole + 2 * strips) * C * C  # strips are copied before their product


def add_shift_gram_(acc: Tensor, x: Tensor, kernel: tuple[int, int], padding: tuple[int, int], alpha: float) -> Tensor:
    """``acc += alpha·Σ a aᵀ`` over the patches ``a`` of a stride-1, dilation-1 conv; returns the
    patches' sum ``Σ a`` (``(I,)``, unscaled) for the bias row.

    Args:
        acc: ``(I, I)`` with ``I = C·k_y·k_x`` in ``weight.reshape(O, -1)`` order (may be a strided
            block of a larger matrix). Both triangles are updated.
        x: ``(B, C, H, W)`` input.
        kernel: ``(k_y, k_x)``.
        padding: symmetric zero padding ``(p_y, p_x)``.
        alpha: weight of this call's products (``B/P`` in KFAC's scaling).
    """
    B, C, H, W = x.shape
    ky, kx = kernel
    T = ky * kx
    plan = shift_plan(H, W, ky, kx, padding[0], padding[1])
    flat = x.new_zeros(B, plan.height, plan.width, C)
    flat[:, :H, :W] = x.permute(0, 2, 3, 1)
    rows = flat.reshape(-1, C)
    L = rows.shape[0]
    whole = []
    for dy, dx in plan.offsets:
        s = dy * plan.width + dx
        whole.append(rows[: L - s].t() @ rows[s:])
    strips = []
    for dy, dx, y0, y1, x0, x1 in plan.rects:
        first = flat[:, y0:y1, x0:x1].reshape(-1, C)
        second = flat[:, y0 + dy : y1 + dy, x0 + dx : x1 + dx].reshape(-1, C)
        strips.append(first.t() @ second)
    # Every block u ≤ v as its offset's product plus its signed strips: one product with the
    # (blocks × strips) sign matrix, then the T × T grid of blocks added to ``acc`` in one pass.
    u_index, v_index, blocks = _assemble(plan, torch.stack(whole), torch.stack(strips) if strips else None)
    grid = x.new_zeros(T, T, C, C)
    grid[v_index, u_index] = blocks.transpose(1, 2)
    grid[u_index, v_index] = blocks  # the diagonal blocks are symmetric: either write will do
    r, c = acc.stride()
    acc.as_strided((C, T, C, T), (T * r, r, T * c, c), acc.storage_offset()).add_(grid.permute(2, 0, 3, 1), alpha=alpha)
    totals = x.sum(0)  # (C, H, W)
    sums = x.new_empty(C, T)
    for u, (y0, y1, x0, x1) in enumerate(plan.windows):
        sums[:, u] = totals[:, y0:y1, x0:x1].sum((1, 2))
    return sums.reshape(-1)


def _assemble(plan: ShiftPlan, whole: Tensor, strips: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Tap indices ``u``, ``v`` and blocks ``(n, C, C)`` of the plan's pairs ``u ≤ v``."""
    device = whole.device
    u_index = torch.tensor([u for u, _, _, _ in plan.blocks], device=device)
    v_index = torch.tensor([v for _, v, _, _ in plan.blocks], device=device)
    blocks = whole[torch.tensor([offset for _, _, offset, _ in plan.blocks], device=device)]
    if strips is not None:
        table = [[0] * strips.shape[0] for _ in plan.blocks]  # built here, moved once (no per-entry writes on a GPU)
        for row, (_, _, _, terms) in zip(table, plan.blocks):
            for sign, rect in terms:
                row[rect] += sign
        signs = torch.tensor(table, dtype=whole.dtype, device=device)
        blocks += (signs @ strips.flatten(1)).view_as(blocks)
    return u_index, v_index, blocks


def shift_gram_applies(stride: tuple[int, ...], dilation: tuple[int, ...]) -> bool:
    """Whether a conv's geometry is the one :func:`add_shift_gram_` handles."""
    return all(s == 1 for s in stride) and all(d == 1 for d in dilation)

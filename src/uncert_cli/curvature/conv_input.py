"""How KFAC forms a conv's input factor for one input size: which kernel taps and output positions
to take patches of, or shifted whole maps instead (:mod:`.shift_gram`), or the Gram matrix of the
whole input maps (:mod:`.pixel_gram`, small maps), chosen by multiply-adds.

Three patch forms, all exact (columns a position's window reads only from padding are zero there):

* all positions, all taps: one Gram product of the ``(B·P, I)`` patch matrix;
* all positions, the taps some position can see (:func:`live_taps`): resnet18's layer4 on 1×1 maps;
* positions grouped by the taps they see (:func:`tap_classes`), one product per group over its own
  taps: the border positions of small maps (resnet18's layer2 and layer3 on 4×4 and 2×2 maps).

Partial products are added into their block of the factor through a strided view, every batch.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from uncert_cli.curvature.shift_gram import SHIFT_MARGIN, shift_gram_applies, shift_gram_cost
from uncert_cli.curvature.subset import conv_padding

# A copied patch element costs about this many multiply-adds (a strided read and a write).
COPY_COST = 4
# Each extra product (a group of positions) costs about this many multiply-adds per example in
# calls, copies of small pieces and Python (~0.2 ms at batch 32, 1 thread: with less, resnet18's
# 7×7 stem on 3 channels split into 16 groups and ran 15% slower than one product).
PART_COST = 100_000
# Adding a partial block (a group's or the live taps' Gram product) into the factor through its
# strided view writes scattered elements: ~8 ns each, per batch. Per example at batch 32 that is
# about this many multiply-adds per element; it makes position groups lose on resnet18's 2×2 and
# 4×4 maps (their 5× and 1.9× fewer multiply-adds ran slower than one product over all taps).
SCATTER_COST = 5

# The whole-map Gram matrix (pixel_gram) is an option while its table of pixel pairs has at most this
# many entries (resnet18's layer2: 4×4 maps, 9 taps, 20,736) and while it is at most PIXEL_SIZE_MAX
# times the size of the factor itself ((C·S)² against (C·T)²: it is kept for the whole pass, and
# --max-memory's estimate counts the factors only; resnet18's layer2 3.2×, resnet50's 7×7 maps at
# 224×224 would be 30×); its fold into the factor, once per fit, is charged as spread over
# FOLD_EXAMPLES examples.
PIXEL_PAIRS_MAX = 2**20
PIXEL_SIZE_MAX = 4
FOLD_EXAMPLES = 1000

Taps = tuple[tuple[int, ...], ...]  # per spatial dimension, the kernel offsets kept


def live_taps(module: nn.Conv1d | nn.Conv2d | nn.Conv3d, spatial: tuple[int, ...]) -> Taps | None:
    """Per spatial dimension, the kernel taps that some output position reads from inside an input
    of size ``spatial`` (the others only ever read zero padding), or None when all do.

    On resnet18 at 32×32 inputs layer4's 3×3 convs run on 1×1 maps: only the centre tap is live,
    so 4,096 of the 4,608 patch columns are always zero and neither copied nor multiplied.
    """
    padding = conv_padding(module)
    assert padding is not None  # supported_structure() guarantees it
    taps: list[tuple[int, ...]] = []
    for n, k, s, dil, pad in zip(spatial, module.kernel_size, module.stride, module.dilation, padding):
        positions = (n + 2 * pad - dil * (k - 1) - 1) // s + 1
        taps.append(tuple(t for t in range(k) if any(pad <= p * s + t * dil < pad + n for p in range(positions))))
    return None if all(len(t) == k for t, k in zip(taps, module.kernel_size)) else tuple(taps)


Positions = tuple[tuple[int, int], ...]  # per spatial dimension, a range [p0, p1) of output positions


def tap_classes(module: nn.Conv1d | nn.Conv2d, spatial: tuple[int, ...]) -> list[tuple[Positions, Taps]]:
    """The output positions grouped by the kernel taps that read inside an input of size ``spatial``
    there: per dimension, runs of consecutive positions with the same taps; then every combination
    over the dimensions (positions whose window lies in the padding only are left out).

    On small maps most positions are at a border: on resnet18's 2×2 maps (layer3) each of the 4
    positions sees only 4 of the 9 taps of a 3×3 kernel, so Gram products over each position's own
    taps take ``4·(4C)²`` multiply-adds instead of ``4·(9C)²``, 5× fewer (1.9× on 4×4 maps).
    """
    padding = conv_padding(module)
    assert padding is not None  # supported_structure() guarantees it
    per_dim: list[list[tuple[tuple[int, int], tuple[int, ...]]]] = []
    for n, k, s, dil, pad in zip(spatial, module.kernel_size, module.stride, module.dilation, padding):
        runs: list[tuple[tuple[int, int], tuple[int, ...]]] = []
        for p in range((n + 2 * pad - dil * (k - 1) - 1) // s + 1):
            taps = tuple(t for t in range(k) if pad <= p * s + t * dil < pad + n)
            if runs and runs[-1][1] == taps:
                runs[-1] = ((runs[-1][0][0], p + 1), taps)
            else:
                runs.append(((p, p + 1), taps))
        per_dim.append([run for run in runs if run[1]])
    return [
        (tuple(r for r, _ in combo), tuple(t for _, t in combo)) for combo in itertools.product(*per_dim)
    ]


def as_2d(sizes: tuple[int, ...], one_row: int) -> tuple[int, int]:
    """A Conv1d's sizes as those of a Conv2d over a single row (``one_row`` for the row dimension)."""
    return (sizes[0], sizes[1]) if len(sizes) == 2 else (one_row, sizes[0])


def tap_columns(module: nn.Conv1d | nn.Conv2d, taps: Taps) -> Tensor:
    """Indices of the patch columns (``weight.reshape(O, -1)`` order) of the kept ``taps``, sorted."""
    offsets = torch.zeros((), dtype=torch.long)
    for t, k in zip(taps, module.kernel_size):
        offsets = (offsets.unsqueeze(-1) * k + torch.tensor(t, dtype=torch.long)).flatten()
    size = math.prod(module.kernel_size)
    return (torch.arange(module.in_channels).unsqueeze(1) * size + offsets).flatten()


def tap_block(acc: Tensor, module: nn.Conv1d | nn.Conv2d, taps: Taps) -> Tensor | None:
    """The block of ``acc`` (``(I, I)``, ``weight.reshape(O, -1)`` order, any strides) whose rows and
    columns are the patch columns of ``taps``, as a strided view ``(C, *lengths, C, *lengths)``; None
    when the taps of some dimension are not a range.
    """
    if any(t != tuple(range(t[0], t[0] + len(t))) for t in taps):
        return None
    kernel = tuple(module.kernel_size)
    steps = [math.prod(kernel[d + 1 :]) for d in range(len(kernel))]  # column step of each tap dimension
    r, c = acc.stride()
    first = sum(t[0] * step for t, step in zip(taps, steps))
    T = math.prod(kernel)
    sizes = (module.in_channels, *map(len, taps))
    strides = (T * r, *(step * r for step in steps), T * c, *(step * c for step in steps))
    return acc.as_strided(sizes + sizes, strides, acc.storage_offset() + first * (r + c))


Part = tuple[Positions | None, Taps | None]  # (output positions, kernel taps); None: all of them


@dataclass(frozen=True)
class InputPlan:
    """For one input size: shifted whole maps, the whole maps' Gram matrix (``pixels``), or the patch
    products to form (``parts``).
    """

    shift: bool
    parts: tuple[Part, ...]
    pixels: bool = False


def _patch_cost(C: int, parts: list[tuple[int, int]], all_taps: int) -> float:
    """Multiply-adds per example of patch products over ``(positions, taps per position)`` parts;
    a part over fewer than all taps also adds its block into the factor through a scattered view.
    """
    return sum(
        n * (C * t) ** 2 / 2 + COPY_COST * n * C * t + PART_COST + (SCATTER_COST * (C * t) ** 2 if t < all_taps else 0)
        for n, t in parts
    ) - PART_COST


def input_plan(module: nn.Conv1d | nn.Conv2d, spatial: tuple[int, ...]) -> InputPlan:
    """The cheapest exact way to form the input factor of ``module`` on inputs of size ``spatial``."""
    padding = conv_padding(module)
    assert padding is not None  # supported_structure() guarantees it
    C, kernel = module.in_channels, tuple(module.kernel_size)
    all_taps = math.prod(kernel)
    classes = tap_classes(module, spatial)
    positions = math.prod((n + 2 * p - d * (k - 1) - 1) // s + 1
                          for n, k, s, d, p in zip(spatial, kernel, module.stride, module.dilation, padding))
    union = live_taps(module, spatial)
    union_taps = all_taps if union is None else math.prod(len(t) for t in union)
    whole = _patch_cost(C, [(positions, all_taps)], all_taps)
    options: list[tuple[float, InputPlan]] = [(whole, InputPlan(False, ((None, None),)))]
    if union is not None:
        options.append((_patch_cost(C, [(positions, union_taps)], all_taps), InputPlan(False, ((None, union),))))
    if len(classes) > 1:
        sizes = [(math.prod(p1 - p0 for p0, p1 in pos), math.prod(len(t) for t in taps)) for pos, taps in classes]
        parts = tuple((pos, None if math.prod(len(t) for t in taps) == all_taps else taps) for pos, taps in classes)
        options.append((_patch_cost(C, sizes, all_taps), InputPlan(False, parts)))
    # The whole maps' Gram matrix: (C·S)²/2 per example, read in place (no copy), no per-batch scatter;
    # its fold into the factor, once per fit, is a (C², S²) × (S², T'²) product and needs the (S², T'²)
    # table of pixel pairs, so it is only an option while that stays small.
    pixels, live = math.prod(spatial), union_taps
    if (pixels * live) ** 2 <= PIXEL_PAIRS_MAX and pixels**2 <= PIXEL_SIZE_MAX * all_taps**2:
        fold = (C * pixels * live) ** 2 / FOLD_EXAMPLES
        options.append(((C * pixels) ** 2 / 2 + fold, InputPlan(False, (), pixels=True)))
    best_cost, best = min(options, key=lambda option: option[0])
    if union is None and all_taps > 1 and shift_gram_applies(module.stride, module.dilation):
        (H, W), (ky, kx), (py, px) = as_2d(spatial, 1), as_2d(kernel, 1), as_2d(padding, 0)
        if SHIFT_MARGIN * shift_gram_cost(C, H, W, ky, kx, py, px) < best_cost:
            return InputPlan(True, ())
    return best

"""Streaming a dataset in batches by slicing its tensors (no per-item DataLoader)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from uncert_cli.core.errors import UserError
from uncert_cli.data.checks import whole_number
from uncert_cli.data.dataset import ArrayDataset, to_float


def shard_range(num_examples: int, shard: tuple[int, int] | None) -> range:
    """Indices ``[start, stop)`` of rank's contiguous share: ``start = N * rank // world``.

    Shares differ in size by at most one and their union over ranks is ``range(N)`` exactly.
    """
    if shard is None:
        return range(num_examples)
    rank, world_size = shard
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"bad shard {shard}: need (rank, world_size) with 0 <= rank < world_size")
    return range(num_examples * rank // world_size, num_examples * (rank + 1) // world_size)


def iter_batches(
    ds: ArrayDataset,
    batch_size: int,
    *,
    shard: tuple[int, int] | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches: ``x`` float32 ``(B, *sample_shape)``, ``y`` ``(B,)`` int64 or ``(B, D)`` float32.

    ``shard=(rank, world_size)`` restricts this process to its contiguous share (:func:`shard_range`).
    ``shuffle`` permutes the order *within* the share (seeded by ``seed``), so which examples a rank
    sees never depends on shuffling. The last batch may be smaller. Unshuffled float32 batches are
    views of the dataset: do not modify them in place.
    """
    batch_size = whole_number(batch_size, "batch_size", minimum=1)
    share = shard_range(len(ds), shard)
    if shuffle:
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(share), generator=generator) + share.start
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            yield to_float(ds.inputs.index_select(0, chosen)), ds.targets.index_select(0, chosen)
        return
    for start in range(share.start, share.stop, batch_size):
        stop = min(start + batch_size, share.stop)
        yield to_float(ds.inputs[start:stop]), ds.targets[start:stop]

"""iter_batches: contiguous slicing, float conversion, shards that cover the data exactly once."""

from __future__ import annotations

import pytest
import torch

from uncert_cli.data import ArrayDataset, iter_batches
from uncert_cli.errors import UserError


def _counting_dataset(n: int) -> ArrayDataset:
    # Input i holds the value i (as uint8 modulo 256) and target i, so every batch says where it came from.
    inputs = torch.arange(n).remainder(256).to(torch.uint8).reshape(n, 1)
    return ArrayDataset("count", inputs, torch.arange(n), "classification", n, None)


def test_batches_in_order_with_a_short_last_batch() -> None:
    batches = list(iter_batches(_counting_dataset(10), 4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.cat([y for _, y in batches]).tolist() == list(range(10))
    x, _ = batches[0]
    assert x.dtype == torch.float32 and torch.allclose(x[:, 0], torch.arange(4) / 255)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize(("n", "world_size"), [(10, 3), (7, 7), (3, 5), (1000, 4)])
def test_shards_are_disjoint_and_cover_everything(n: int, world_size: int, shuffle: bool) -> None:
    ds = _counting_dataset(n)
    seen: list[int] = []
    for rank in range(world_size):
        share = [int(v) for _, y in iter_batches(ds, 3, shard=(rank, world_size), shuffle=shuffle, seed=5) for v in y]
        if not shuffle and share:
            assert share == list(range(share[0], share[0] + len(share)))  # contiguous
        seen += share
    assert sorted(seen) == list(range(n)) and len(seen) == n


def test_shuffle_is_seeded_and_keeps_inputs_with_targets() -> None:
    ds = _counting_dataset(50)
    first = [y.tolist() for _, y in iter_batches(ds, 8, shuffle=True, seed=1)]
    again = [y.tolist() for _, y in iter_batches(ds, 8, shuffle=True, seed=1)]
    other = [y.tolist() for _, y in iter_batches(ds, 8, shuffle=True, seed=2)]
    assert first == again and first != other
    for x, y in iter_batches(ds, 8, shuffle=True, seed=1):
        assert torch.allclose(x[:, 0] * 255, y.float())


def test_bad_arguments() -> None:
    ds = _counting_dataset(4)
    with pytest.raises(UserError, match="batch_size must be a whole number"):
        next(iter_batches(ds, 0))
    with pytest.raises(UserError, match="0 <= rank < world_size"):
        next(iter_batches(ds, 2, shard=(2, 2)))

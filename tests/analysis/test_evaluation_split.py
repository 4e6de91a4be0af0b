"""``--limit`` with tuning: the validation split comes first, then exactly ``limit`` evaluation rows."""

from __future__ import annotations

import torch

from uncert_cli.data import ArrayDataset
from uncert_cli.evaluation import _split


def _rows(n: int) -> ArrayDataset:
    return ArrayDataset("t", torch.arange(n, dtype=torch.float32)[:, None], torch.zeros(n, dtype=torch.long),
                        "classification", 2, None)


def test_limit_is_the_evaluation_size_when_data_suffice():
    val, ev = _split(_rows(1300), 1000, 300)
    assert (len(val), len(ev)) == (1000, 300)
    assert float(ev.inputs[0]) == 1000.0  # disjoint and in order


def test_short_data_keep_at_least_half_for_evaluation():
    val, ev = _split(_rows(359), 150, 300)
    assert (len(val), len(ev)) == (150, 209)
    val, ev = _split(_rows(100), 1000, 300)
    assert (len(val), len(ev)) == (50, 50)

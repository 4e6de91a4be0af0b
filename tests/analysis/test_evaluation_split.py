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


def test_held_out_examples_do_not_depend_on_limit():
    """On a set shorter than limit + val_size the held-out part is what no --limit gives (at most
    half): --limit 50 on the 359 digits test images held out 309 of them before."""
    unlimited_val, _ = _split(_rows(359), 1000, None)
    for limit in (20, 50, 200, 300):
        val, ev = _split(_rows(359), 1000, limit)
        assert len(val) == len(unlimited_val) == 179
        assert len(ev) == min(limit, 180) and float(ev.inputs[0]) == 179.0

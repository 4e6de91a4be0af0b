"""Deterministic, seeded, stratified train/val/test split for the embedded datasets."""

from __future__ import annotations

import numpy as np

# Fractions of every class that go to the held-out splits; "train" gets the rest (70%).
HELD_OUT_FRACTIONS: dict[str, float] = {"test": 0.2, "val": 0.1}
SPLITS: tuple[str, ...] = ("train", "val", "test")


def stratified_split_indices(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Disjoint index arrays ``{"train", "val", "test"}`` that together cover ``range(len(labels))``.

    Per class (in increasing label order) the class's indices are permuted with
    ``numpy.random.default_rng(seed)``; the first round(20%) go to test, the next round(10%) to val,
    the rest to train. Each split's indices are returned sorted, so the original order is kept.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        # int(x + 0.5): round half up, unlike Python's round() which rounds half to even.
        n_test = int(len(members) * HELD_OUT_FRACTIONS["test"] + 0.5)
        n_val = int(len(members) * HELD_OUT_FRACTIONS["val"] + 0.5)
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    return {split: np.sort(np.concatenate(chunks)).astype(np.int64) for split, chunks in parts.items()}

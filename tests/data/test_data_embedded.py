"""digits, iris and toy-regression: shapes, documented splits, seeding."""

from __future__ import annotations

import numpy as np
import torch

from uncert_cli.data import load_dataset
from uncert_cli.data.splits import stratified_split_indices


def test_digits_shapes_scaling_and_disjoint_stratified_split() -> None:
    splits = {split: load_dataset("digits", split=split) for split in ("train", "val", "test")}
    assert sum(len(ds) for ds in splits.values()) == 1797
    test = splits["test"]
    assert test.sample_shape == (1, 8, 8) and test.inputs.dtype == torch.float32
    assert float(test.inputs.min()) == 0.0 and float(test.inputs.max()) == 1.0  # 0..16 scaled by 1/16
    assert test.num_classes == 10
    # 20% of every class (rounded) goes to test: per-class counts are 35..37.
    assert all(35 <= count <= 37 for count in torch.bincount(test.targets).tolist())


def test_stratified_split_is_a_disjoint_cover() -> None:
    labels = np.repeat(np.arange(3), [10, 21, 7])
    parts = stratified_split_indices(labels, seed=0)
    joined = np.concatenate([parts["train"], parts["val"], parts["test"]])
    assert sorted(joined.tolist()) == list(range(len(labels)))  # every index exactly once
    # round-half-up per class: test 2+4+1, val 1+2+1
    assert (len(parts["test"]), len(parts["val"])) == (7, 4)
    assert all(np.array_equal(parts[k], stratified_split_indices(labels, seed=0)[k]) for k in parts)


def test_iris_split_sizes_and_seed() -> None:
    train, val, test = (load_dataset("iris", split=split) for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (105, 15, 30)
    assert train.sample_shape == (4,) and train.class_names == ["setosa", "versicolor", "virginica"]
    assert torch.bincount(test.targets).tolist() == [10, 10, 10]
    again = load_dataset("iris", split="test")
    other_seed = load_dataset("iris", split="test", seed=1)
    assert torch.equal(again.inputs, test.inputs)
    assert not torch.equal(other_seed.inputs, test.inputs)


def test_toy_regression_is_the_seeded_cubic_problem() -> None:
    train = load_dataset("toy-regression")
    assert train.task == "regression"
    assert train.inputs.shape == (20, 1) and train.targets.shape == (20, 1)
    assert train.inputs.dtype == torch.float32 and train.targets.dtype == torch.float32
    assert float(train.inputs.abs().max()) <= 4.0
    residual_std = float((train.targets - train.inputs**3).std())
    assert 1.5 < residual_std < 5.0  # noise std 3 estimated from 20 draws
    assert torch.equal(load_dataset("toy-regression").targets, train.targets)
    test = load_dataset("toy-regression", split="test")
    assert test.inputs.shape == (20, 1) and not torch.equal(test.inputs, train.inputs)
    assert not torch.equal(load_dataset("toy-regression", seed=3).inputs, train.inputs)


def test_photo_patches_are_seeded_unit_range_8x8_images() -> None:
    a, b = load_dataset("photo-patches"), load_dataset("photo-patches")
    x = a.float_inputs()
    assert x.shape == (2000, 1, 8, 8)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal(a.float_inputs(), b.float_inputs())
    assert set(a.targets.tolist()) == {0, 1}
    assert not torch.equal(a.float_inputs(), load_dataset("photo-patches", seed=1).float_inputs())

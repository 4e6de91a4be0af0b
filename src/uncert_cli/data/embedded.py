"""Datasets that need no files: ``digits`` and ``iris`` (bundled with scikit-learn) and ``toy-regression``.

Splits (all deterministic given ``seed``, default 0):

* ``digits`` / ``iris``: stratified 70% train / 10% val / 20% test, disjoint (see :mod:`.splits`).
  digits: 1,797 8x8 images, values 0..16 scaled by 1/16 to [0, 1], float32 ``(N, 1, 8, 8)``, 10 classes.
  iris: 150 examples of 4 raw float32 features (cm), 3 classes.
* ``toy-regression``: the cubic problem of Ritter et al. (2018), section 5.1: 20 points
  ``x ~ U(-4, 4)``, ``y = x^3 + eps``, ``eps ~ N(0, 3^2)``. Each split is its own independent draw
  of 20 points from ``numpy.random.default_rng([seed, k])`` with k = 0 (train), 1 (val), 2 (test).
  Inputs and targets are float32 ``(20, 1)``.
"""

from __future__ import annotations

import numpy as np

from uncert_cli.core.errors import UserError
from uncert_cli.data.arrays import dataset_from_arrays
from uncert_cli.data.dataset import ArrayDataset
from uncert_cli.data.request import LoadRequest
from uncert_cli.data.splits import SPLITS, stratified_split_indices

TOY_POINTS = 20
TOY_INPUT_RANGE = (-4.0, 4.0)
TOY_NOISE_STD = 3.0
_TOY_STREAM = {"train": 0, "val": 1, "test": 2}


def _check_split(request: LoadRequest) -> None:
    if request.split not in SPLITS:
        raise UserError(f"dataset '{request.name}' has splits train, val and test, not '{request.split}'; pick one of those")


def load_digits_dataset(request: LoadRequest) -> ArrayDataset:
    """scikit-learn's 8x8 digits: float32 ``(N, 1, 8, 8)`` in [0, 1], labels 0..9."""
    from sklearn.datasets import load_digits  # lazy: scikit-learn is slow to import

    _check_split(request)
    bunch = load_digits()
    labels = bunch.target.astype(np.int64)
    chosen = stratified_split_indices(labels, request.seed)[request.split]
    images = (bunch.images[chosen] / 16.0).astype(np.float32)  # (n, 8, 8) -> (n, 1, 8, 8) in dataset_from_arrays
    return dataset_from_arrays(request.name, images, labels[chosen], class_names=[str(d) for d in range(10)])


def load_iris_dataset(request: LoadRequest) -> ArrayDataset:
    """Fisher's iris: float32 ``(N, 4)`` features (sepal/petal length/width in cm), 3 classes."""
    from sklearn.datasets import load_iris

    _check_split(request)
    bunch = load_iris()
    labels = bunch.target.astype(np.int64)
    chosen = stratified_split_indices(labels, request.seed)[request.split]
    features = bunch.data[chosen].astype(np.float32)
    return dataset_from_arrays(request.name, features, labels[chosen], class_names=[str(n) for n in bunch.target_names])


def toy_regression_arrays(split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One draw of the cubic toy problem: float32 inputs ``(20, 1)`` and targets ``(20, 1)``."""
    rng = np.random.default_rng([seed, _TOY_STREAM[split]])
    inputs = rng.uniform(*TOY_INPUT_RANGE, size=(TOY_POINTS, 1))
    targets = inputs**3 + TOY_NOISE_STD * rng.standard_normal(size=(TOY_POINTS, 1))
    return inputs.astype(np.float32), targets.astype(np.float32)


def load_toy_regression(request: LoadRequest) -> ArrayDataset:
    """Ritter et al. (2018) section 5.1 cubic regression, 20 points per split."""
    _check_split(request)
    inputs, targets = toy_regression_arrays(request.split, request.seed)
    return dataset_from_arrays(request.name, inputs, targets)


PATCHES = 2000
PATCH_SIZE = 8


def load_photo_patches(request: LoadRequest) -> ArrayDataset:
    """Out-of-distribution images for the digits model that need no download.

    ``PATCHES`` random 8x8 grayscale patches of the two photographs scikit-learn ships
    (``load_sample_images``: a temple in China and a flower), each patch min-max scaled to [0, 1]
    like a digit; float32 ``(2000, 1, 8, 8)``, label 0 = china, 1 = flower. Natural-image texture,
    not digits: what a digits classifier should be unsure about. Every split is the same draw
    (seeded by ``seed``); there is nothing to train on.
    """
    from sklearn.datasets import load_sample_images

    photos = [img.mean(axis=2) for img in load_sample_images().images]  # RGB -> gray, (427, 640)
    rng = np.random.default_rng([request.seed, 7])
    which = rng.integers(0, len(photos), size=PATCHES)
    patches = np.empty((PATCHES, PATCH_SIZE, PATCH_SIZE), dtype=np.float32)
    for k, photo in enumerate(which):
        height, width = photos[photo].shape
        # Take a 4x larger window and subsample it: a digit spans its whole 8x8 frame too.
        span = PATCH_SIZE * 4
        top, left = rng.integers(0, height - span), rng.integers(0, width - span)
        window = photos[photo][top : top + span : 4, left : left + span : 4]
        low, high = window.min(), window.max()
        patches[k] = (window - low) / max(high - low, 1e-6)
    return dataset_from_arrays(request.name, patches, which.astype(np.int64), class_names=["china", "flower"])

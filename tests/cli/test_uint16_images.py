"""uint16 images in a data file are pixels scaled by 65535 (as uint8 by 255), not token ids.

The same 64 digits are stored as uint8 and as uint16 (``x * 257``, so that ``x16 / 65535 == x8 / 255``
exactly); fitting the tiny digits MLP on either through the real CLI must record the same MAP
log-likelihood and accuracy. A 2-D uint16 array stays token ids.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from uncert_cli.data.arrays import standardize_inputs


def _digits(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, (64, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 10, 64)
    u8, u16 = folder / "u8.npz", folder / "u16.npz"
    np.savez(u8, x=x8, y=y)
    np.savez(u16, x=x8.astype(np.uint16) * 257, y=y)
    return u8, u16


def _fit_record(run_cli, checkpoint: Path, data: Path, out: Path) -> dict:
    r = run_cli("fit", checkpoint, "--data", data, "--method", "diag", "-o", out, "--quiet")
    assert r.code == 0, r.err
    with h5py.File(out) as f:
        return {k: f["fit"].attrs[k] for k in ("log_likelihood", "map_accuracy")}


def test_uint16_images_fit_as_their_uint8_twins(run_cli, digits_checkpoint, tmp_path) -> None:
    u8, u16 = _digits(tmp_path)
    as_uint8 = _fit_record(run_cli, digits_checkpoint, u8, tmp_path / "u8.h5")
    as_uint16 = _fit_record(run_cli, digits_checkpoint, u16, tmp_path / "u16.h5")
    assert as_uint16["log_likelihood"] == pytest.approx(as_uint8["log_likelihood"], rel=1e-6)
    assert as_uint16["map_accuracy"] == as_uint8["map_accuracy"]


@pytest.mark.parametrize("shape, expected", [((2, 4, 4), (2, 1, 4, 4)), ((2, 5, 5, 3), (2, 3, 5, 5))])
def test_uint16_image_shapes_are_scaled_pixels(shape, expected) -> None:
    stored = torch.full(shape, 65535, dtype=torch.uint16)
    read = standardize_inputs(stored, "x.npz")
    assert read.dtype == torch.float32 and tuple(read.shape) == expected
    assert bool((read == 1.0).all())


def test_two_dimensional_uint16_stays_token_ids() -> None:
    read = standardize_inputs(torch.tensor([[3, 40000]], dtype=torch.uint16), "x.npz")
    assert read.dtype == torch.int64 and read.tolist() == [[3, 40000]]

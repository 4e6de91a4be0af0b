"""Class labels saved as whole-number floats (``y = [0., 1., 2.]`` from NumPy or torch) are class labels for a
classifier; float labels that are not whole numbers are refused in one line naming the first such value."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from uncert_cli.storage.opening import open_posterior


def _write(path, x: np.ndarray, y: np.ndarray) -> None:
    if path.suffix == ".pt":
        torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, path)
    else:
        np.savez(path, x=x, y=y)


@pytest.fixture(scope="module")
def arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((64, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 64)


@pytest.mark.parametrize("suffix, dtype", [(".npz", np.float32), (".npz", np.float64), (".pt", np.float32)])
def test_whole_number_float_labels_fit_as_class_labels(run_cli, digits_checkpoint, tmp_path, arrays, suffix, dtype):
    x, y = arrays
    integers, floats = tmp_path / f"int{suffix}", tmp_path / f"float{suffix}"
    _write(integers, x, y)
    _write(floats, x, y.astype(dtype))
    docs = []
    for data, out in ((integers, tmp_path / "i.h5"), (floats, tmp_path / "f.h5")):
        r = run_cli("fit", digits_checkpoint, "--data", data, "--method", "diag", "--fisher", "empirical", "-o", out,
                    "--json")  # the empirical Fisher depends on the labels
        assert r.code == 0, r.err
        docs.append(json.loads(r.out))
    assert docs[1]["map_accuracy"] == docs[0]["map_accuracy"]
    variances = [open_posterior(tmp_path / name, runs_model=False).posterior.marginal_variance()
                 for name in ("i.h5", "f.h5")]
    for name, value in variances[0].items():
        assert torch.equal(value, variances[1][name]), name
    r = run_cli("ood", tmp_path / "f.h5", "--data", floats, "--against", integers, "--no-tune", "--predictive", "map",
                "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["in_distribution"]["map"]["accuracy"] == pytest.approx(docs[0]["map_accuracy"])


@pytest.mark.parametrize("bad, shown", [(0.5, "0.5 at index 3"), (-1.0, "-1 at index 3"), (np.nan, "nan at index 3")])
def test_float_labels_that_are_not_class_indices_are_refused(run_cli, digits_checkpoint, tmp_path, arrays, bad, shown):
    x, y = arrays
    labels = y.astype(np.float32)
    labels[3] = bad
    data = tmp_path / "d.npz"
    _write(data, x, labels)
    r = run_cli("fit", digits_checkpoint, "--data", data, "-o", tmp_path / "f.h5")
    assert r.code == 2 and not (tmp_path / "f.h5").exists()
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
    assert "not class indices" in r.err and shown in r.err and "--task regression" in r.err, r.err

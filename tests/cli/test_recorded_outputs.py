"""A factor file whose recorded output count or task is impossible, or contradicts the fit record, is refused when opened by report, prune and compare: exit 2, one line naming the file and the
field, nothing written. The files are real tiny fits (digits MLP 64-16-10, 64 examples) edited with h5py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest


@pytest.fixture(scope="module")
def fitted(digits_diag_factors) -> Path:
    return digits_diag_factors


def _with_meta(source: Path, folder: Path, **fields) -> Path:
    path = folder / "edited.h5"
    shutil.copyfile(source, path)
    with h5py.File(path, "r+") as f:
        meta = json.loads(f["model"].attrs["meta"])
        meta.update(fields)
        f["model"].attrs["meta"] = json.dumps(meta)
    return path


EDITS = {
    "negative": ({"num_outputs": -3}, "field 'num_outputs' is -3, not a positive whole number"),
    "zero": ({"num_outputs": 0}, "field 'num_outputs' is 0, not a positive whole number"),
    "text": ({"num_outputs": "10"}, "field 'num_outputs' is '10', not a positive whole number"),
    "fractional": ({"num_outputs": 2.5}, "field 'num_outputs' is 2.5"),
    "other-task": ({"task": "regression"}, "field 'task' is 'regression' but /fit records task 'classification'"),
}


def _args(command: str, path: Path, other: Path, out: Path) -> list:
    if command == "report":
        return ["report", path, "--png", out / "png"]
    if command == "prune":
        return ["prune", path, "--fraction", "0.5", "-o", out / "pruned.safetensors"]
    return ["compare", other, path]


@pytest.mark.parametrize("command", ["report", "prune", "compare"])
@pytest.mark.parametrize("edit", list(EDITS))
def test_a_contradictory_output_record_is_refused(run_cli, fitted, tmp_path, command, edit) -> None:
    fields, message = EDITS[edit]
    edited = _with_meta(fitted, tmp_path, **fields)
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli(*_args(command, edited, fitted, out))
    assert r.code == 2, (r.code, r.err)
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("uncert: error:"), r.err
    assert str(edited) in lines[0] and "/model attribute 'meta'" in lines[0] and message in lines[0], lines[0]
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_the_unedited_file_and_an_unrecorded_count_open(run_cli, fitted, tmp_path) -> None:
    """The checks refuse only contradictions: the fit's own file, and one without num_outputs, are fine."""
    assert run_cli("report", fitted, "--json").code == 0
    unrecorded = _with_meta(fitted, tmp_path, num_outputs=None)
    r = run_cli("report", unrecorded, "--json")
    assert r.code == 0, r.err

"""``prune --evaluate`` reads a ``(batch, classes, 1)`` output over its classes, as the predictives do.

A user class that returns the digits MLP's logits as ``(B, 10, 1)`` is evaluated through the real CLI on
the MLP's own factor file, with its ``num_outputs`` recorded (the width check at loading reads the output
as 10 wide) and unrecorded: every accuracy and NLL must equal the plain MLP's. Before, the first was
refused as "1 output per example" and the second took the argmax over the trailing 1 (and the NLL was an
internal error).
"""

from __future__ import annotations

import json
import shutil

import h5py
import pytest

TRAILING = """
from uncert_cli.models import MLP


class Trailing(MLP):
    def forward(self, x):
        return super().forward(x).unsqueeze(-1)
"""
KWARGS = ("--arch-kwargs", "in_features=64", "--arch-kwargs", "hidden=[16]", "--arch-kwargs", "out_features=10")


@pytest.mark.parametrize("recorded", [True, False])
def test_trailing_unit_dimension_evaluates_as_the_plain_network(
    run_cli, digits_diag_factors, tmp_path, monkeypatch, recorded
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "trailing.py").write_text(TRAILING)
    factors = tmp_path / "f.h5"
    shutil.copyfile(digits_diag_factors, factors)
    if not recorded:  # without a recorded num_outputs the width check at loading is skipped
        with h5py.File(factors, "r+") as f:
            meta = json.loads(f["model"].attrs["meta"])
            meta["num_outputs"] = None
            f["model"].attrs["meta"] = json.dumps(meta)
    common = ("prune", factors, "--evaluate", "--data", "digits", "--limit", "64", "--fraction", "0.5", "--json")
    plain = run_cli(*common)
    assert plain.code == 0, plain.err
    trailing = run_cli(*common, "--arch", "trailing.py:Trailing", *KWARGS)
    assert trailing.code == 0, trailing.err
    expected, got = json.loads(plain.out)["evaluation"], json.loads(trailing.out)["evaluation"]
    assert got["unpruned"] == expected["unpruned"] and got["points"] == expected["points"]
    assert 0.0 < got["unpruned"]["accuracy"] < 1.0  # an argmax over a trailing 1 would give label 0's share

"""``uncert fit --method full|lowrank|ekfac|kfac-diag`` end to end: file, report, prune, ood, errors."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("method,extra", [("full", []), ("lowrank", ["--rank", "5"]), ("ekfac", []),
                                          ("kfac-diag", ["--rank", "4"])])
def test_fit_report_prune(run_cli, digits_checkpoint, tmp_path, method, extra):
    out = tmp_path / f"{method}.h5"
    code, stdout, err = run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "64", "--method", method,
                            *extra, "-o", out, "--json", "--dtype", "float64")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["method"] == method
    code, stdout, err = run_cli("report", out, "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["model"]["covered_params"] == sum(layer["params"] for layer in summary["layers"])
    # report names each layer's structure as fit does (it called ekfac "kronecker", the rest "diagonal")
    assert [layer["structure"] for layer in report["layers"]] == [layer["structure"] for layer in summary["layers"]]
    code, stdout, err = run_cli("prune", out, "--fraction", "0.2", "--json")
    assert code == 0, err


def test_layers_alias_and_full_refusal(run_cli, digits_checkpoint, tmp_path):
    out = tmp_path / "f.h5"
    code, stdout, err = run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "32", "--method", "ekfac",
                            "--layers", "fc2", "-o", out, "--json")
    assert code == 0, err
    assert [layer["module"] for layer in json.loads(stdout)["layers"]] == ["fc2"]
    code, _, err = run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "32", "--method", "full",
                       "--max-memory", "1KiB", "-o", tmp_path / "g.h5")
    assert code == 2 and "2·P²·8 bytes" in err
    code, _, err = run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "32", "--method", "kfac",
                       "--rank", "3", "-o", tmp_path / "h.h5")
    assert code == 2 and "--rank applies" in err

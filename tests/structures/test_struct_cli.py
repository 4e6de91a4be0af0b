"""``uncert fit --method full|lowrank|ekfac|kfac-diag`` end to end: file, report, prune, ood, errors."""

from __future__ import annotations

import json

import pytest
import torch

from uncert_cli.checkpoint import ModelMeta, save_model
from uncert_cli.cli.main import main
from uncert_cli.models import MLP


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    kwargs = {"in_features": 64, "hidden": [8], "out_features": 10}
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(1, 8, 8),
                     task="classification", num_outputs=10, dataset="digits")
    path = tmp_path_factory.mktemp("ckpt") / "digits_tiny.safetensors"
    save_model(MLP(**kwargs), meta, path)
    return path


def run(capfd, *args):
    capfd.readouterr()
    code = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return code, out, err


@pytest.mark.parametrize("method,extra", [("full", []), ("lowrank", ["--rank", "5"]), ("ekfac", []),
                                          ("kfac-diag", ["--rank", "4"])])
def test_fit_report_prune(capfd, checkpoint, tmp_path, method, extra):
    out = tmp_path / f"{method}.h5"
    code, stdout, err = run(capfd, "fit", checkpoint, "--data", "digits", "--limit", "64", "--method", method,
                            *extra, "-o", out, "--json", "--dtype", "float64")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["method"] == method
    code, stdout, err = run(capfd, "report", out, "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["model"]["covered_params"] == sum(layer["params"] for layer in summary["layers"])
    code, stdout, err = run(capfd, "prune", out, "--fraction", "0.2", "--json")
    assert code == 0, err


def test_layers_alias_and_full_refusal(capfd, checkpoint, tmp_path):
    out = tmp_path / "f.h5"
    code, stdout, err = run(capfd, "fit", checkpoint, "--data", "digits", "--limit", "32", "--method", "ekfac",
                            "--layers", "fc2", "-o", out, "--json")
    assert code == 0, err
    assert [layer["module"] for layer in json.loads(stdout)["layers"]] == ["fc2"]
    code, _, err = run(capfd, "fit", checkpoint, "--data", "digits", "--limit", "32", "--method", "full",
                       "--max-memory", "1KiB", "-o", tmp_path / "g.h5")
    assert code == 2 and "2·P²·8 bytes" in err
    code, _, err = run(capfd, "fit", checkpoint, "--data", "digits", "--limit", "32", "--method", "kfac",
                       "--rank", "3", "-o", tmp_path / "h.h5")
    assert code == 2 and "--rank applies" in err

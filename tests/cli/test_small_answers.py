"""Smaller points of issue 20: --version, what info knows without metadata, 80-column tables,
the task mismatch that names --task."""

from __future__ import annotations

import json

import numpy as np
import torch

from uncert_cli import __version__
from uncert_cli.models import MLP


def test_version(run_cli) -> None:
    r = run_cli("--version")
    assert (r.code, r.out.strip()) == (0, f"uncert {__version__}")


def test_info_reads_input_and_classes_off_the_layers(run_cli, tmp_path) -> None:
    torch.save(MLP(64, [16], 10).state_dict(), tmp_path / "w.pt")
    r = run_cli("info", tmp_path / "w.pt", "--arch", "MLP", "--arch-kwargs", "in_features=64,hidden=[16],out_features=10",
                "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["input_shape"] is None and doc["input_hint"].startswith("64 features")
    assert doc["num_outputs_from_layers"] == 10
    r = run_cli("info", tmp_path / "w.pt", "--arch", "MLP", "--arch-kwargs", "in_features=64,hidden=[16],out_features=10")
    assert "input 64 features" in r.out and "classes 10 (last layer)" in " ".join(r.out.split())


def test_tables_fit_80_columns_when_piped(run_cli, digits_checkpoint, tmp_path) -> None:
    factors = tmp_path / "f.h5"
    assert run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "64", "-o", factors, "-q").code == 0
    for args in (("info", digits_checkpoint), ("report", factors), ("prune", factors, "--fraction", "0.5")):
        r = run_cli(*args)  # captured output is not a terminal: rich lays it out for 80 columns
        assert r.code == 0, r.err
        assert max(len(line) for line in r.out.splitlines()) <= 80, args
        # nothing cut off (the fingerprint is shortened on purpose)
        assert not [line for line in r.out.splitlines() if "…" in line and "fingerprint" not in line], args


def test_float_targets_for_a_classifier_suggest_task_regression(run_cli, digits_checkpoint, tmp_path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "reg.npz", x=rng.normal(size=(20, 1, 8, 8)).astype(np.float32),
             y=rng.normal(size=(20, 10)).astype(np.float32))
    r = run_cli("fit", digits_checkpoint, "--data", tmp_path / "reg.npz", "-o", tmp_path / "r.h5")
    assert r.code == 2 and "--task regression" in r.err
    r = run_cli("fit", digits_checkpoint, "--data", tmp_path / "reg.npz", "--task", "regression", "-o",
                tmp_path / "r.h5", "-q")
    assert r.code == 0, r.err


def test_the_cli_module_runs_as_a_script():
    """`python -m uncert_cli.cli.main` is the CLI too (it did nothing and exited 0 before)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "uncert_cli.cli.main", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("uncert "), (done.stdout, done.stderr)


def test_info_is_one_library_call_for_checkpoints_and_factor_files(run_cli, digits_checkpoint, tmp_path) -> None:
    # `uncert info` describes workflows.inputs.load_model_file's model: a checkpoint's, or a factor file's at its
    # stored weights; a FIFO is refused from stat, never opened (it would block).
    import os

    import pytest

    from uncert_cli.errors import UserError
    from uncert_cli.workflows.inputs import load_model_file

    factors = tmp_path / "f.h5"
    assert run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "32", "--method", "diag", "-o", factors,
                   "--quiet").code == 0
    from_checkpoint, from_factors = load_model_file(digits_checkpoint), load_model_file(factors)
    assert from_checkpoint.meta.arch == from_factors.meta.arch == "uncert_cli.models:MLP"
    for name, value in from_checkpoint.module.state_dict().items():
        assert torch.equal(from_factors.module.state_dict()[name], value)
    shown = [json.loads(run_cli("info", path, "--json").out) for path in (digits_checkpoint, factors)]
    assert shown[0]["layers"] == shown[1]["layers"]
    os.mkfifo(tmp_path / "pipe.h5")
    with pytest.raises(UserError, match="named pipe"):
        load_model_file(tmp_path / "pipe.h5")


def test_no_correct_prediction_shows_a_dash_not_nan(run_cli, digits_checkpoint, tmp_path):
    # Every evaluated label is one the network does not predict: the mean entropy over the (no) correct
    # predictions is undefined, null in the JSON, and shown as a dash like the AUROC beside it (was "nan").
    from uncert_cli.checkpoint import load_model

    factors = tmp_path / "f.h5"
    assert run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "32", "--method", "diag", "-o", factors,
                   "--quiet").code == 0
    rng = np.random.default_rng(0)
    x = rng.random((24, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        predicted = load_model(digits_checkpoint).module.eval()(torch.from_numpy(x)).argmax(1).numpy()
    np.savez(tmp_path / "wrong.npz", x=x, y=(predicted + 1) % 10)
    np.savez(tmp_path / "noise.npz", x=rng.random((8, 1, 8, 8), dtype=np.float32))
    args = ["ood", factors, "--data", tmp_path / "wrong.npz", "--against", tmp_path / "noise.npz", "--predictive", "map"]
    doc = json.loads(run_cli(*args, "--json").out)
    assert doc["misclassification"]["map"]["n_correct"] == 0
    assert doc["misclassification"]["map"]["mean_entropy_correct"] is None
    r = run_cli(*args)
    assert r.code == 0, r.err
    row = next(line for line in r.out.splitlines() if line.startswith("│ map") and "│       0 │" in line)
    assert "nan" not in row and "—" in row

"""``uncert fit`` end to end through the real CLI: the file it writes and what it prints."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from uncert_cli.store import read_factor_file


@pytest.mark.parametrize("method", ["kfac", "diag"])
def test_fit_writes_a_readable_factor_file(run_cli, digits_checkpoint, tmp_path, method):
    out = tmp_path / "f.h5"
    r = run_cli("fit", digits_checkpoint, "--data", "digits", "--method", method, "-o", out, "--json", "--limit", "300")
    assert r.code == 0, r.err
    summary = json.loads(r.out)  # stdout is only JSON
    assert summary["method"] == method and summary["n_data"] == 300
    assert summary["parameters"] == 64 * 16 + 16 + 16 * 10 + 10
    factors = read_factor_file(out)
    assert factors.curvature.n_data == 300
    assert len(factors.curvature.blocks) == 2
    with h5py.File(out) as f:  # plain h5py can read the documented layout
        assert f.attrs["format"] == "uncert-factors"
        block = f["blocks/0"]
        if method == "kfac":
            A, G = block["input_factor"][()], block["output_factor"][()]
            assert A.shape == (65, 65) and G.shape == (16, 16)
            lam, vec = block["input_eigenvalues"][()], block["input_eigenvectors"][()]
            np.testing.assert_allclose(vec @ np.diag(lam) @ vec.T, A, atol=1e-5 * np.abs(A).max())
        else:
            assert block["diagonal/0"].shape == (16, 64)
            assert (block["diagonal/0"][()] >= 0).all()
    assert factors.fit["log_likelihood"] < 0


def test_fit_json_keeps_progress_off_stdout(run_cli, digits_checkpoint, tmp_path):
    r = run_cli("fit", digits_checkpoint, "--data", "digits", "-o", tmp_path / "f.h5", "--json", "--limit", "64")
    assert r.code == 0
    json.loads(r.out)


def test_fit_human_output_mentions_output_file(run_cli, digits_checkpoint, tmp_path):
    out = tmp_path / "f.h5"
    r = run_cli("fit", digits_checkpoint, "--limit", "64", "-o", out)  # dataset from the metadata
    assert r.code == 0, r.err
    assert str(out) in r.out.replace("\n", "")


def test_fit_float64_keeps_checkpoint_weights(run_cli, digits_checkpoint, tmp_path):
    out = tmp_path / "f.h5"
    r = run_cli("fit", digits_checkpoint, "--limit", "32", "--dtype", "float64", "-o", out, "--quiet")
    assert r.code == 0, r.err
    factors = read_factor_file(out)
    assert factors.state_dict["fc1.weight"].dtype == torch.float32
    assert factors.curvature.blocks[0].input_factor.dtype == torch.float64


@pytest.mark.parametrize("checkpoint, data, method", [
    ("digits", "digits", "kfac"),
    ("digits", "digits", "ekfac"),  # structured methods score the MAP in a separate pass
    ("toy", "toy-regression", "kfac"),
])
def test_fit_records_the_map_log_likelihood(run_cli, digits_checkpoint, tmp_path, checkpoint, data, method):
    """The log-likelihood and accuracy the curvature pass records equal a direct evaluation."""
    from pathlib import Path

    from uncert_cli.checkpoint import load_model
    from uncert_cli.inputs import load_model_data

    path = digits_checkpoint if checkpoint == "digits" else Path(__file__).parents[2] / "sample_models" / "toy_regression_mlp.safetensors"
    out = tmp_path / "f.h5"
    assert run_cli("fit", path, "--data", data, "--method", method, "-o", out, "--batch-size", "37").code == 0
    fit = read_factor_file(out).fit
    loaded = load_model(path)
    ds = load_model_data(loaded.meta, data, split="train")
    with torch.no_grad():
        logits = loaded.module.eval()(ds.inputs).double()
    if loaded.meta.task == "classification":
        expected = -torch.nn.functional.cross_entropy(logits, ds.targets, reduction="sum")
        assert float(fit["map_accuracy"]) == pytest.approx(float((logits.argmax(-1) == ds.targets).double().mean()))
    else:
        r = logits.reshape(len(ds), -1) - ds.targets.double().reshape(len(ds), -1)
        expected = -0.5 * (r**2).sum() - 0.5 * r.numel() * np.log(2 * np.pi)
    assert float(fit["log_likelihood"]) == pytest.approx(float(expected), rel=1e-5)


def test_fit_records_normalize_for_later_commands(run_cli, digits_checkpoint, tmp_path):
    """``fit --normalize`` is stored with the model metadata, so ``ood`` scores the inputs the curvature
    was fitted on (before, it silently fell back to the checkpoint's normalisation)."""
    from uncert_cli.factors import open_posterior
    from uncert_cli.inputs import load_model_data

    out = tmp_path / "f.h5"
    r = run_cli("fit", digits_checkpoint, "--data", "digits", "--normalize", "8,4", "-o", out, "--json", "--limit", "200")
    assert r.code == 0, r.err
    meta = open_posterior(out).model.meta
    assert meta.normalize_mean == (8.0,) and meta.normalize_std == (4.0,)
    recorded = load_model_data(meta, "digits", split="test")
    explicit = load_model_data(meta, "digits", split="test", normalize="8,4")
    torch.testing.assert_close(recorded.inputs, explicit.inputs)
    # The MAP accuracy that ood reports is the one on inputs normalised as in the fit.
    module = open_posterior(out).model.module
    with torch.no_grad():
        expected = float((module(recorded.inputs.float()).argmax(1) == recorded.targets).double().mean())
    r = run_cli("ood", out, "--data", "digits", "--predictive", "map", "--no-tune", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["in_distribution"]["map"]["accuracy"] == pytest.approx(expected, abs=1e-9)


def test_quiet_keeps_the_result_and_drops_the_rest(run_cli, digits_checkpoint, tmp_path):
    """``--quiet`` means no progress bars or log lines, as in report/ood: the summary table stays."""
    r = run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "100", "-o", tmp_path / "f.h5", "-q")
    assert r.code == 0, r.err
    assert "kfac Laplace" in r.out and "fc1" in r.out
    assert r.err.strip() == ""
    r = run_cli("tune", tmp_path / "f.h5", "-q")
    assert r.code == 0 and "tuned by widest" in r.out and r.err.strip() == ""

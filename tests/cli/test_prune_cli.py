"""``uncert prune`` through the real entry point: candidates, pruned checkpoints, --evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from safetensors.torch import load_file

from tests.reference.small_posterior import dense_variances, small, write_small_factor_file
from uncert_cli.cli.main import main


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, digits_checkpoint) -> Path:
    out = tmp_path_factory.mktemp("fit") / "digits.h5"
    assert main(["fit", str(digits_checkpoint), "--data", "digits", "--limit", "200", "-o", str(out), "--quiet"]) == 0
    return out


def test_prune_writes_the_lowest_snr_weights_as_zeros(tmp_path, run_cli) -> None:
    s = small()
    factors = write_small_factor_file(tmp_path / "small.h5", s, tau=1.0)
    out = tmp_path / "pruned.safetensors"
    r = run_cli("prune", factors, "--fraction", "0.5", "--criterion", "snr", "-o", out, "--json", "--top", "100")
    assert r.code == 0, r.err
    doc = json.loads(r.out)["selection"]
    assert doc["total_candidates"] == 18 and doc["pruned"] == 9  # weights only: 12 + 6, biases excluded
    assert sum(c["pruned"] for c in doc["counts"]) == 9
    # the expected selection, from dense variances
    var = dense_variances(s, 1.0)
    params = {n: p.detach().numpy() for n, p in s.model.named_parameters()}
    snr = {n: np.abs(params[n]) / np.sqrt(var[n]) for n in ("fc1.weight", "fc2.weight")}
    flat = np.concatenate([snr["fc1.weight"].reshape(-1), snr["fc2.weight"].reshape(-1)])
    threshold = np.sort(flat)[8]
    assert [c["score"] for c in doc["candidates"]] == sorted(c["score"] for c in doc["candidates"])
    assert doc["candidates"][-1]["score"] == pytest.approx(threshold, rel=1e-4)
    saved = load_file(out)
    for name in ("fc1.weight", "fc2.weight"):
        expected_zero = snr[name] <= threshold
        np.testing.assert_array_equal(saved[name].numpy() == 0, expected_zero)
        np.testing.assert_allclose(saved[name].numpy()[~expected_zero], params[name][~expected_zero], rtol=1e-6)
    np.testing.assert_allclose(saved["fc1.bias"].numpy(), params["fc1.bias"], rtol=1e-6)
    info = run_cli("info", out, "--json")
    assert info.code == 0 and json.loads(info.out)["arch"] == "uncert_cli.models:MLP"


def test_prune_table_lists_top_candidates_and_counts(fitted, run_cli) -> None:
    r = run_cli("prune", fitted, "--fraction", "0.3", "--criterion", "obd", "--top", "5")
    assert r.code == 0, r.err
    assert "Pruning candidates: obd" in r.out and "Pruned per layer" in r.out
    assert "fc1.weight" in r.out and "fc2.weight" in r.out


@pytest.mark.parametrize("criterion", ["snr", "variance-ratio", "obd", "magnitude"])
def test_prune_json_per_criterion(fitted, run_cli, criterion: str) -> None:
    r = run_cli("prune", fitted, "--fraction", "0.25", "--criterion", criterion, "--json")
    assert r.code == 0, r.err
    sel = json.loads(r.out)["selection"]
    assert sel["criterion"] == criterion and sel["total_candidates"] == 64 * 16 + 16 * 10
    assert sel["pruned"] == round(0.25 * sel["total_candidates"])
    scores = [c["score"] for c in sel["candidates"]]
    assert len(scores) == 20 and scores == sorted(scores, reverse=criterion == "variance-ratio")
    for c in sel["candidates"]:
        assert set(c) == {"layer", "param", "index", "mean", "std", "snr", "score"}
        assert c["snr"] == pytest.approx(abs(c["mean"]) / c["std"], rel=1e-6)


def test_prune_evaluate_compares_with_magnitude(fitted, tmp_path, run_cli) -> None:
    figs = tmp_path / "figs"
    r = run_cli("prune", fitted, "--evaluate", "--data", "digits", "--limit", "150", "--fractions", "0.2,0.6",
                "--png", figs, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["selection"] is None
    ev = doc["evaluation"]
    assert ev["baseline"] == "magnitude" and ev["split"] == "test" and ev["examples"] == 150
    assert {(p["criterion"], p["fraction"]) for p in ev["points"]} == {
        (c, f) for c in ("snr", "variance-ratio", "obd", "magnitude") for f in (0.2, 0.6)
    }
    for p in ev["points"]:
        assert 0 <= p["accuracy"] <= 1 and p["nll"] > 0
    assert {c["criterion"] for c in ev["comparison"]} == {"snr", "variance-ratio", "obd"}
    image = mpimg.imread(Path(ev["png"]))
    assert image.ndim == 3 and image.shape[1] > 300
    table = run_cli("prune", fitted, "--evaluate", "--data", "digits", "--limit", "50", "--fractions", "0.5", "-q")
    assert table.code == 0 and "magnitude (baseline)" in table.out and "Test accuracy" in table.out


def test_prune_bad_input(fitted, tmp_path, run_cli) -> None:
    r = run_cli("prune", fitted)
    assert r.code == 2 and "--fraction" in r.err
    r = run_cli("prune", fitted, "--fraction", "0.5", "-o", tmp_path / "x.pt")
    assert r.code == 2 and "safetensors" in r.err
    r = run_cli("prune", fitted, "--evaluate", "--fractions", "0.5,2", "--data", "digits")
    assert r.code == 2 and "between 0 and 1" in r.err
    r = run_cli("prune", fitted, "--fraction", "1.5")
    assert r.code == 2
    r = run_cli("prune", tmp_path / "missing.h5")  # the missing file first, not the missing --fraction
    assert r.code == 2 and "no such file" in r.err and "--fraction" not in r.err

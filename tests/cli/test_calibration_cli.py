"""Issue 13 end to end: the widest objective as the default of `tune` and `ood`, the held-out NLL that
`tune`, `ood` and `attack` report against the MAP's, and where the held-out examples come from."""

from __future__ import annotations

import json

from pathlib import Path

import pytest

import uncert_cli
from uncert_cli.store import read_factor_file


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The shipped digits MLP (trained: 95.5% test accuracy), KFAC on 300 training images."""
    from uncert_cli.cli.main import main

    out = tmp_path_factory.mktemp("calib") / "f.h5"
    checkpoint = Path(uncert_cli.__file__).parent / "samples" / "digits_mlp.safetensors"
    assert main(["fit", str(checkpoint), "--limit", "300", "-o", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def factor_file(fitted, tmp_path):
    copy = tmp_path / "f.h5"
    copy.write_bytes(fitted.read_bytes())
    return copy


def _json(result) -> dict:
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_tune_default_is_widest_on_the_val_split_and_reports_held_out_nll(run_cli, factor_file):
    doc = _json(run_cli("tune", factor_file, "--json"))
    assert doc["objective"] == "widest" and doc["nll_tolerance"] == 0.01
    v = doc["validation"]
    assert v["from"] == "val" and v["examples"] == f"val[0:{v['n']}]" and v["n"] > 50
    assert v["predictive"] == "probit"
    # The chosen grid point: admissible, and no admissible point has a larger held-out entropy.
    reference = min(v["map_nll"], *(r["nll"] for r in doc["history"]))
    admissible = [r for r in doc["history"] if r["nll"] <= reference * 1.01]
    chosen = next(r for r in doc["history"]
                  if (r["n_data"], r["prior_precision"]) == (doc["n_data"], doc["prior_precision"]))
    assert chosen in admissible
    assert chosen["entropy"] == max(r["entropy"] for r in admissible)
    # The reported held-out NLL is the chosen point's, the ratio against the MAP within the tolerance.
    assert v["nll"] == pytest.approx(chosen["nll"], rel=1e-9)
    assert v["nll_ratio"] == pytest.approx(v["nll"] / v["map_nll"]) and v["nll_ratio"] <= 1.01 + 1e-12
    stored = read_factor_file(factor_file)
    assert stored.tuning["objective"] == "widest" and stored.prior.prior_mode == "factor"
    assert stored.prior.prior_precision == pytest.approx(doc["prior_precision"])


def test_widest_is_at_least_as_wide_as_the_nll_optimum(run_cli, factor_file):
    doc = _json(run_cli("tune", factor_file, "--dry-run", "--json"))
    history = doc["history"]
    best = min(history, key=lambda r: r["nll"])
    chosen = next(r for r in history if (r["n_data"], r["prior_precision"]) == (doc["n_data"], doc["prior_precision"]))
    assert chosen["entropy"] >= best["entropy"] and chosen["nll"] <= 1.01 * min(best["nll"], doc["validation"]["map_nll"])
    # val-nll on the same examples picks the optimum itself (the file's eigen form: compare its own grid).
    by_nll = _json(run_cli("tune", factor_file, "--objective", "val-nll", "--predictive", "probit", "--dry-run", "--json"))
    assert by_nll["value"] == min(r["nll"] for r in by_nll["history"])
    assert by_nll["validation"]["from"] == "val"


def test_marglik_reports_held_out_nll_where_a_val_split_exists(run_cli, factor_file):
    doc = _json(run_cli("tune", factor_file, "--objective", "marglik", "--json"))
    v = doc["validation"]
    assert v["from"] == "val" and v["nll"] > 0 and v["map_nll"] > 0
    assert v["nll_ratio"] == pytest.approx(v["nll"] / v["map_nll"])


def test_val_from_train_is_the_end_of_the_training_split(run_cli, factor_file):
    doc = _json(run_cli("tune", factor_file, "--val-from", "train", "--dry-run", "--json"))
    v = doc["validation"]
    # digits' train split has 1,259 images: at most half of it, taken from its end.
    assert v["from"] == "train" and v["examples"] == "train[630:1259]" and v["n"] == 629


def test_val_from_val_on_a_set_without_one_is_a_clean_error(run_cli, factor_file, tmp_path):
    import numpy as np

    x = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(40, np.int64))
    r = run_cli("ood", factor_file, "--data", tmp_path / "d.npz", "--val-from", "val", "--json")
    assert r.code == 2 and "has no val split" in r.err and "--val-from test" in r.err and r.out == ""
    assert "Traceback" not in r.err


def test_ood_with_a_hand_given_prior_checks_it_and_warns(run_cli, factor_file):
    """A tiny τ by hand: a very wide posterior. ood still uses it, but reports its held-out NLL against the
    MAP's and warns on stderr, naming the better commands; --json keeps stdout pure JSON."""
    r = run_cli("ood", factor_file, "--against", "photo-patches", "--prior-precision", "1e-6", "--predictive",
                "map,probit", "--limit", "100", "--json")
    doc = _json(r)
    hp = doc["hyperparameters"]["probit"]
    assert hp["source"] == "override" and hp["objective"] is None
    assert hp["validation_nll"] > 1.05 * hp["map_validation_nll"]
    assert doc["validation_from"] == "val" and doc["validation_n"] > 50 and doc["n_validation"] == 0
    err = " ".join(r.err.split())
    assert "warning" in err and f"uncert tune {factor_file}" in err and "--tune" in err


def test_ood_default_tunes_by_widest_without_warning(run_cli, factor_file):
    r = run_cli("ood", factor_file, "--against", "photo-patches", "--limit", "100", "--json")
    doc = _json(r)
    hp = doc["hyperparameters"]["probit"]
    assert hp["source"] == "tuned" and hp["objective"] == "widest" and hp["nll_tolerance"] == 0.01
    assert hp["validation_nll"] <= 1.01 * hp["map_validation_nll"] + 1e-12
    assert doc["validation_from"] == "val" and doc["n_validation"] == doc["validation_n"]
    # No held-out NLL warning (a tuned value on the grid's edge is warned about as by `uncert tune`)
    warnings = [line for line in r.err.splitlines() if "warning" in line]
    assert all("edge of the searched grid" in line for line in warnings), r.err
    assert len(warnings) == (1 if hp["at_grid_edge"] else 0), r.err


def test_attack_reports_the_check_too(run_cli, factor_file):
    assert run_cli("tune", factor_file, "--objective", "marglik", "-q").code == 0
    doc = _json(run_cli("attack", factor_file, "--predictive", "map,glm", "--mode", "untargeted",
                        "--step-sizes", "0,0.1", "--limit", "40", "--samples", "5", "--json"))
    hp = doc["hyperparameters"]["glm"]
    assert hp["source"] == "file" and hp["validation_nll"] > 0 and hp["map_validation_nll"] > 0
    assert doc["validation_from"] == "val"

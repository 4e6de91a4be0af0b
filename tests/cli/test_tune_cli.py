"""``uncert tune`` records tuned hyperparameters in the factor file (and only there)."""

from __future__ import annotations

import json

import pytest

from uncert_cli.factors import open_posterior
from uncert_cli.store import read_factor_file


@pytest.fixture
def factor_file(run_cli, digits_checkpoint, tmp_path):
    out = tmp_path / "f.h5"
    assert run_cli("fit", digits_checkpoint, "--limit", "200", "-o", out, "--quiet").code == 0
    return out


def test_marglik_scalar_is_written_and_maximises_the_evidence(run_cli, factor_file):
    r = run_cli("tune", factor_file, "--objective", "marglik", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    tau = doc["prior_precision"]
    assert doc["written"] and tau > 0
    stored = read_factor_file(factor_file)
    assert stored.prior.prior_precision == pytest.approx(tau)
    assert stored.tuning["objective"] == "marglik"
    # The stored optimum beats its neighbours on the evidence.
    opened = open_posterior(factor_file)
    ll = float(stored.fit["log_likelihood"])
    best = opened.posterior.log_marginal_likelihood(ll)
    for factor in (0.5, 2.0):
        other = opened.posterior.with_hyperparameters(prior_precision=tau * factor)
        assert other.log_marginal_likelihood(ll) < best


def test_marglik_per_layer(run_cli, factor_file):
    doc = json.loads(run_cli("tune", factor_file, "--objective", "marglik", "--prior-structure", "layer", "--json").out)
    assert set(doc["prior_precision"]) == {"fc1", "fc2"}
    assert read_factor_file(factor_file).prior.prior_precision == pytest.approx(doc["prior_precision"])


def test_dry_run_leaves_the_file_alone(run_cli, factor_file):
    before = factor_file.read_bytes()
    r = run_cli("tune", factor_file, "--dry-run", "--json")
    assert r.code == 0 and json.loads(r.out)["written"] is False
    assert factor_file.read_bytes() == before


def test_val_nll_needs_data_and_records_n_and_tau(run_cli, factor_file):
    r = run_cli("tune", factor_file, "--objective", "val-nll", "--data", "digits", "--split", "val",
                "--predictive", "probit", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    stored = read_factor_file(factor_file).prior
    assert stored.prior_precision == pytest.approx(doc["prior_precision"])
    assert stored.n_data == pytest.approx(doc["n_data"])
    # (N, τ) both searched, on the grid `uncert ood` tunes on: N ∈ {1, 10, 100}×fitted, τ ∈ 10^-2…10^4.
    stored_file = read_factor_file(factor_file)
    grid = {(r["n_data"], r["prior_precision"]) for r in stored_file.tuning["history"]}
    n_fit = stored_file.curvature.n_data
    assert {n for n, _ in grid} == {n_fit * f for f in (1.0, 10.0, 100.0)}
    assert {t for _, t in grid} == {10.0**k for k in range(-2, 5)}
    edges = [k for k, best, values in (("n_data", doc["n_data"], {n for n, _ in grid}),
                                       ("prior_precision", doc["prior_precision"], {t for _, t in grid}))
             if values and best in (min(values), max(values))]
    assert doc["at_grid_edge"] == edges
    assert ("edge of the searched grid" in " ".join(r.err.split())) == bool(edges)


def test_marglik_counts_pseudo_observations_like_the_curvature(run_cli, digits_checkpoint, tmp_path):
    """With --n-data 2N the evidence's data term doubles too, so the optimum equals the one for data
    duplicated twice: the same τ as fitting twice the data would give for this MAP."""
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    assert run_cli("fit", digits_checkpoint, "--limit", "200", "-o", one, "--quiet").code == 0
    assert run_cli("fit", digits_checkpoint, "--limit", "200", "--n-data", "400", "-o", two, "--quiet").code == 0
    tau_one = json.loads(run_cli("tune", one, "--objective", "marglik", "--json", "--dry-run").out)["prior_precision"]
    tau_two = json.loads(run_cli("tune", two, "--objective", "marglik", "--json", "--dry-run").out)["prior_precision"]
    opened = open_posterior(two)
    ll = 2 * float(read_factor_file(two).fit["log_likelihood"])
    best = opened.posterior.with_hyperparameters(prior_precision=tau_two).log_marginal_likelihood(ll)
    for factor in (0.5, 2.0):
        other = opened.posterior.with_hyperparameters(prior_precision=tau_two * factor)
        assert other.log_marginal_likelihood(ll) < best
    assert tau_two != pytest.approx(tau_one)


def test_missing_dataset_names_the_flags_as_fit_does(run_cli, factor_file, digits_checkpoint, tmp_path):
    # tune takes --download and --data-root like fit, and a missing set's message shows both as flags.
    empty = tmp_path / "empty"
    empty.mkdir()
    tuned = run_cli("tune", factor_file, "--objective", "val-nll", "--data", "mnist", "--data-root", empty)
    fitted = run_cli("fit", digits_checkpoint, "--data", "mnist", "--data-root", empty, "-o", tmp_path / "x.h5")
    for r in (tuned, fitted):
        assert r.code == 2 and r.out == "" and r.err.count("\n") == 1, r.err
        assert "dataset 'mnist'" in r.err and "pass --download to fetch it" in r.err
        assert "set --data-root or $UNCERT_DATA" in r.err and "pass download" not in r.err
    # --download is accepted (nothing to fetch for the embedded digits) and the held-out set is used.
    r = run_cli("tune", factor_file, "--objective", "val-nll", "--data", "digits", "--split", "val", "--limit", "64",
                "--download", "--dry-run", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["validation"]["n"] == 64


def test_limit_without_split_is_refused_not_ignored(run_cli, factor_file):
    # --limit counts a whole --split's examples; without one the held-out examples were the val split's
    # 179 whatever --limit said, so the limit is refused, naming what counts them.
    before = factor_file.read_bytes()
    r = run_cli("tune", factor_file, "--limit", "5")
    assert r.code == 2
    assert "--limit 5" in r.err and "--val-size 5" in r.err and "--split" in r.err
    assert factor_file.read_bytes() == before
    doc = json.loads(run_cli("tune", factor_file, "--limit", "5", "--split", "val", "--dry-run", "--json").out)
    assert doc["validation"]["n"] == 5


def test_a_file_that_cannot_be_rewritten_is_refused_before_the_search(run_cli, factor_file, monkeypatch):
    # tune writes the tuned file beside the old one; without room for it the search ran to the end first.
    import uncert_cli.core.atomic as atomic

    before = factor_file.read_bytes()
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 0)
    r = run_cli("tune", factor_file, "--val-size", "16")
    assert r.code == 2 and "not enough space to write" in r.err and "tuning" not in r.err, r.err
    assert factor_file.read_bytes() == before
    assert run_cli("tune", factor_file, "--val-size", "16", "--dry-run", "--quiet").code == 0  # nothing to write

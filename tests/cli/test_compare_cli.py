"""``uncert compare`` through the real entry point, on factor files written by ``uncert fit``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from uncert_cli.checkpoint import ModelMeta, save_model
from uncert_cli.cli.main import main
from uncert_cli.models import MLP
from uncert_cli.storage.opening import open_posterior

LAYER_FILE_KEYS = {"variance_share", "posterior_std_mean", "variance_ratio"}
PAIR_KEYS = {"std_spearman", "top_overlap", "top_k", "kl", "kl_per_weight"}


def _fit(checkpoint: Path, out: Path, *extra: str) -> Path:
    assert main(["fit", str(checkpoint), "--data", "digits", "--limit", "64", "-o", str(out), "--quiet", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_checkpoint) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("compare")
    return {
        "diag": _fit(digits_checkpoint, folder / "diag.h5", "--method", "diag"),
        "kfac": _fit(digits_checkpoint, folder / "kfac.h5", "--method", "kfac"),
        "last": _fit(digits_checkpoint, folder / "last.h5", "--method", "diag", "--subset", "fc2"),
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size)
    ranks[order] = np.arange(x.size, dtype=float)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def test_compare_json_matches_the_posteriors(files, run_cli) -> None:
    r = run_cli("compare", files["diag"], files["kfac"], "--json", "--fraction", "0.2")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert [f["method"] for f in doc["files"]] == ["diag", "kfac"]
    assert doc["criterion"] == "snr" and doc["fraction"] == 0.2 and doc["pngs"] == []
    assert [layer["name"] for layer in doc["layers"]] == ["fc1", "fc2"]
    a = open_posterior(files["diag"], runs_model=False).posterior
    b = open_posterior(files["kfac"], runs_model=False).posterior
    var_a = {n: v.double().numpy().reshape(-1) for n, v in a.marginal_variance().items()}
    var_b = {n: v.double().numpy().reshape(-1) for n, v in b.marginal_variance().items()}
    total_a = sum(v.sum() for v in var_a.values())
    for layer in doc["layers"]:
        names = [f"{layer['name']}.weight", f"{layer['name']}.bias"]
        va = np.concatenate([var_a[n] for n in names])
        vb = np.concatenate([var_b[n] for n in names])
        first, pair = layer["files"][0], layer["versus_first"][0]
        assert set(first) == LAYER_FILE_KEYS and set(pair) == PAIR_KEYS
        assert first["variance_share"] == pytest.approx(va.sum() / total_a, rel=1e-6)
        assert first["posterior_std_mean"] == pytest.approx(np.sqrt(va).mean(), rel=1e-6)
        tau = doc["files"][0]["prior_precision"]
        assert first["variance_ratio"] == pytest.approx((va * tau).mean(), rel=1e-6)
        # same weights, so the means cancel and KL is the variance part alone
        kl = 0.5 * (va / vb - 1 + np.log(vb / va)).sum()
        assert pair["kl"] == pytest.approx(kl, rel=1e-6) and pair["kl"] > 0
        assert pair["kl_per_weight"] == pytest.approx(kl / va.size, rel=1e-6)
        rho = np.corrcoef(_ranks(np.sqrt(va)), _ranks(np.sqrt(vb)))[0, 1]
        assert pair["std_spearman"] == pytest.approx(rho, abs=1e-9)
        weight = a.map_parameters[names[0]].double().numpy().reshape(-1)
        k = round(0.2 * weight.size)
        snr_a = np.abs(weight) / np.sqrt(var_a[names[0]])
        snr_b = np.abs(weight) / np.sqrt(var_b[names[0]])
        shared = set(np.argsort(snr_a, kind="stable")[:k]) & set(np.argsort(snr_b, kind="stable")[:k])
        assert pair["top_k"] == k and pair["top_overlap"] == pytest.approx(len(shared) / k)


def test_a_file_against_its_copy_agrees_perfectly(files, run_cli, tmp_path) -> None:
    copy = tmp_path / "copy.h5"  # a copy is another file (the same file twice is refused, below)
    copy.write_bytes(files["kfac"].read_bytes())
    r = run_cli("compare", files["kfac"], copy, "--json", "--criterion", "variance-ratio")
    assert r.code == 0, r.err
    for layer in json.loads(r.out)["layers"]:
        pair = layer["versus_first"][0]
        assert pair["kl"] == pytest.approx(0.0, abs=1e-9)
        assert pair["std_spearman"] == pytest.approx(1.0) and pair["top_overlap"] == 1.0


def test_three_files_and_a_layer_one_file_leaves_out(files, run_cli, tmp_path) -> None:
    r = run_cli("compare", files["diag"], files["kfac"], files["last"], "--json", "--png", tmp_path / "png")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    fc1, fc2 = doc["layers"]
    assert fc1["files"][2] is None and fc1["versus_first"][1] is None  # the subset fit covers fc2 only
    assert fc2["files"][2]["variance_share"] == pytest.approx(1.0)
    assert fc2["versus_first"][1]["kl"] >= 0
    assert sorted(Path(p).name for p in doc["pngs"]) == ["std_A_vs_B.png", "std_A_vs_C.png"]
    for p in doc["pngs"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_table_names_every_file(files, run_cli) -> None:
    r = run_cli("compare", files["diag"], files["kfac"])
    assert r.code == 0, r.err
    assert "diag.h5" in r.out and "kfac.h5" in r.out and "Spearman" in r.out and "fc2" in r.out


def test_files_of_different_checkpoints_are_refused(files, run_cli, tmp_path) -> None:
    torch.manual_seed(1)
    kwargs = {"in_features": 64, "hidden": [16], "out_features": 10}
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(1, 8, 8),
                     task="classification", num_outputs=10, dataset="digits")
    other = tmp_path / "other.safetensors"
    save_model(MLP(**kwargs), meta, other)
    other_file = _fit(other, tmp_path / "other.h5", "--method", "diag")
    r = run_cli("compare", files["diag"], other_file, "--json")
    assert r.code == 2 and r.out == ""
    assert "other weights" in r.err and "other.h5" in r.err and len(r.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ((), "at least two factor files"),
        (("kfac", "--fraction", "0"), "--fraction must be above 0"),
        (("kfac", "--criterion", "loudest"), "--criterion"),
        (("missing.h5",), "missing.h5"),
    ],
)
def test_bad_input_is_one_line(files, run_cli, extra, needle) -> None:
    extra = tuple(str(files[e]) if e in files else e for e in extra)
    r = run_cli("compare", files["diag"], *extra)
    assert r.code == 2, r.err
    assert needle in r.err and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err


def test_one_file_given_twice_is_refused(files, run_cli, tmp_path) -> None:
    """The same file twice (or through a link) was compared with itself: correlations 1, divergences 0."""
    link = tmp_path / "link.h5"
    link.symlink_to(files["diag"])
    hard = tmp_path / "hard.h5"
    hard.hardlink_to(files["diag"])
    for second, said in ((files["diag"], "given twice"), (link, "the same file as"), (hard, "the same file as")):
        for extra in ((), ("--json",)):
            r = run_cli("compare", files["diag"], second, *extra)
            assert r.code == 2 and r.out == "", (second, r.err)
            assert said in r.err and "different factor files" in r.err and len(r.err.strip().splitlines()) == 1, r.err
    r = run_cli("compare", files["diag"], files["kfac"], link, "--png", tmp_path / "pngs")
    assert r.code == 2 and "the same file as" in r.err and not (tmp_path / "pngs").exists(), r.err

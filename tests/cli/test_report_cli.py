"""``uncert report`` and ``uncert track`` through the real entry point, on real factor files."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from tests.reference.small_posterior import dense_gamma, dense_variances, small, write_small_factor_file
from uncert_cli.checkpoint import ModelMeta, save_model
from uncert_cli.cli.main import main
from uncert_cli.models import MLP

LAYER_KEYS = {
    "name", "params", "posterior_std_mean", "posterior_std_median", "posterior_std_max", "relative_std_median",
    "variance_share", "variance_ratio", "effective_params", "entropy_per_param", "barely_identified_fraction",
}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, digits_checkpoint) -> Path:
    """A KFAC factor file fitted by 'uncert fit' on 200 digits."""
    out = tmp_path_factory.mktemp("fit") / "digits.h5"
    assert main(["fit", str(digits_checkpoint), "--data", "digits", "--limit", "200", "-o", str(out), "--quiet"]) == 0
    return out


def _is_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_report_json_matches_dense_references(tmp_path, run_cli) -> None:
    s = small()
    path = write_small_factor_file(tmp_path / "small.h5", s)
    r = run_cli("report", path, "--json", "--prior-precision", "2.5")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert set(doc) >= {"model", "fit", "prior", "layers", "verdict", "pngs", "summary"}
    assert doc["prior"]["prior_precision"] == 2.5 and doc["prior"]["n_data"] == 50
    assert [layer["name"] for layer in doc["layers"]] == ["fc1", "fc2"]
    var = dense_variances(s, 2.5)
    gamma = dense_gamma(s, 2.5)
    total = sum(v.sum() for v in var.values())
    for layer, names in zip(doc["layers"], [("fc1.weight", "fc1.bias"), ("fc2.weight", "fc2.bias")]):
        assert LAYER_KEYS <= set(layer)
        v = np.concatenate([var[n].reshape(-1) for n in names])
        assert layer["params"] == v.size
        assert layer["variance_share"] == pytest.approx(v.sum() / total, rel=1e-4)
        assert layer["variance_ratio"] == pytest.approx((v * 2.5).mean(), rel=1e-4)
        assert layer["posterior_std_max"] == pytest.approx(np.sqrt(v).max(), rel=1e-4)
        assert layer["effective_params"] == pytest.approx(gamma[layer["name"]], rel=1e-4)
    assert doc["pngs"] == []
    assert "of the posterior variance sits in layer" in doc["verdict"]


def test_report_table_and_pngs(fitted, tmp_path, run_cli) -> None:
    pngs = tmp_path / "figs"
    r = run_cli("report", fitted, "--png", pngs)
    assert r.code == 0, r.err
    assert "Posterior std per layer" in r.out and "Verdict:" in r.out
    names = {p.name for p in pngs.iterdir()}
    assert names == {"log_std_by_layer.png", "sigma_fc1.png", "sigma_fc2.png", "first_layer_inputs.png",
                     "kfac_spectra.png", "snr_hist.png"}
    for png in pngs.iterdir():
        _is_png(png)


def test_report_json_is_only_json_and_follows_the_prior(fitted, run_cli) -> None:
    low = json.loads(run_cli("report", fitted, "--json", "--prior-precision", "0.1").out)
    r = run_cli("report", fitted, "--json", "--prior-precision", "100", "--n-data", "10")
    assert r.code == 0
    high = json.loads(r.out)  # the whole of stdout parses: nothing else was printed there
    assert high["prior"]["n_data"] == 10
    assert high["model"]["parameters"] == high["model"]["covered_params"] == 64 * 16 + 16 + 16 * 10 + 10
    assert high["fit"]["method"] == "kfac" and high["fit"]["n_data"] == 200
    # a strong prior and little data leave the weights at the prior: ratios near 1
    for a, b in zip(low["layers"], high["layers"]):
        assert b["variance_ratio"] > a["variance_ratio"]
        assert b["effective_params"] < a["effective_params"]
        assert 0 <= b["barely_identified_fraction"] <= 1
    assert sum(layer["variance_share"] for layer in high["layers"]) == pytest.approx(1.0)


def test_report_bad_input_is_one_line(tmp_path, run_cli) -> None:
    r = run_cli("report", tmp_path / "missing.h5")
    assert r.code == 2 and "uncert fit" in r.err and "Traceback" not in r.err
    (tmp_path / "file").write_text("x")
    r = run_cli("report", tmp_path / "missing.h5", "--png", tmp_path / "file")
    assert r.code == 2 and "directory" in r.err
    assert f"uncert: error: --png {tmp_path / 'file'} is a file" in r.err  # the library names png, the CLI its flag


def test_track_two_checkpoints(tmp_path, run_cli) -> None:
    kwargs = {"in_features": 64, "hidden": [8], "out_features": 10}
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(1, 8, 8),
                     task="classification", num_outputs=10, dataset="digits")
    for epoch in (10, 2):
        torch.manual_seed(epoch)
        save_model(MLP(**kwargs), meta, tmp_path / f"run_epoch{epoch}.safetensors")
    figs = tmp_path / "figs"
    r = run_cli("track", tmp_path / "run_epoch10.safetensors", tmp_path / "run_epoch2.safetensors",
                "--data", "digits", "--limit", "100", "--png", figs, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["layers"] == ["fc1", "fc2"] and doc["n_data"] == 100
    assert [c["step"] for c in doc["checkpoints"]] == [2, 10]  # numeric order, not the order given
    for point in doc["checkpoints"]:
        assert [layer["name"] for layer in point["layers"]] == ["fc1", "fc2"]
        for layer in point["layers"]:
            assert {"posterior_std_mean", "variance_ratio", "effective_params"} <= set(layer)
            assert 0 < layer["variance_ratio"] <= 1
    _is_png(figs / "track.png")
    r = run_cli("track", tmp_path / "nope.safetensors", "--data", "digits")
    assert r.code == 2 and "no such checkpoint" in r.err


@pytest.mark.parametrize("other", ["input", "width"])
def test_track_refuses_other_architectures_before_fitting(tmp_path, run_cli, other) -> None:
    """A checkpoint with another input shape or other layer widths is refused with one line, exit 2,
    before anything is fitted (it used to fail inside the second fit with an internal error)."""
    kwargs = {"in_features": 64, "hidden": [8], "out_features": 10}
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(1, 8, 8),
                     task="classification", num_outputs=10, dataset="digits")
    save_model(MLP(**kwargs), meta, tmp_path / "run_epoch1.safetensors")
    if other == "input":
        kwargs2 = {**kwargs, "in_features": 784}
        meta2 = ModelMeta(**{**meta.__dict__, "arch_kwargs": kwargs2, "input_shape": (1, 28, 28)})
    else:
        kwargs2 = {**kwargs, "hidden": [16]}
        meta2 = ModelMeta(**{**meta.__dict__, "arch_kwargs": kwargs2})
    save_model(MLP(**kwargs2), meta2, tmp_path / "run_epoch2.safetensors")
    r = run_cli("track", tmp_path / "run_epoch1.safetensors", tmp_path / "run_epoch2.safetensors",
                "--data", "digits", "--limit", "50")
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert r.code == 2 and len(lines) == 1 and "Traceback" not in r.err, r.err
    assert "one architecture" in lines[0] and ("inputs of shape" in lines[0] if other == "input" else "fc1.weight" in lines[0])
    assert "fit run_epoch1" not in r.err  # refused before the first fit's progress bar


def test_report_rows_are_grouped_per_block_with_paths_inside_it() -> None:
    from uncert_cli.render.layer_groups import block_rows

    names = ["bert.embeddings.word_embeddings", "bert.embeddings.LayerNorm",
             "bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.output.dense",
             "bert.encoder.layer.1.attention.self.query", "bert.encoder.layer.1.output.dense", "bert.pooler.dense",
             "classifier"]
    assert block_rows(names) == [
        ("bert.embeddings", "  word_embeddings"), (None, "  LayerNorm"),
        ("bert.encoder.layer.0", "  attention.self.query"), (None, "  output.dense"),
        ("bert.encoder.layer.1", "  attention.self.query"), (None, "  output.dense"),
        (None, "bert.pooler.dense"), (None, "classifier"),
    ]
    flat = ["fc1", "fc2", "features.0", "features.3"]  # nothing to group: names as they are
    assert block_rows(flat) == [(None, n) for n in flat]
    resnet = block_rows(["layer1.0.conv1", "layer1.0.bn1", "layer1.1.conv1", "layer1.1.bn1", "layer2.0.conv1"])
    assert resnet[2] == ("layer1.1", "  conv1") and resnet[4] == (None, "layer2.0.conv1")  # alone: whole


def test_report_is_one_library_call(fitted, run_cli) -> None:
    # What `uncert report --json` prints is workflows.report.report_factor_file's result as render documents it.
    from uncert_cli.render.report import factor_file_report_document, report_title
    from uncert_cli.workflows.report import report_factor_file

    shown = json.loads(run_cli("report", fitted, "--prior-precision", "3", "--json").out)
    report = report_factor_file(fitted, prior_precision=3.0)
    assert report.total_params == sum(p.numel() for p in MLP(64, [16], 10).parameters())
    assert json.loads(json.dumps(factor_file_report_document(report, []))) == shown
    assert report_title(report) == "digits.h5 (kfac, τ=3)"

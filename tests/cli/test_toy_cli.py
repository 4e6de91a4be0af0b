"""``uncert toy``: curves, JSON and PNG on the shipped toy model (small settings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from uncert_cli.cli.main import main

TOY = Path(__file__).resolve().parents[2] / "sample_models" / "toy_regression_mlp.safetensors"


@pytest.mark.skipif(not TOY.exists(), reason="sample toy model missing")
def test_toy_writes_png_and_json(tmp_path, capfd):
    png, js = tmp_path / "toy.png", tmp_path / "toy.json"
    code = main(["toy", str(TOY), "--png", str(png), "--json-out", str(js), "--methods", "diag,full",
                 "--samples", "40", "--no-tune", "--hmc-samples", "5", "--quiet"])
    err = capfd.readouterr().err
    assert code == 0, err
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    doc = json.loads(js.read_text())
    assert [c["label"] for c in doc["curves"]] == ["Diag Laplace", "Full Laplace"]
    assert len(doc["x"]) == len(doc["curves"][0]["mean"]) and doc["noise_std"] == 3.0
    for c in doc["curves"]:
        assert all(math.isfinite(v) for v in c["mean"]) and min(c["std"]) >= 3.0 - 1e-9
    try:
        import pyro  # noqa: F401  (optional extra `hmc`)
    except ImportError:
        assert doc["reference"] is None and "pyro-ppl" in doc["reference_note"]
    else:  # a (short) NUTS chain of the same network: finite curves with the noise floor
        ref = doc["reference"]
        assert ref["label"] == "HMC (NUTS)" and len(ref["mean"]) == len(doc["x"])
        assert all(math.isfinite(v) for v in ref["mean"]) and min(ref["std"]) >= 3.0 - 1e-9


def test_toy_rejects_unknown_methods(tmp_path, capfd):
    code = main(["toy", str(TOY), "--methods", "nope", "--png", str(tmp_path / "t.png")])
    assert code == 2 and "unknown method" in capfd.readouterr().err


def test_default_toy_checkpoint_ships_with_the_package() -> None:
    """`uncert toy` without arguments works from any folder: its default is the packaged copy of
    the sample model (it used to be a path relative to the repository root)."""
    from uncert_cli.cli.toy import DEFAULT_CHECKPOINT

    assert DEFAULT_CHECKPOINT.is_absolute() and DEFAULT_CHECKPOINT.exists()
    assert DEFAULT_CHECKPOINT.read_bytes() == TOY.read_bytes()


def test_toy_is_one_library_call(tmp_path, capfd) -> None:
    # What `uncert toy --json` prints is workflows.toy.toy_from_checkpoint's result as render documents it.
    from uncert_cli.errors import UserError
    from uncert_cli.render.toy import printed_toy_document, toy_document
    from uncert_cli.workflows.toy import toy_from_checkpoint

    png, js = tmp_path / "toy.png", tmp_path / "toy.json"
    settings = dict(predictive="glm", samples=10, tune=False, hmc_samples=5, seed=3)
    code = main(["toy", "--png", str(png), "--json-out", str(js), "--methods", "diag", "--predictive", "glm",
                 "--samples", "10", "--no-tune", "--hmc-samples", "5", "--seed", "3", "--json"])
    shown = json.loads(capfd.readouterr().out)
    assert code == 0
    result = toy_from_checkpoint(methods="diag", **settings)
    assert json.loads(json.dumps(printed_toy_document(toy_document(result, png)))) == shown
    # The library names its parameter; outputs are checked before the fitting.
    with pytest.raises(UserError, match=r"^unknown method\(s\) nope in methods; use "):
        toy_from_checkpoint(methods="diag,nope")
    with pytest.raises(UserError, match="does not exist"):
        toy_from_checkpoint(methods=["diag"], outputs=[tmp_path / "missing" / "toy.png"], **settings)
    code = main(["toy", "--methods", "nope", "--png", str(png)])
    assert code == 2 and "in --methods; use" in capfd.readouterr().err

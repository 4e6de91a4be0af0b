"""Hugging Face model folders (issue 15.1), written locally with ``save_pretrained`` from tiny random models.

A BERT-style text classifier (token ids in, ``SequenceClassifierOutput`` out) and a ViT-style image
classifier go through the real CLI: fit, report, ood, attack, with the network rebuilt from the config the
factor file records. Folders that would run code or analyse random weights are refused.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from uncert_cli.store import read_factor_file
from uncert_cli.checkpoint import weights_fingerprint

transformers = pytest.importorskip("transformers", reason="transformers is an optional extra (pip install -e '.[hf]')")

TEXT_SUBSET = ["--subset", "classifier.*,bert.encoder.*,bert.pooler.*"]


@pytest.fixture
def bert_folder(tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=16, num_labels=3)
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(tmp_path / "bert")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tokens.npz", x_train=rng.integers(1, 40, (48, 10)), y_train=rng.integers(0, 3, 48),
             x_test=rng.integers(1, 40, (40, 10)), y_test=rng.integers(0, 3, 40))
    np.savez(tmp_path / "other.npz", x=rng.integers(30, 40, (24, 10)), y=np.zeros(24, dtype=np.int64))
    return tmp_path / "bert", model


@pytest.fixture
def vit_folder(tmp_path):
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=24, num_labels=10,
                                    initializer_range=1.0)  # wide enough init to predict several classes
    model = transformers.ViTForImageClassification(config)
    model.save_pretrained(tmp_path / "vit")
    return tmp_path / "vit", model


def test_text_classifier_folder_fits_and_every_later_command_rebuilds_it(run_cli, bert_folder, tmp_path):
    folder, model = bert_folder
    factors = tmp_path / "b.h5"
    r = run_cli("fit", folder, "--data", tmp_path / "tokens.npz", "--method", "kfac", *TEXT_SUBSET, "-o", factors,
                "--json")
    assert r.code == 0, r.err
    stored = read_factor_file(factors)
    assert stored.fingerprint == weights_fingerprint(model.eval())
    assert stored.model_meta.arch == "transformers:BertForSequenceClassification"
    assert stored.model_meta.output == "logits" and stored.model_meta.extra["hf_config"]["hidden_size"] == 16
    assert stored.model_meta.num_outputs == 3 and json.loads(r.out)  # --json: transformers printed nothing there
    report = run_cli("report", factors, "--json")
    assert report.code == 0, report.err
    names = {row["name"] for row in json.loads(report.out)["layers"]}
    assert "classifier" in names and "bert.encoder.layer.0.attention.self.query" in names
    assert not any("embeddings" in n for n in names)
    ood = run_cli("ood", factors, "--against", tmp_path / "other.npz", "--no-tune", "--predictive", "map,probit",
                  "--json")
    assert ood.code == 0, ood.err
    doc = json.loads(ood.out)
    with torch.no_grad():  # the rebuilt network answers as the saved one does
        logits = model(torch.as_tensor(np.load(tmp_path / "tokens.npz")["x_test"])).logits
    expected = float((logits.argmax(1) == torch.as_tensor(np.load(tmp_path / "tokens.npz")["y_test"])).float().mean())
    assert doc["in_distribution"]["map"]["accuracy"] == pytest.approx(expected)
    attack = run_cli("attack", factors, "--no-tune")
    assert attack.code == 2 and "token" in attack.err


@pytest.mark.parametrize("method", ["diag", "kfac"])
def test_every_weight_fits_position_embeddings_shared_by_the_batch_included(run_cli, bert_folder, vit_folder,
                                                                             tmp_path, method):
    # BERT looks its position embeddings up once for the whole batch; ViT keeps them (and the class token)
    # as parameters of its embeddings module. Both get exact per-example curvature, nothing is left out.
    for (folder, model), data in ((bert_folder, ["--data", tmp_path / "tokens.npz"]),
                                  (vit_folder, ["--data", "digits", "--limit", "32"])):
        factors = tmp_path / f"{folder.name}.h5"
        r = run_cli("fit", folder, *data, "--method", method, "-o", factors, "--quiet")
        assert r.code == 0, r.err
        covered = {n for b in read_factor_file(factors).curvature.blocks for n in b.param_names}
        assert covered == {n for n, _ in model.named_parameters()}


def test_image_classifier_folder_fit_report_ood_attack(run_cli, vit_folder, tmp_path):
    folder, model = vit_folder
    factors = tmp_path / "v.h5"
    r = run_cli("fit", folder, "--data", "digits", "--limit", "64", "--method", "kfac", "-o", factors, "--quiet")
    assert r.code == 0, r.err
    assert read_factor_file(factors).model_meta.input_shape == (1, 8, 8)
    for args in (["report", factors, "--json"],
                 ["ood", factors, "--against", "digits", "--limit", "32", "--no-tune", "--predictive", "map", "--json"],
                 ["attack", factors, "--limit", "16", "--no-tune", "--steps", "1", "--step-sizes", "0,0.1",
                  "--predictive", "map", "--json"],
                 ["info", factors, "--json"]):
        out = run_cli(*args)
        assert out.code == 0, (args[0], out.err)
        json.loads(out.out)
    assert json.loads(run_cli("info", factors, "--json").out)["model_output"] == "logits"


def test_a_config_naming_its_own_code_is_refused_without_trust_remote_code(run_cli, vit_folder, tmp_path):
    folder, _ = vit_folder
    (folder / "evil.py").write_text(f"open({str(tmp_path / 'RAN')!r}, 'w').close()\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "evil.Evil"}
    (folder / "config.json").write_text(json.dumps(config))
    r = run_cli("fit", folder, "--data", "digits", "--limit", "16", "-o", tmp_path / "v.h5")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "auto_map" in r.err and "--trust-remote-code" in r.err
    assert not (tmp_path / "RAN").exists() and not (tmp_path / "v.h5").exists()


def test_weights_the_folder_lacks_are_refused_not_initialised(run_cli, vit_folder, tmp_path):
    folder, model = vit_folder
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    r = run_cli("fit", folder, "--data", "digits", "--limit", "16", "-o", tmp_path / "v.h5")
    assert r.code == 2 and "classifier" in r.err and "randomly initialised" in r.err


def test_without_transformers_folders_say_how_to_install_and_reports_still_work(run_cli, vit_folder, tmp_path, monkeypatch):
    folder, _ = vit_folder
    factors = tmp_path / "v.h5"
    assert run_cli("fit", folder, "--data", "digits", "--limit", "32", "--method", "diag", "-o", factors).code == 0
    before = json.loads(run_cli("report", factors, "--json").out)["layers"]
    monkeypatch.setitem(sys.modules, "transformers", None)
    r = run_cli("fit", folder, "--data", "digits", "-o", tmp_path / "w.h5")
    assert r.code == 2 and "transformers is not installed" in r.err and "uncert-cli[hf]" in r.err
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "transformers" else object())
    after = run_cli("report", factors, "--json")
    assert after.code == 0, after.err
    assert json.loads(after.out)["layers"] == before

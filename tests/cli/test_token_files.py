"""Token data files (issue 15.5): ``input_ids`` + ``attention_mask`` + ``token_type_ids`` fed as keywords.

A tiny random BERT classifier saved with ``save_pretrained`` runs through the real CLI on ``.npz`` and
HDF5 token files with padding: fit on all weights (position embeddings included), tune, report, ood
against a token OOD set of another length, prune --evaluate and track; attack refuses token inputs.
The answers are checked against the network called with the keywords directly.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from uncert_cli.data import load_dataset
from uncert_cli.store import read_factor_file

transformers = pytest.importorskip("transformers", reason="transformers is an optional extra (pip install -e '.[hf]')")

VOCAB, T = 30, 10


def _tokens(rng: np.random.Generator, n: int, length: int = T) -> dict[str, np.ndarray]:
    lengths = rng.integers(3, length + 1, n)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int64)
    types = np.broadcast_to((np.arange(length) >= length // 2).astype(np.int64), (n, length)).copy()
    return {"input_ids": rng.integers(1, VOCAB, (n, length)) * mask, "attention_mask": mask, "token_type_ids": types}


@pytest.fixture
def bert(tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=16, num_labels=3,
                                     initializer_range=0.5)  # wide enough that the mask changes the answers
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(tmp_path / "bert")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 48), ("test", 40)):
        arrays.update({f"{k}_{split}": v for k, v in _tokens(rng, n).items()})
        arrays[f"labels_{split}"] = rng.integers(0, 3, n)
    np.savez(tmp_path / "tokens.npz", **arrays)
    np.savez(tmp_path / "other.npz", **_tokens(rng, 24, length=12))  # no labels, longer sequences
    return tmp_path / "bert", model.eval()


def _logits(model, path, split):
    z = np.load(path)
    kw = {k: torch.as_tensor(z[f"{k}_{split}"]) for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        return model(**kw).logits, model(kw["input_ids"]).logits, torch.as_tensor(z[f"labels_{split}"])


def test_every_command_feeds_the_token_arrays_as_keywords(run_cli, bert, tmp_path):
    folder, model = bert
    data, factors = tmp_path / "tokens.npz", tmp_path / "b.h5"
    r = run_cli("fit", folder, "--data", data, "--method", "diag", "-o", factors, "--quiet")  # every weight
    assert r.code == 0, r.err
    stored = read_factor_file(factors)
    covered = {n for b in stored.curvature.blocks for n in b.param_names}
    assert covered == {n for n, _ in model.named_parameters()}
    masked, unmasked, y = _logits(model, data, "test")
    assert not torch.allclose(masked, unmasked)
    ood = run_cli("ood", factors, "--against", tmp_path / "other.npz", "--no-tune", "--predictive", "map,probit",
                  "--json")
    assert ood.code == 0, ood.err
    doc = json.loads(ood.out)
    nll = float(torch.nn.functional.cross_entropy(masked, y))
    assert doc["in_distribution"]["map"]["nll"] == pytest.approx(nll, rel=1e-4)
    assert doc["in_distribution"]["map"]["nll"] != pytest.approx(float(torch.nn.functional.cross_entropy(unmasked, y)),
                                                                 rel=1e-4)
    assert set(doc["ood"]) == {str(tmp_path / "other.npz")}
    table = run_cli("report", factors)  # the terminal table: one heading per block, paths inside it
    assert table.code == 0 and "bert.encoder.layer.0 " in table.out and "│   attention.self.query " in table.out
    for args in (["tune", factors, "--objective", "val-nll", "--json"],
                 ["report", factors, "--json"],
                 ["prune", factors, "--evaluate", "--fractions", "0.5", "--json"],
                 ["track", folder, folder, "--data", data, "--limit", "16", "--json"]):
        out = run_cli(*args)
        assert out.code == 0, (args[0], out.err)
        json.loads(out.out)
    attack = run_cli("attack", factors, "--no-tune")
    assert attack.code == 2 and len(attack.err.strip().splitlines()) == 1 and "continuous" in attack.err


def test_kfac_fit_of_every_weight_on_hdf5_token_groups(run_cli, bert, tmp_path):
    folder, model = bert
    z = np.load(tmp_path / "tokens.npz")
    with h5py.File(tmp_path / "tokens.h5", "w") as h5:
        for split in ("train", "test"):
            for key in ("input_ids", "attention_mask", "labels"):
                h5[f"{split}/{key}"] = z[f"{key}_{split}"]
    ds = load_dataset(str(tmp_path / "tokens.h5"), split="test")
    assert ds.input_names == ("input_ids", "attention_mask") and tuple(ds.inputs.shape) == (40, 2, T)
    assert ds.split == "test" and ds.num_classes == 3
    r = run_cli("fit", folder, "--data", tmp_path / "tokens.h5", "--method", "kfac", "-o", tmp_path / "k.h5", "--quiet")
    assert r.code == 0, r.err
    report = run_cli("report", tmp_path / "k.h5", "--json")
    names = {row["name"] for row in json.loads(report.out)["layers"]}
    assert {"bert.embeddings.position_embeddings", "bert.encoder.layer.0.attention.self.query", "classifier"} <= names


@pytest.mark.parametrize("change,words", [
    (lambda a: a.update(attention_mask=a["attention_mask"][:, :5]), ["attention_mask", "same length"]),
    (lambda a: a.update(attention_mask=a["attention_mask"] * 2), ["attention_mask", "0 and 1"]),
    (lambda a: a.pop("labels"), ["no labels", "labels"]),
    (lambda a: a.update(input_ids=a["input_ids"].astype(np.float32)), ["input_ids", "integers"]),
])
def test_bad_token_files_are_one_line_errors(run_cli, bert, tmp_path, change, words):
    folder, _ = bert
    arrays = {**_tokens(np.random.default_rng(1), 16), "labels": np.zeros(16, dtype=np.int64)}
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    r = run_cli("fit", folder, "--data", tmp_path / "bad.npz", "-o", tmp_path / "x.h5", "--quiet")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert all(w in r.err for w in words), r.err
    assert not (tmp_path / "x.h5").exists()


def test_an_ood_set_packing_other_arrays_is_refused_by_name(run_cli, bert, tmp_path):
    folder, _ = bert
    factors = tmp_path / "b.h5"
    assert run_cli("fit", folder, "--data", tmp_path / "tokens.npz", "--subset", "classifier.*", "-o", factors,
                   "--quiet").code == 0
    other = _tokens(np.random.default_rng(2), 8)
    np.savez(tmp_path / "typed.npz", input_ids=other["input_ids"], token_type_ids=other["token_type_ids"])
    r = run_cli("ood", factors, "--against", tmp_path / "typed.npz", "--no-tune", "--predictive", "map")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "token_type_ids" in r.err and "attention_mask" in r.err

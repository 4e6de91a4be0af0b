"""Hugging Face datasets saved with ``save_to_disk`` (issue 15.5): text tokenised by the model folder's tokenizer.

A tiny random BERT classifier and a word-level ``BertTokenizer`` (vocabulary written on the fly) are saved
into one folder with ``save_pretrained``; a ``DatasetDict`` of short texts goes through fit, report and
ood (against a text set without labels), tokenised as the tokenizer itself does. Pre-tokenised datasets
need no tokenizer; a missing tokenizer or package is a one-line error.
"""

from __future__ import annotations

import json
import random
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is an optional extra (pip install -e '.[hf]')")
datasets = pytest.importorskip("datasets", reason="datasets is an optional extra (pip install -e '.[hf]')")

WORDS = "the a movie film good bad great awful plot actor boring fun".split()


def _texts(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) for _ in range(n)]


@pytest.fixture
def folder_and_texts(tmp_path):
    torch.manual_seed(0)
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = transformers.BertTokenizer(str(tmp_path / "vocab.txt"))
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=24, max_position_embeddings=16,
                                     num_labels=3, initializer_range=0.5)
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    rng = random.Random(0)
    splits = {name: datasets.Dataset.from_dict({"text": _texts(rng, n), "label": [rng.randint(0, 2) for _ in range(n)]})
              for name, n in (("train", 40), ("test", 30))}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "reviews"))
    datasets.Dataset.from_dict({"sentence": _texts(rng, 20)}).save_to_disk(str(tmp_path / "other"))
    return tmp_path / "bert", model.eval(), tokenizer, splits


def test_text_is_tokenised_by_the_folders_tokenizer_in_every_command(run_cli, folder_and_texts, tmp_path):
    folder, model, tokenizer, splits = folder_and_texts
    factors = tmp_path / "t.h5"
    r = run_cli("fit", folder, "--data", tmp_path / "reviews", "--method", "diag", "-o", factors, "--quiet")
    assert r.code == 0, r.err
    ood = run_cli("ood", factors, "--against", f"{tmp_path / 'other'}:sentence,label", "--no-tune", "--predictive",
                  "map,probit", "--json")
    assert ood.code == 0, ood.err
    encoded = tokenizer(list(splits["test"]["text"]), padding="longest", return_tensors="pt")
    with torch.no_grad():
        logits = model(**encoded).logits
    nll = float(torch.nn.functional.cross_entropy(logits, torch.tensor(list(splits["test"]["label"]))))
    assert json.loads(ood.out)["in_distribution"]["map"]["nll"] == pytest.approx(nll, rel=1e-4)
    assert run_cli("report", factors, "--json").code == 0


def test_a_pretokenised_dataset_needs_no_tokenizer(run_cli, folder_and_texts, tmp_path):
    folder, _, tokenizer, splits = folder_and_texts
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    encoded = tokenizer(list(splits["train"]["text"]), padding="longest", return_tensors="np")
    columns = {"input_ids": encoded["input_ids"].tolist(), "attention_mask": encoded["attention_mask"].tolist(),
               "label": list(splits["train"]["label"])}
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp_path / "ids"))
    r = run_cli("fit", folder, "--data", tmp_path / "ids", "--subset", "classifier.*", "-o", tmp_path / "i.h5", "--quiet")
    assert r.code == 0, r.err
    text = run_cli("fit", folder, "--data", tmp_path / "reviews", "-o", tmp_path / "x.h5", "--quiet")
    assert text.code == 2 and len(text.err.strip().splitlines()) == 1, text.err
    assert "tokenizer" in text.err and "save_pretrained" in text.err and not (tmp_path / "x.h5").exists()


def test_without_datasets_a_saved_dataset_says_how_to_install_it(run_cli, folder_and_texts, tmp_path, monkeypatch):
    folder, *_ = folder_and_texts
    monkeypatch.setitem(sys.modules, "datasets", None)
    r = run_cli("fit", folder, "--data", tmp_path / "reviews", "-o", tmp_path / "x.h5", "--quiet")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "datasets package is not installed" in r.err and "uncert-cli[hf]" in r.err


def test_a_named_column_that_is_not_there_is_named(run_cli, folder_and_texts, tmp_path):
    folder, *_ = folder_and_texts
    r = run_cli("fit", folder, "--data", f"{tmp_path / 'reviews'}:body,label", "-o", tmp_path / "x.h5", "--quiet")
    assert r.code == 2 and "'body'" in r.err and "text, label" in r.err

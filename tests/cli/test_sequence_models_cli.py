"""Sequence checkpoints of one's own architecture, end to end through the real CLI.

State dicts of LSTM, GRU, MultiheadAttention, TransformerEncoderLayer and Embedding classifiers
(defined in a user file, ``--arch file.py:Class``) on npz data of the shape each model takes:
``fit`` (diag and kfac), then ``ood`` with its default predictives and ``attack`` where the inputs
are continuous.  Token ids stay integers all the way to the model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from uncert_cli.data.arrays import dataset_from_arrays

MODELS = '''
import torch
from torch import nn


class Recurrent(nn.Module):
    def __init__(self, cell="lstm", features=5, hidden=6, classes=3):
        super().__init__()
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell](features, hidden, num_layers=2, batch_first=True,
                                                          bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class Attention(nn.Module):
    def __init__(self, dim=8, classes=3):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        y, _ = self.attn(x, x, x)
        return self.head(y.mean(1))


class Encoder(nn.Module):
    def __init__(self, dim=8, classes=3):
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(dim, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1))


class Bag(nn.Module):
    def __init__(self, vocab=20, dim=6, classes=3):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids):
        return self.head(self.embedding(ids).mean(1))
'''

CASES = {  # name: (class, --arch-kwargs, data file, OOD file)
    "lstm": ("Recurrent", [], "seq5.npz", "noise5.npz"),
    "gru": ("Recurrent", ["--arch-kwargs", "cell=gru"], "seq5.npz", "noise5.npz"),
    "attention": ("Attention", [], "seq8.npz", "noise8.npz"),
    "encoder": ("Encoder", [], "seq8.npz", "noise8.npz"),
    "embedding": ("Bag", [], "ids.npz", "ids_ood.npz"),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    import importlib.util

    folder = tmp_path_factory.mktemp("sequences")
    (folder / "seqnets.py").write_text(MODELS)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    np.savez(folder / "seq5.npz", x=rng.normal(size=(120, 7, 5)).astype(np.float32), y=labels)
    np.savez(folder / "seq8.npz", x=rng.normal(size=(120, 7, 8)).astype(np.float32), y=labels)
    np.savez(folder / "ids.npz", x=rng.integers(0, 20, (120, 7)), y=labels)
    np.savez(folder / "noise5.npz", x=3 * rng.normal(size=(40, 7, 5)).astype(np.float32), y=np.zeros(40, int))
    np.savez(folder / "noise8.npz", x=3 * rng.normal(size=(40, 7, 8)).astype(np.float32), y=np.zeros(40, int))
    np.savez(folder / "ids_ood.npz", x=rng.integers(0, 20, (40, 7)), y=np.zeros(40, int))
    spec = importlib.util.spec_from_file_location("seqnets_for_tests", folder / "seqnets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    for name, (cls, kwargs, _, _) in CASES.items():
        extra = {"cell": "gru"} if kwargs else {}
        torch.save(getattr(module, cls)(**extra).state_dict(), folder / f"{name}.pt")
    return folder


def _fit(run_cli, folder, name, method):
    cls, kwargs, data, _ = CASES[name]
    out = folder / f"{name}.{method}.h5"
    r = run_cli("fit", folder / f"{name}.pt", "--arch", f"{folder / 'seqnets.py'}:{cls}", *kwargs,
                "--data", folder / data, "--limit", "64", "--method", method, "-o", out, "--json")
    assert r.code == 0, r.err
    return out, json.loads(r.out)


@pytest.mark.parametrize("method", ["diag", "kfac"])
@pytest.mark.parametrize("name", list(CASES))
def test_fit_then_ood_with_default_predictives(run_cli, workspace, monkeypatch, name, method):
    monkeypatch.setenv("UNCERT_TRUST_ARCH", "1")  # the user's own class, named by the file they fitted
    factors, fit = _fit(run_cli, workspace, name, method)
    covered = {layer["module"] for layer in fit["layers"]}
    assert "head" in covered and len(covered) >= 2  # the sequence module has a block of its own
    _, _, data, ood_set = CASES[name]
    r = run_cli("ood", factors, "--data", workspace / data, "--against", workspace / ood_set, "--limit", "40",
                "--val-size", "30", "--tune-samples", "3", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["predictives"][0] == "map" and len(doc["predictives"]) == 2
    for kind in doc["predictives"]:
        assert 0.0 <= doc["ood"][str(workspace / ood_set)][kind]["auroc_entropy"] <= 1.0
        assert np.isfinite(doc["in_distribution"][kind]["nll"])


@pytest.mark.parametrize("name", ["lstm", "attention"])
def test_attack_through_sampled_and_linearised_predictives(run_cli, workspace, monkeypatch, name):
    monkeypatch.delenv("UNCERT_TRUST_ARCH", raising=False)
    factors, _ = _fit(run_cli, workspace, name, "kfac")
    arch = f"{workspace / 'seqnets.py'}:{CASES[name][0]}"  # the flag is the consent (kwargs as recorded at fit)
    r = run_cli("attack", factors, "--arch", arch, "--data", workspace / CASES[name][2], "--predictive", "map,glm,mc", "--limit", "20",
                "--val-size", "30", "--tune-samples", "3", "--samples", "4", "--mode", "untargeted", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert set(doc["untargeted"]) == {"map", "glm", "mc"}


@pytest.mark.parametrize("name", ["lstm", "attention"])
def test_report_without_the_class_equals_report_with_it(run_cli, workspace, monkeypatch, name):
    """Recurrent and attention weights (weight_ih_l0, in_proj_weight, ...) laid out without their class
    give the report the class gives, layer kinds included."""
    monkeypatch.delenv("UNCERT_TRUST_ARCH", raising=False)
    factors, _ = _fit(run_cli, workspace, name, "diag")
    alone = run_cli("report", factors, "--json")
    monkeypatch.setenv("UNCERT_TRUST_ARCH", "1")
    with_class = run_cli("report", factors, "--json")
    assert alone.code == with_class.code == 0, alone.err
    assert alone.out == with_class.out
    kinds = {layer["kind"] for layer in json.loads(alone.out)["layers"]}
    assert kinds & {"lstm", "multiheadattention", "transformerencoderlayer"} and "unknown" not in kinds, kinds


def test_attack_refuses_token_ids(run_cli, workspace, monkeypatch):
    monkeypatch.setenv("UNCERT_TRUST_ARCH", "1")
    factors, _ = _fit(run_cli, workspace, "embedding", "diag")
    r = run_cli("attack", factors, "--data", workspace / "ids.npz", "--limit", "20")
    assert r.code == 2 and "token ids" in r.err and "Traceback" not in r.err


def test_input_shape_is_inferred_and_recorded(run_cli, workspace):
    import h5py

    factors, _ = _fit(run_cli, workspace, "lstm", "diag")
    with h5py.File(factors) as f:
        assert json.loads(f["model"].attrs["meta"])["input_shape"] == [7, 5]  # no image channel axis


def test_input_shape_option_overrides(run_cli, workspace):
    r = run_cli("fit", workspace / "lstm.pt", "--arch", f"{workspace / 'seqnets.py'}:Recurrent", "--data",
                workspace / "seq5.npz", "--limit", "16", "--input-shape", "7,5", "-o", workspace / "shaped.h5", "-q")
    assert r.code == 0, r.err
    r = run_cli("fit", workspace / "lstm.pt", "--arch", f"{workspace / 'seqnets.py'}:Recurrent", "--data",
                workspace / "seq5.npz", "--limit", "16", "--input-shape", "7,x", "-o", workspace / "bad.h5")
    assert r.code == 2 and "--input-shape" in r.err and not (workspace / "bad.h5").exists()


def test_integer_arrays_stay_token_ids():
    ds = dataset_from_arrays("ids", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int32), np.array([0, 1]))
    assert ds.inputs.dtype == torch.int64 and ds.sample_shape == (3,)
    pixels = dataset_from_arrays("pixels", np.zeros((2, 4, 4), dtype=np.uint8), np.array([0, 1]))
    assert pixels.inputs.dtype == torch.uint8 and pixels.sample_shape == (1, 4, 4)

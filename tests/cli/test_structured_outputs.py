"""Networks whose forward returns a dict, tuple, namedtuple or dataclass (issue 15.4), through the real CLI.

The classes live in a user file (``heads.py``, written per test): each returns the same logits inside a
different structure, next to a second tensor (the features) that must never be taken by mistake.
``fit`` records which part it analysed in the factor file's model metadata; every later command reads
it from there and takes the same part.
"""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest
import torch

from tests.reference.user_files import import_user_file
from uncert_cli.checkpoint.outputs import check_output_choice, pick_output
from uncert_cli.errors import UserError

USER_FILE = '''
import collections
import dataclasses

import torch
from torch import nn


class Base(nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        self.body = nn.Linear(64, hidden)
        self.head = nn.Linear(hidden, 10)

    def parts(self, x):
        features = torch.tanh(self.body(x.flatten(1)))
        return features, self.head(features)


class DictNet(Base):
    def forward(self, x):
        features, logits = self.parts(x)
        return {"features": features, "logits": logits}


class TupleNet(Base):
    def forward(self, x):
        features, logits = self.parts(x)
        return features, logits


Pair = collections.namedtuple("Pair", ["features", "scores"])


class NamedNet(Base):
    def forward(self, x):
        return Pair(*self.parts(x))


@dataclasses.dataclass
class Output:
    loss: object = None
    logits: object = None
    hidden: object = None


class DataclassNet(Base):
    def forward(self, x):
        features, logits = self.parts(x)
        return Output(logits=logits, hidden=features)


class LikeModelOutput(collections.OrderedDict):
    """What Hugging Face's ModelOutput is: an ordered dict holding only the entries that are set."""

    def __init__(self, **entries):
        super().__init__((k, v) for k, v in entries.items() if v is not None)


class ModelOutputNet(Base):
    def forward(self, x):
        features, logits = self.parts(x)
        return LikeModelOutput(loss=None, hidden_states=features, logits=logits)


class PlainNet(Base):
    def forward(self, x):
        return self.parts(x)[1]


class AuxNet(Base):
    """(logits, aux): an auxiliary head of its own beside the logits (its weights in aux.pt)."""

    def __init__(self, hidden=16):
        super().__init__(hidden)
        self.aux = nn.Linear(hidden, 3)

    def forward(self, x):
        features, logits = self.parts(x)
        return logits, self.aux(features)


class PairLinear(nn.Linear):
    """A Linear that also reports its input's squared norm, first."""

    def forward(self, x):
        return x.square().sum(-1, keepdim=True), super().forward(x)


class PairHeadNet(Base):
    def __init__(self, hidden=16):
        super().__init__(hidden)
        self.head = PairLinear(hidden, 10)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x.flatten(1))))[1]
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "heads.py").write_text(USER_FILE)
    heads = import_user_file(tmp_path, "heads")
    torch.manual_seed(0)
    torch.save(heads.Base().state_dict(), tmp_path / "model.pt")  # every class holds the same weights
    with_aux = heads.AuxNet()  # ... and AuxNet's aux.pt those and its auxiliary head's
    with_aux.load_state_dict(torch.load(tmp_path / "model.pt"), strict=False)
    torch.save(with_aux.state_dict(), tmp_path / "aux.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x_train=rng.random((64, 1, 8, 8), dtype=np.float32),
             y_train=rng.integers(0, 10, 64), x_test=rng.random((48, 1, 8, 8), dtype=np.float32),
             y_test=rng.integers(0, 10, 48))
    np.savez(tmp_path / "noise.npz", x=rng.normal(size=(16, 1, 8, 8)).astype(np.float32), y=np.zeros(16, dtype=np.int64))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("uncert_user_arch_")]:
        del sys.modules[name]


def _recorded_output(path):
    with h5py.File(path) as f:
        return json.loads(f["model"].attrs["meta"]).get("output", "absent")


def _pipeline(run_cli, cls: str, *fit_extra: str, checkpoint: str = "model.pt") -> dict:
    arch = ["--arch", f"heads.py:{cls}"]
    r = run_cli("fit", checkpoint, *arch, "--data", "train.npz", "--method", "kfac", "-o", "f.h5", "--json", *fit_extra)
    assert r.code == 0, r.err
    results = {"fit": json.loads(r.out)}
    steps = {
        "report": ["report", "f.h5", "--json"],
        "ood": ["ood", "f.h5", *arch, "--against", "noise.npz", "--no-tune", "--predictive", "map,probit", "--json"],
        "attack": ["attack", "f.h5", *arch, "--no-tune", "--steps", "1", "--step-sizes", "0,0.1", "--samples", "2",
                   "--predictive", "map", "--json"],
    }
    for name, args in steps.items():
        r = run_cli(*args)
        assert r.code == 0, (name, r.err)
        results[name] = json.loads(r.out)
    return results


@pytest.mark.parametrize("cls, recorded", [("DictNet", "logits"), ("TupleNet", 0), ("DataclassNet", "logits"),
                                           ("ModelOutputNet", "logits")])
def test_fit_report_ood_attack_on_structured_outputs_equal_the_plain_network(run_cli, project, cls, recorded):
    plain = _pipeline(run_cli, "PlainNet")
    assert _recorded_output(project / "f.h5") == "absent"  # a tensor model's file keeps the old layout
    # TupleNet: the automatic rule takes the first tensor, the features; the user says which entry.
    structured = _pipeline(run_cli, cls, *(["--model-output", "1"] if cls == "TupleNet" else []))
    assert _recorded_output(project / "f.h5") == (1 if cls == "TupleNet" else recorded)
    assert structured["report"]["layers"] == plain["report"]["layers"]
    assert structured["ood"]["in_distribution"] == plain["ood"]["in_distribution"]
    assert structured["ood"]["ood"] == plain["ood"]["ood"]
    assert structured["attack"]["untargeted"] == plain["attack"]["untargeted"]


def test_the_automatic_choice_is_recorded_and_reused(run_cli, project):
    r = run_cli("fit", "model.pt", "--arch", "heads.py:TupleNet", "--data", "train.npz", "--method", "diag",
                "-o", "f.h5", "--quiet")
    assert r.code == 0, r.err
    assert _recorded_output(project / "f.h5") == 0  # the first tensor: what the rule takes, written down
    r = run_cli("ood", "f.h5", "--arch", "heads.py:TupleNet", "--against", "noise.npz", "--no-tune", "--predictive",
                "map", "--json")
    assert r.code == 0, r.err
    r = run_cli("fit", "model.pt", "--arch", "heads.py:NamedNet", "--data", "train.npz", "--method", "diag",
                "-o", "g.h5", "--quiet")
    assert r.code == 0, r.err
    assert _recorded_output(project / "g.h5") == "features"  # namedtuple entries are named


def test_a_name_that_is_not_there_is_one_line_naming_the_entries(run_cli, project):
    r = run_cli("fit", "model.pt", "--arch", "heads.py:DictNet", "--data", "train.npz", "--model-output", "scores",
                "-o", "f.h5")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "features, logits" in r.err and "'scores'" in r.err and "--model-output" in r.err
    assert not (project / "f.h5").exists()
    r = run_cli("fit", "model.pt", "--arch", "heads.py:TupleNet", "--data", "train.npz", "--model-output", "2",
                "-o", "f.h5")
    assert r.code == 2 and "--model-output 2 is out of range" in r.err and "2 entries" in r.err
    r = run_cli("fit", "model.pt", "--arch", "heads.py:DictNet", "--data", "train.npz", "--model-output", "a.b",
                "-o", "f.h5")
    assert r.code == 2 and "--model-output" in r.err and "'a.b'" in r.err


def test_pick_output_rules():
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    assert pick_output({"loss": None, "hidden": a, "logits": b}, None)[1] == "logits"
    assert pick_output({"loss": None, "hidden": a, "logits": b}, 0) == (a, 0)  # unset entries do not count
    assert pick_output((None, a, b), 1) == (a, 1)  # tuple positions all count
    assert pick_output([1.0, a], None) == (a, 1)
    with pytest.raises(UserError, match="none of them a tensor"):
        pick_output({"n": 3}, None)
    with pytest.raises(UserError, match="single tensor"):
        pick_output(a, "logits")
    for bad in (True, -1, "x.y", "a" * 65, 1.5):
        with pytest.raises(UserError):
            check_output_choice(bad)


def test_a_file_cannot_name_an_output_that_is_not_a_plain_name(tmp_path):
    from uncert_cli.checkpoint import ModelMeta

    with pytest.raises(UserError, match="output"):
        ModelMeta.from_dict({"output": "__class__.__init__.__globals__"})
    assert ModelMeta.from_dict({"output": 2}).output == 2


def test_an_auxiliary_head_beside_the_logits_changes_no_number(run_cli, project):
    # (logits, aux): the logits are analysed; the aux head, which they do not depend on, gets zero curvature,
    # and the body's and head's factors, the predictives and the attack are those of the network without it.
    plain = _pipeline(run_cli, "PlainNet")
    with_aux = _pipeline(run_cli, "AuxNet", checkpoint="aux.pt")
    layers = {layer["module"]: layer for layer in with_aux["fit"]["layers"]}
    assert set(layers) == {"body", "head", "aux"}
    for name in ("ood", "attack"):
        del plain[name]["factors"], with_aux[name]["factors"]
    assert with_aux["ood"]["in_distribution"] == plain["ood"]["in_distribution"]
    assert with_aux["ood"]["ood"] == plain["ood"]["ood"]
    assert with_aux["attack"]["untargeted"] == plain["attack"]["untargeted"]


def test_a_layer_returning_a_tuple_is_refused_by_name_and_left_out_with_subset(run_cli, project):
    # Its factors would be built from its first entry, read as the layer's output: wrong numbers at fit and
    # an internal error in ood.
    arch = ("--arch", "heads.py:PairHeadNet")
    for method in ("kfac", "diag"):
        r = run_cli("fit", "model.pt", *arch, "--data", "train.npz", "--method", method, "-o", "f.h5")
        assert r.code == 2 and r.out == "" and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
        assert "module 'head' (PairLinear, an nn.Linear) returns a tuple, not one tensor" in r.err
        assert "leave it out of the fit with --subset" in r.err and not (project / "f.h5").exists()
    r = run_cli("fit", "model.pt", *arch, "--data", "train.npz", "--subset", "body", "-o", "f.h5", "--quiet")
    assert r.code == 0, r.err
    r = run_cli("ood", "f.h5", *arch, "--against", "noise.npz", "--no-tune", "--predictive", "probit", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["in_distribution"]["probit"]["n"] == 48


def test_the_output_covariance_counts_the_entries_of_tuple_results():
    from torch import nn

    from uncert_cli.curvature.subset import select_units
    from uncert_cli.posterior.output_covariance import output_sizes

    class Pair(nn.Linear):
        def forward(self, x):
            y = super().forward(x)
            return y, y.square()  # both entries carry the backward vectors

    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), Pair(5, 3))
    model.register_forward_hook(lambda m, args, out: out[0])
    assert output_sizes(model, select_units(model, "all"), torch.randn(4, 6)).unit_outputs == 5 + 3 + 3

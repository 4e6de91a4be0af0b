"""Issue 20 through the real CLI: tied weights, frozen parameters and pickled models end in a
factor file every later command accepts (or a refusal at fit time that says what to do)."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.reference.user_files import import_user_file
from uncert_cli.checkpoint import load_model
from uncert_cli.checkpoint.pickled import record_pickled_arch

MODEL_CODE = '''
import torch
from torch import nn


class Tied(nn.Module):
    """Two Linear layers share one weight; fc1 can be frozen."""

    def __init__(self, freeze_first: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.tied = nn.Linear(16, 16)
        self.tied2 = nn.Linear(16, 16)
        self.tied2.weight = self.tied.weight
        self.out = nn.Linear(16, 10)
        if freeze_first:
            self.fc1.requires_grad_(False)

    def forward(self, x):
        h = torch.tanh(self.fc1(x.flatten(1)))
        return self.out(torch.tanh(self.tied2(torch.tanh(self.tied(h)))))


class Wide(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(64, width)
        self.out = nn.Linear(width, 10)

    def forward(self, x):
        return self.out(torch.relu(self.fc(x.flatten(1))))
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's model file in the working directory under a fresh module name, imported once to
    save pickles and then forgotten, as if the pickle came from another process."""
    name = f"usernet_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(MODEL_CODE)
    monkeypatch.chdir(tmp_path)
    module = import_user_file(tmp_path, name, forget=False)
    yield name, module
    sys.modules.pop(name, None)


def _noise_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, size=(64, 1, 8, 8)).astype(np.uint8), y=np.zeros(64, np.int64))
    return path


def test_tied_weights_are_one_block_counted_once_and_every_command_accepts_the_file(
    run_cli, tmp_path, user_module, monkeypatch
) -> None:
    name, module = user_module
    torch.manual_seed(0)
    model = module.Tied()
    torch.save(model.state_dict(), tmp_path / "tied.pt")
    total = sum(p.numel() for p in model.parameters())
    arch = f"{name}.py:Tied"

    r = run_cli("info", tmp_path / "tied.pt", "--arch", arch, "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["parameters"] == total
    assert {layer["name"]: layer["tied_block"] for layer in info["layers"]}["tied2"] == "tied+tied2"

    for method in ("kfac", "diag"):
        out = tmp_path / f"tied_{method}.h5"
        r = run_cli("fit", tmp_path / "tied.pt", "--arch", arch, "--data", "digits", "--limit", "64",
                    "--method", method, "-o", out, "--json")
        assert r.code == 0, r.err
        fit = json.loads(r.out)
        assert fit["parameters"] == total
        blocks = {layer["module"]: layer for layer in fit["layers"]}
        assert blocks["tied+tied2"]["param_names"] == ["tied.weight", "tied.bias", "tied2.bias"]
        assert "tied" not in blocks and "tied2" not in blocks
        assert "share parameters" in r.err

    monkeypatch.setenv("UNCERT_TRUST_ARCH", "1")
    factors = tmp_path / "tied_kfac.h5"
    r = run_cli("report", factors, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["model"]["covered_params"] == total
    r = run_cli("info", factors, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["parameters"] == total
    against = _noise_npz(tmp_path / "noise.npz")
    r = run_cli("ood", factors, "--against", against, "--limit", "64", "--val-size", "16", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["in_distribution"]


def test_frozen_parameters_get_no_posterior_unless_included(run_cli, tmp_path, user_module, monkeypatch) -> None:
    name, module = user_module
    torch.manual_seed(0)
    model = module.Tied(freeze_first=True)
    torch.save(model, tmp_path / "frozen.pt")  # a pickle keeps requires_grad=False
    frozen = model.fc1.weight.numel() + model.fc1.bias.numel()
    total = sum(p.numel() for p in model.parameters())

    r = run_cli("fit", tmp_path / "frozen.pt", "--trust-pickle", "--data", "digits", "--limit", "64",
                "-o", tmp_path / "f.h5", "--json")
    assert r.code == 0, r.err
    fit = json.loads(r.out)
    assert fit["parameters"] == total - frozen
    assert fit["frozen_parameters"] == ["fc1.weight", "fc1.bias"] and fit["include_frozen"] is False
    assert "frozen parameters" in r.err and "--include-frozen" in r.err
    with h5py.File(tmp_path / "f.h5") as f:
        assert json.loads(f["fit"].attrs["frozen_parameters"]) == ["fc1.weight", "fc1.bias"]

    r = run_cli("fit", tmp_path / "frozen.pt", "--trust-pickle", "--data", "digits", "--limit", "64",
                "-o", tmp_path / "all.h5", "--json", "--include-frozen")
    assert r.code == 0, r.err
    assert json.loads(r.out)["parameters"] == total

    monkeypatch.setenv("UNCERT_TRUST_ARCH", "1")
    r = run_cli("report", tmp_path / "f.h5", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert "fc1" not in [layer["name"] for layer in doc["layers"]]
    assert doc["fit"]["frozen_parameters"] == ["fc1.weight", "fc1.bias"]
    assert doc["model"]["covered_params"] == total - frozen


def test_pickled_model_from_the_working_folder_records_its_class(run_cli, tmp_path, user_module, monkeypatch) -> None:
    name, module = user_module
    torch.manual_seed(0)
    torch.save(module.Tied(), tmp_path / "net.pt")
    r = run_cli("fit", tmp_path / "net.pt", "--trust-pickle", "--data", "digits", "--limit", "64",
                "-o", tmp_path / "net.h5", "--json")
    assert r.code == 0, r.err
    assert f"--arch {name}:Tied" in " ".join(r.err.split())
    # the library's note names the parameter; only the CLI above spells it as the flag
    _, note = record_pickled_arch(load_model(tmp_path / "net.pt", trust_pickle=True))
    assert f"pass arch {name}:Tied" in str(note) and "--" not in str(note)
    with h5py.File(tmp_path / "net.h5") as f:
        assert f"{name}:Tied" in json.dumps(dict(f["model"].attrs).__repr__())
    monkeypatch.setenv("UNCERT_TRUST_ARCH", "1")
    r = run_cli("report", tmp_path / "net.h5", "--json")
    assert r.code == 0, r.err


def test_pickled_model_that_cannot_be_rebuilt_is_refused_at_fit_time(run_cli, tmp_path, user_module) -> None:
    name, module = user_module
    torch.save(module.Wide(8), tmp_path / "wide.pt")
    out = tmp_path / "wide.h5"
    r = run_cli("fit", tmp_path / "wide.pt", "--trust-pickle", "--data", "digits", "--limit", "64", "-o", out)
    assert r.code == 2
    assert "--arch" in r.err and "width" in r.err and "Traceback" not in r.err
    assert not out.exists()
    r = run_cli("fit", tmp_path / "wide.pt", "--trust-pickle", "--arch", f"{name}:Wide", "--arch-kwargs", "width=8",
                "--data", "digits", "--limit", "64", "-o", out, "-q")
    assert r.code == 0, r.err
    assert out.exists()

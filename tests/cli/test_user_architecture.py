"""A network whose class lives in the user's own file: the README's "Other checkpoints" flow with flags only.

The class (a conv + BatchNorm + linear net in ``mynet.py`` written to the test's folder) creates a marker
file whenever its module is imported, so the tests see exactly which commands import it: ``fit`` and the
commands that run the network (given ``--arch``), never ``report``, ``tune --objective marglik`` or
``prune -o``, which answer from the stored factors and weights alone.
"""

from __future__ import annotations

import json
import sys

import h5py
import numpy as np
import pytest
import torch

from tests.reference.user_files import import_user_file
from uncert_cli.checkpoint import weights_fingerprint
from uncert_cli.store import read_factor_file

USER_FILE = '''
import pathlib

import torch
from torch import nn

pathlib.Path(__file__).with_name("IMPORTED").touch()


class Net(nn.Module):
    def __init__(self, width=4, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width * 64, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class Other(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))
'''
ARCH = ["--arch", "mynet.py:Net", "--arch-kwargs", "width=4"]


def _forget_user_modules() -> None:
    """Drop imported user files, so that a later import would run the file (and touch the marker) again."""
    for name in [n for n in sys.modules if n.startswith("uncert_user_arch_")]:
        del sys.modules[name]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder as a user has it: mynet.py, two checkpoints of a run, train.npz with splits, noise.npz."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("UNCERT_TRUST_ARCH", raising=False)
    (tmp_path / "mynet.py").write_text(USER_FILE)
    mynet = import_user_file(tmp_path, "mynet")  # the user's training script, in effect
    torch.manual_seed(0)
    model = mynet.Net(width=4)
    model.train()
    with torch.no_grad():  # a training step's worth of BatchNorm statistics, so the buffers are not defaults
        model(torch.rand(16, 1, 8, 8))
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.save(model.state_dict(), tmp_path / "epoch1.pt")
    with torch.no_grad():
        model.fc.weight.mul_(1.5)
    torch.save(model.state_dict(), tmp_path / "epoch2.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x_train=rng.random((64, 1, 8, 8), dtype=np.float32),
             y_train=rng.integers(0, 10, 64), x_test=rng.random((64, 1, 8, 8), dtype=np.float32),
             y_test=rng.integers(0, 10, 64))
    np.savez(tmp_path / "noise.npz", x=rng.normal(size=(32, 1, 8, 8)).astype(np.float32), y=np.zeros(32, dtype=np.int64))
    (tmp_path / "IMPORTED").unlink()
    _forget_user_modules()
    yield tmp_path
    _forget_user_modules()


def _fit(run_cli, folder, *extra: str):
    r = run_cli("fit", "model.pt", *ARCH, "--data", "train.npz", "--normalize", "0.5,0.25", "-o", "f.h5", "--quiet",
                *extra)
    assert r.code == 0, r.err
    (folder / "IMPORTED").unlink()  # fit imported it: the user named it
    _forget_user_modules()


def test_the_documented_flow_runs_with_flags_only(run_cli, project):
    _fit(run_cli, project)
    steps = [
        ["report", "f.h5", "--json"],
        ["tune", "f.h5", *ARCH, "--val-size", "32", "--samples", "4", "--json"],
        ["ood", "f.h5", *ARCH, "--against", "noise.npz", "--limit", "16", "--val-size", "16", "--samples", "4", "--json"],
        ["prune", "f.h5", "--fraction", "0.5", "-o", "pruned.safetensors", "--json"],
        ["prune", "f.h5", "--evaluate", *ARCH, "--fractions", "0.5", "--json"],
        ["attack", "f.h5", *ARCH, "--limit", "8", "--val-size", "16", "--steps", "2", "--step-sizes", "0,0.1",
         "--samples", "2", "--json"],
        ["track", "epoch1.pt", "epoch2.pt", *ARCH, "--data", "train.npz", "--limit", "32", "--method", "diag", "--json"],
    ]
    for args in steps:
        r = run_cli(*args)
        assert r.code == 0, (args[0], r.err)
        json.loads(r.out)  # --json: nothing but the document on stdout
    assert json.loads(run_cli("report", "f.h5", "--json").out)["model"]["arch"] == "mynet.py:Net"
    tuned = read_factor_file(project / "f.h5")
    assert tuned.tuning is not None and tuned.tuning["objective"] == "widest"
    # the weights stayed the checkpoint's own (prune -o wrote a new file, tune only the hyperparameters)
    assert tuned.fingerprint == weights_fingerprint(torch.load(project / "model.pt", weights_only=True))


def test_commands_that_need_no_code_never_import_the_users_file(run_cli, project):
    _fit(run_cli, project)
    marker = project / "IMPORTED"
    before = (project / "f.h5").read_bytes()
    outputs = {}
    for args in (["report", "f.h5", "--json"], ["tune", "f.h5", "--objective", "marglik", "--dry-run", "--json"],
                 ["prune", "f.h5", "--fraction", "0.3", "-o", "pruned.safetensors", "--json"],
                 ["prune", "f.h5", "--fraction", "0.3", "--json"]):
        r = run_cli(*args)
        assert r.code == 0, (args, r.err)
        assert not marker.exists(), f"{args[0]} imported the user's file"
        outputs[args[0]] = json.loads(r.out)
    note = " ".join(run_cli("tune", "f.h5", "--objective", "marglik", "--dry-run").err.split())
    assert "held-out NLL was not checked" in note and "when you name it with --arch" in note  # the library says arch
    assert (project / "f.h5").read_bytes() == before
    assert outputs["tune"]["prior_precision"] > 0 and outputs["tune"]["validation"] is None
    # The pruned checkpoint is weights: as many zeros as the selection pruned, the buffers as they were.
    from safetensors.torch import load_file

    pruned = load_file(project / "pruned.safetensors")
    original = torch.load(project / "model.pt", weights_only=True)
    assert sorted(pruned) == sorted(original)
    zeros = sum(int((pruned[k] == 0).sum()) - int((original[k] == 0).sum()) for k in original)
    assert zeros == outputs["prune"]["selection"]["pruned"] > 0
    assert pruned["bn.num_batches_tracked"].shape == () and torch.equal(pruned["bn.running_var"], original["bn.running_var"])
    # Running the network is the one thing that needs the class: --arch is the consent.
    assert run_cli("ood", "f.h5", "--limit", "8", "--no-tune").code == 2
    assert not marker.exists()
    r = run_cli("ood", "f.h5", "--arch", "mynet.py:Net", "--limit", "8", "--no-tune", "--json")  # kwargs as at fit
    assert r.code == 0, r.err
    assert marker.exists()


@pytest.mark.parametrize("command", [
    ["ood", "f.h5", "--limit", "8", "--no-tune"],
    ["attack", "f.h5", "--limit", "8", "--no-tune"],
    ["tune", "f.h5"],
    ["tune", "f.h5", "--objective", "val-nll"],
    ["prune", "f.h5", "--evaluate"],
])
def test_running_the_network_without_arch_is_refused_naming_arch(run_cli, project, command):
    _fit(run_cli, project)
    r = run_cli(*command)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "--arch" in r.err and "UNCERT_TRUST_ARCH=1" in r.err and "mynet.py:Net" in r.err
    assert not (project / "IMPORTED").exists()


@pytest.mark.parametrize("arch", [["--arch", "mynet.py:Other"], ["--arch", "mynet.py:Net", "--arch-kwargs", "width=3"],
                                  ["--arch", "torchvision:resnet18"]])
def test_an_architecture_that_does_not_match_the_weights_is_refused(run_cli, project, arch):
    _fit(run_cli, project)
    r = run_cli("ood", "f.h5", *arch, "--limit", "8", "--no-tune")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert f"--arch {arch[1]} does not match the weights in 'f.h5'" in r.err and "Traceback" not in r.err


def test_arch_kwargs_update_the_recorded_ones_for_the_recorded_class(run_cli, project):
    _fit(run_cli, project)  # recorded: width=4
    r = run_cli("ood", "f.h5", "--arch", "mynet.py:Net", "--arch-kwargs", "classes=10", "--limit", "8", "--no-tune",
                "--json")
    assert r.code == 0, r.err  # width=4 from the file, classes=10 from the flag


def test_arch_kwargs_without_arch_is_refused(run_cli, project):
    _fit(run_cli, project)
    r = run_cli("ood", "f.h5", "--arch-kwargs", "width=4", "--limit", "8")
    assert r.code == 2 and "--arch-kwargs needs --arch" in r.err


def test_report_from_weights_alone_equals_report_from_the_class(run_cli, project, monkeypatch):
    """Without the class (weights only) and with it (UNCERT_TRUST_ARCH=1): the same document, byte for byte;
    the same for the pruned checkpoint."""
    _fit(run_cli, project, "--method", "diag")
    alone = run_cli("report", "f.h5", "--json")
    assert run_cli("prune", "f.h5", "--fraction", "0.5", "-o", "alone.safetensors").code == 0
    assert not (project / "IMPORTED").exists()
    monkeypatch.setenv("UNCERT_TRUST_ARCH", "1")
    with_class = run_cli("report", "f.h5", "--json")
    assert run_cli("prune", "f.h5", "--fraction", "0.5", "-o", "class.safetensors").code == 0
    assert (project / "IMPORTED").exists()
    assert alone.code == with_class.code == 0
    assert alone.out == with_class.out
    kinds = {layer["name"]: layer["kind"] for layer in json.loads(alone.out)["layers"]}
    assert kinds == {"conv": "conv", "bn": "batchnorm2d", "fc": "linear"}
    assert (project / "alone.safetensors").read_bytes() == (project / "class.safetensors").read_bytes()


def test_batchnorm_counter_reads_back_as_a_scalar_and_matches_the_fingerprint(run_cli, project):
    _fit(run_cli, project)
    factors = read_factor_file(project / "f.h5")
    assert factors.state_dict["bn.num_batches_tracked"].shape == ()
    assert weights_fingerprint(factors.state_dict) == factors.fingerprint
    assert factors.parameter_names == ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "fc.weight", "fc.bias"]


def test_files_without_recorded_parameter_names_are_still_answered(run_cli, project):
    """Files written before the parameter names and kinds were recorded: parameters are what the blocks
    cover, Kronecker blocks are Linear or Conv by their weight's shape, other kinds are unknown."""
    _fit(run_cli, project)
    recorded = json.loads(run_cli("report", "f.h5", "--json").out)
    with h5py.File(project / "f.h5", "r+") as f:
        del f["model"].attrs["parameter_names"]
        del f["model"].attrs["module_kinds"]
    r = run_cli("report", "f.h5", "--json")
    assert r.code == 0, r.err
    old = json.loads(r.out)
    assert old["model"]["parameters"] == recorded["model"]["parameters"] == 40 + 8 + 2570
    assert {layer["name"]: layer["kind"] for layer in old["layers"]} == {"conv": "conv", "bn": "unknown", "fc": "linear"}
    assert [layer["posterior_std_mean"] for layer in old["layers"]] == [
        layer["posterior_std_mean"] for layer in recorded["layers"]]
    assert not (project / "IMPORTED").exists()

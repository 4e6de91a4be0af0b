"""A network whose forward updates its own buffers even in eval mode (a call counter, a running mean).

uncert runs such a model many times (the forward check, the fit's passes, the MAP accuracy). Those runs
must not end up in the factor file: the stored weights are the checkpoint's, so the class that wrote the
checkpoint reproduces them in every later command. A predictive that differentiates the network as a
pure function (probit's Jacobians) cannot run through the in-place update; that is the model's own code,
so it is a one-line user error (exit 2), not an internal one. A forward that is random in eval mode
(dropout called with ``training=True``) makes every number one random draw: a warning says so.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from tests.reference.user_files import import_user_file

USER_FILE = '''
import torch
from torch import nn


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("running", torch.zeros(64))

    def forward(self, x):
        x = x.flatten(1)
        self.calls += 1
        self.running.mul_(0.9).add_(0.1 * x.mean(0))
        return self.fc(x - self.running)


class AlwaysDropping(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(nn.functional.dropout(torch.relu(self.fc1(x.flatten(1))), 0.5, training=True))
'''
ARCH = ["--arch", "stateful.py:Counting"]


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stateful.py").write_text(USER_FILE)
    torch.manual_seed(0)
    user = import_user_file(tmp_path, "stateful")
    torch.save(user.Counting().state_dict(), tmp_path / "model.pt")
    torch.save(user.AlwaysDropping().state_dict(), tmp_path / "dropping.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "noise.npz", x=rng.random((16, 1, 8, 8), dtype=np.float32), y=np.zeros(16, dtype=np.int64))
    return tmp_path


def test_the_factor_file_stores_the_checkpoints_buffers_not_those_the_fit_left(run_cli, project):
    r = run_cli("fit", "model.pt", *ARCH, "--data", "digits", "--limit", "32", "--method", "diag", "-o", "f.h5",
                "--quiet")
    assert r.code == 0, r.err
    saved = torch.load(project / "model.pt", weights_only=True)
    with h5py.File(project / "f.h5", "r") as f:
        stored = {name: np.asarray(f["model/state_dict"][name]) for name in ("calls", "running")}
    assert stored["calls"] == 0  # the fit ran the model many times; none of them is in the file
    np.testing.assert_array_equal(stored["running"], saved["running"].numpy())
    # so the class that wrote the checkpoint opens the file (it was refused: "does not match the weights")
    r = run_cli("ood", "f.h5", *ARCH, "--against", "noise.npz", "--predictive", "map", "--limit", "16", "--quiet")
    assert r.code == 0, r.err


def test_a_predictive_through_jacobians_of_such_a_forward_is_a_user_error(run_cli, project):
    assert run_cli("fit", "model.pt", *ARCH, "--data", "digits", "--limit", "32", "--method", "diag", "-o", "f.h5",
                   "--quiet").code == 0
    r = run_cli("ood", "f.h5", *ARCH, "--against", "noise.npz", "--predictive", "probit", "--no-tune", "--limit", "16")
    assert r.code == 2, r.err
    line = r.err.strip().splitlines()[-1]
    assert "internal error" not in line and "Traceback" not in r.err
    assert "aten::add_" in line and "buffer" in line and "--predictive map" in line


def test_a_forward_that_is_random_in_eval_mode_is_warned_about(run_cli, project):
    r = run_cli("fit", "dropping.pt", "--arch", "stateful.py:AlwaysDropping", "--data", "digits", "--limit", "32",
                "--method", "diag", "-o", "f.h5", "--json")
    assert r.code == 0, r.err
    json.loads(r.out)  # the warning goes to stderr, --json stays pure
    warnings = [line for line in r.err.splitlines() if line.startswith("uncert: warning:")]
    assert len(warnings) == 1 and "training=True" in warnings[0] and "self.training" in warnings[0]
    # the stateful model is not random: its buffers are put back between the two runs
    r = run_cli("fit", "model.pt", *ARCH, "--data", "digits", "--limit", "32", "--method", "diag", "-o", "g.h5")
    assert r.code == 0 and "warning" not in r.err, r.err

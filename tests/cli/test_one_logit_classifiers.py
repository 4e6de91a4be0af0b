"""A binary classifier with one logit (sigmoid / ``BCEWithLogitsLoss``), as many users train them: its labels 0
and 1 were refused as "label 1 but the model has 1 outputs (labels must be 0..0)", and a squeezed ``(batch,)``
output as "flatten extra dimensions". Both now say what the network is and how to fit it: return the two
logits ``(0, z)``, whose softmax is ``sigmoid(z)`` -- and that form fits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.reference.user_files import import_user_file

USER_FILE = '''
import torch
from torch import nn


class OneLogit(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 1)

    def forward(self, x):
        return self.fc(x.flatten(1))


class Squeezed(OneLogit):
    def forward(self, x):
        return super().forward(x).squeeze(-1)


class TwoLogits(OneLogit):
    def forward(self, x):
        z = super().forward(x)
        return torch.cat([torch.zeros_like(z), z], 1)
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "binary.py").write_text(USER_FILE)
    torch.manual_seed(0)
    torch.save(import_user_file(tmp_path, "binary").OneLogit().state_dict(), tmp_path / "model.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "pairs.npz", x=rng.random((32, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 2, 32))
    return tmp_path


@pytest.mark.parametrize("cls", ["OneLogit", "Squeezed"])
def test_one_logit_is_refused_with_the_two_logit_form(run_cli, project, cls):
    r = run_cli("fit", "model.pt", "--arch", f"binary.py:{cls}", "--data", "pairs.npz", "-o", "f.h5")
    assert r.code == 2 and not (project / "f.h5").exists()
    line = r.err.strip().splitlines()[-1]
    assert "one-logit binary classifier" in line and "torch.zeros_like(z), z" in line


def test_the_two_logit_form_fits(run_cli, project):
    r = run_cli("fit", "model.pt", "--arch", "binary.py:TwoLogits", "--data", "pairs.npz", "-o", "f.h5", "--quiet")
    assert r.code == 0, r.err

"""``fit --method full`` / ``lowrank`` refuse what they cannot differentiate in one line, as the other methods do.

Two networks used to end these two methods in an internal error (exit 1) while ``diag``/``kfac`` answer or
refuse them plainly: one returning ``(B, C, 1)`` logits (now the other methods' "flatten extra dimensions"
refusal, before any work), and one that changes in place a tensor its backward pass needs (``h.relu_();
h += 1``), which the dense GGN's products differentiate twice. No factor file is written.
"""

from __future__ import annotations

import pytest

from tests.reference.user_files import save_user_checkpoint

USER_FILE = '''
from torch import nn


class TrailingAxis(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)).unsqueeze(-1)


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        h = self.fc1(x.flatten(1))
        h.relu_()
        h += 1
        return self.fc2(h)
'''


@pytest.mark.parametrize("method", ["full", "lowrank"])
@pytest.mark.parametrize("net, says", [("TrailingAxis", "flatten extra dimensions"), ("InPlace", "in place")])
def test_the_dense_methods_refuse_in_one_line(run_cli, tmp_path, monkeypatch, method, net, says):
    monkeypatch.chdir(tmp_path)
    save_user_checkpoint(tmp_path, "odd_nets", USER_FILE, cls=net)
    r = run_cli("fit", "net.pt", "--arch", f"odd_nets.py:{net}", "--data", "digits", "--limit", "32",
                "--method", method, *(("--rank", "2") if method == "lowrank" else ()), "-o", "f.h5")
    assert r.code == 2, (r.code, r.err)
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0] and "internal error" not in lines[0], r.err
    assert not (tmp_path / "f.h5").exists()

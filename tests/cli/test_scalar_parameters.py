"""A network with a 0-d parameter (a learned temperature multiplying the logits) fits and reports.

Found as a stranger's checkpoint: ``fit`` stopped with an internal IndexError in its memory estimate
(the parameter has no rows) and, once past it, ``report`` with a TypeError when the marginal variances
were unpacked into the parameter's empty shape.
"""

from __future__ import annotations

import json

import pytest
import torch

USER_FILE = '''
import torch
from torch import nn


class Tempered(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.fc(x.flatten(1)) * self.log_temperature.exp()
'''


@pytest.mark.parametrize("method", ["diag", "kfac", "full"])
def test_a_learned_temperature_is_covered_by_every_command(run_cli, tmp_path, monkeypatch, method):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tempered.py").write_text(USER_FILE)
    torch.manual_seed(0)
    torch.save({"fc.weight": 0.1 * torch.randn(10, 64), "fc.bias": torch.zeros(10),
                "log_temperature": torch.tensor(0.5)}, tmp_path / "net.pt")
    arch = ["--arch", "tempered.py:Tempered"]
    code, out, err = run_cli("fit", "net.pt", *arch, "--data", "digits", "--limit", "64", "--method", method,
                             "-o", "f.h5", "--json")
    assert code == 0, err
    code, out, err = run_cli("report", "f.h5", "--json")
    assert code == 0, err
    layers = json.loads(out)["layers"]
    assert sum(layer["params"] for layer in layers) == 10 * 64 + 10 + 1  # the temperature has a posterior too
    assert all(0 < layer["posterior_std_mean"] < float("inf") for layer in layers)
    if method != "full":  # (full: one joint block) the top-level module's own parameter is a layer, named ""
        assert [layer["params"] for layer in layers if layer["name"] == ""] == [1]
        code, out, err = run_cli("report", "f.h5")
        assert code == 0 and "<root>" in out, err  # as info prints it, not an empty name
    code, out, err = run_cli("prune", "f.h5", "--fraction", "0.5", "-o", "pruned.safetensors")
    assert code == 0, err
    code, out, err = run_cli("ood", "f.h5", *arch, "--against", "photo-patches", "--limit", "64", "--val-size", "64",
                             "--json")
    assert code == 0, err

"""A network whose weight names contain '/' is refused before the fit, not written as a broken file.

Found as a stranger: PyTorch forbids only '.' in module names, so ``nn.ModuleDict({"cls/head": ...})`` is
legal; HDF5 reads '/' as a group separator, so ``fit`` wrote a factor file that every later command
refused as damaged ("/model/state_dict/heads.cls is missing").
"""

from __future__ import annotations

import torch

USER_FILE = '''
import torch
from torch import nn


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(64, 16)
        self.heads = nn.ModuleDict({"cls/digits": nn.Linear(16, 10)})

    def forward(self, x):
        return self.heads["cls/digits"](torch.relu(self.body(x.flatten(1))))
'''


def test_a_slash_in_a_module_name_is_refused_before_any_work(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "heads.py").write_text(USER_FILE)
    torch.save({"body.weight": torch.zeros(16, 64), "body.bias": torch.zeros(16),
                "heads.cls/digits.weight": torch.zeros(10, 16), "heads.cls/digits.bias": torch.zeros(10)},
               tmp_path / "net.pt")
    code, out, err = run_cli("fit", "net.pt", "--arch", "heads.py:Heads", "--data", "digits", "--limit", "16",
                             "-o", "f.h5")
    assert code == 2, err
    assert "'heads.cls/digits.weight'" in err and "without '/'" in err, err
    assert len(err.strip().splitlines()) == 1 and "fit " not in err  # refused before the progress bar
    assert not (tmp_path / "f.h5").exists()

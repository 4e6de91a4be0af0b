"""A module whose batching rule breaks under nested vmaps: PReLU, through ``fit`` and ``ood``'s probit.

torch's batching rule for PReLU's pullback gets the sizes wrong when two vmaps are nested (the exact
diagonal's per-example gradients vmap over examples and over backward vectors; the output variances too),
and used to end ``fit`` and ``ood`` with an internal error ("The size of tensor a (64) must match the size
of tensor b (9)"). Now the inner vectors go one at a time with a note, and the diagonal is the explicit
float64 GGN's.
"""

from __future__ import annotations

import json

import torch

from tests.reference.ggn import explicit_ggn
from tests.reference.user_files import save_gaussian_images, save_user_checkpoint
from uncert_cli.store import read_factor_file

USER_FILE = '''
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 8)
        self.act = nn.PReLU()
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x.flatten(1))))
'''


def _setup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = save_user_checkpoint(tmp_path, "prelu_net", USER_FILE)
    with torch.no_grad():
        model.act.weight.fill_(0.3)  # a slope that matters: half the pre-activations are negative
    torch.save(model.state_dict(), tmp_path / "net.pt")
    x = save_gaussian_images(tmp_path / "data.npz", 24, 3)
    return model, x


def test_prelu_fits_its_exact_diagonal_and_predicts_by_probit(run_cli, tmp_path, monkeypatch):
    model, x = _setup(tmp_path, monkeypatch)
    r = run_cli("fit", "net.pt", "--arch", "prelu_net.py:Net", "--data", "data.npz", "--method", "diag",
                "--dtype", "float64", "--batch-size", "16", "-o", "f.h5", "--quiet")
    assert r.code == 0, r.err
    assert "internal error" not in r.err and "one at a time" in r.err  # the fallback is announced
    block = next(b for b in read_factor_file(tmp_path / "f.h5").curvature.blocks if b.module == "act")
    expected = explicit_ggn(model.double(), torch.from_numpy(x).double(), "classification", ["act.weight"])
    torch.testing.assert_close(block.diagonal[0].double(), expected.diagonal(), rtol=1e-8, atol=1e-12)

    r = run_cli("ood", "f.h5", "--arch", "prelu_net.py:Net", "--data", "data.npz", "--against", "data.npz",
                "--no-tune", "--predictive", "map,probit", "--json")
    assert r.code == 0, r.err
    assert "Traceback" not in r.err and "internal error" not in r.err
    assert "probit" in json.dumps(json.loads(r.out))

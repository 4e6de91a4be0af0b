"""``ood --png``/``--html`` on a state dict fitted with ``--arch``: the file records no class count.

Found as a stranger: the entropy figures took log(num_classes) for their axis, and a factor file fitted
from a plain state dict records ``num_classes`` as null, so ``ood --png`` stopped with an internal
TypeError after all its work (and, had the key been absent, would have assumed 10 classes).
"""

from __future__ import annotations

import json

import torch
from PIL import Image

USER_FILE = '''
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))
'''


def test_ood_figures_of_a_state_dict_fit(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.py").write_text(USER_FILE)
    torch.manual_seed(0)
    torch.save({"fc.weight": torch.randn(10, 64), "fc.bias": torch.zeros(10)}, tmp_path / "net.pt")
    arch = ["--arch", "net.py:Net"]
    assert run_cli("fit", "net.pt", *arch, "--data", "digits", "--limit", "64", "-o", "f.h5", "--quiet").code == 0
    code, out, err = run_cli("ood", "f.h5", *arch, "--against", "photo-patches", "--limit", "64", "--val-size", "32",
                             "--png", "figures", "--html", "ood.html", "--json")
    assert code == 0, err
    assert json.loads(out)["num_classes"] is None  # nothing recorded: the figures do without it
    for name in ("entropy_icdf.png", "entropy_hist.png", "reliability.png"):
        with Image.open(tmp_path / "figures" / name) as image:
            assert image.width > 100
    assert (tmp_path / "ood.html").stat().st_size > 1000

"""Layers with a parametrization (``nn.utils.parametrizations.weight_norm``, ``spectral_norm``) through the CLI.

Such a layer's weight is computed from the parametrization's own parameters (``fc1.parametrizations.weight
.original0`` and ``original1``); the parametrization module returns the weight, which has no batch axis.
uncert used to take that module as a layer of its own: the fit ended in an internal error whenever a
side of the weight happened to equal the batch size, and was refused otherwise. Now the parametrized
layer is one diagonal block over all its parameters, differentiated through the parametrization: the
explicit float64 GGN's diagonal. Related: ``ekfac`` and ``kfac-diag --rank`` on layers none of which is a
plain Linear/Conv, and ``full``/``lowrank`` on a kernel without forward-mode derivatives.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.reference.ggn import explicit_ggn
from tests.reference.user_files import import_user_file, save_gaussian_images, save_user_checkpoint
from uncert_cli.store import read_factor_file

USER_FILE = '''
from torch import nn
from torch.nn.utils import parametrizations


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = parametrizations.weight_norm(nn.Linear(64, 24))
        self.fc2 = parametrizations.spectral_norm(nn.Linear(24, 3))

    def forward(self, x):
        return self.fc2(self.fc1(x.flatten(1)).tanh())
'''
ARCH = ("--arch", "param_net.py:Net")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """The user file, a checkpoint and 24 examples: fc1's weight is (24, 64), a side equal to the batch size."""
    monkeypatch.chdir(tmp_path)
    save_user_checkpoint(tmp_path, "param_net", USER_FILE)
    save_gaussian_images(tmp_path / "data.npz", 24, 3)
    return tmp_path


def test_a_parametrized_layer_is_one_block_with_the_exact_diagonal(run_cli, folder):
    r = run_cli("fit", "net.pt", *ARCH, "--data", "data.npz", "--method", "diag", "--dtype", "float64",
                "--batch-size", "24", "-o", "f.h5", "--quiet")
    assert r.code == 0, r.err
    blocks = {b.module: b for b in read_factor_file(folder / "f.h5").curvature.blocks}
    assert set(blocks) == {"fc1", "fc2"}
    fc1 = blocks["fc1"]
    assert set(fc1.param_names) == {"fc1.bias", "fc1.parametrizations.weight.original0",
                                    "fc1.parametrizations.weight.original1"}
    model = import_user_file(folder, "param_net").Net().double()
    model.load_state_dict({k: v.double() for k, v in torch.load(folder / "net.pt").items()})
    x = torch.from_numpy(np.load(folder / "data.npz")["x"]).double()
    expected = explicit_ggn(model, x, "classification", list(fc1.param_names)).diagonal()
    got = torch.cat([d.reshape(-1) for d in fc1.diagonal]).double()
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-12)

    # the answering commands run, and a pruned checkpoint loads into the user's class
    for command in (("ood", "f.h5", *ARCH, "--data", "data.npz", "--against", "data.npz", "--no-tune"),
                    ("prune", "f.h5", "--fraction", "0.3", "-o", "pruned.safetensors")):
        r = run_cli(*command, "--quiet")
        assert r.code == 0, r.err
    model.float().load_state_dict(load_file(folder / "pruned.safetensors"))


def test_info_shows_the_parametrized_layer_as_one_diagonal_block(run_cli, folder):
    r = run_cli("info", "net.pt", *ARCH, "--json")
    assert r.code == 0, r.err
    document = json.loads(r.out)
    layers = {layer["name"]: layer for layer in document["layers"]}
    assert set(layers) == {"fc1", "fc2"}
    assert {layer["structure"] for layer in layers.values()} == {"diagonal"}
    assert layers["fc1"]["params"] == 24 * 64 + 24 + 24  # v, g and the bias
    assert sum(layer["params"] for layer in layers.values()) == document["parameters"]


@pytest.mark.parametrize("method, options", [("ekfac", ()), ("kfac-diag", ("--rank", "2"))])
def test_kronecker_methods_without_a_plain_linear_layer(run_cli, folder, method, options):
    r = run_cli("fit", "net.pt", *ARCH, "--data", "data.npz", "--method", method, *options, "-o", "f.h5", "--quiet")
    assert r.code == 0, r.err
    assert {b.structure for b in read_factor_file(folder / "f.h5").curvature.blocks} == {"diagonal"}


def test_lowrank_on_a_kernel_without_forward_mode_is_one_line(run_cli, folder):
    (folder / "old_net.py").write_text(USER_FILE.replace("parametrizations.weight_norm", "nn.utils.weight_norm"))
    torch.manual_seed(0)
    torch.save(import_user_file(folder, "old_net").Net().state_dict(), folder / "old.pt")
    r = run_cli("fit", "old.pt", "--arch", "old_net.py:Net", "--data", "data.npz", "--method", "lowrank",
                "--rank", "2", "-o", "f.h5")
    assert r.code == 2, r.err
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "forward-mode" in lines[0] and "--method diag" in lines[0], r.err
    assert not (folder / "f.h5").exists()

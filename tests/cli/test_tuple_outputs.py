"""Tuple outputs end to end: a network returning ``(logits, aux)``, and a Linear whose forward returns a tuple.

The network's tuple is resolved once, by the output hook (the logits are analysed): ``fit`` and ``ood`` then
give exactly the numbers of the same network without the auxiliary head. A Linear subclass returning a tuple
has no single output to take its Kronecker/diagonal factors from (its first entry was read as the layer's
output: wrong factors at fit, an internal error in ``ood``); it is a one-line error naming the module and
``--subset``, which leaves it out. The output covariance counts the entries of tuple results of its units
when it sizes its backward chunks. Through the real CLI with classes in the user's own file.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tests.reference.user_files import import_user_file

USER_FILE = '''
import torch
from torch import nn


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class WithAux(Plain):
    """The same network with an auxiliary head, returned second: (logits, aux)."""

    def __init__(self):
        super().__init__()
        self.aux = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(h), self.aux(h)


class PairLinear(nn.Linear):
    """A Linear that also reports its input's squared norm, first."""

    def forward(self, x):
        return x.square().sum(-1, keepdim=True), super().forward(x)


class WithPairLinear(Plain):
    def __init__(self):
        super().__init__()
        self.fc2 = PairLinear(16, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))[1]
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    """nets.py and one set of weights: ``plain.safetensors`` (fc1, fc2) and ``aux.safetensors`` (+ aux)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets.py").write_text(USER_FILE)
    nets = import_user_file(tmp_path, "nets")
    torch.manual_seed(0)
    with_aux = nets.WithAux()
    save_file(with_aux.state_dict(), str(tmp_path / "aux.safetensors"))
    save_file({k: v for k, v in with_aux.state_dict().items() if not k.startswith("aux.")},
              str(tmp_path / "plain.safetensors"))
    return tmp_path


def _ood(run_cli, factors: str, arch: str) -> dict:
    r = run_cli("ood", factors, "--arch", arch, "--against", "photo-patches", "--limit", "64", "--no-tune",
                "--predictive", "map,probit,glm", "--samples", "20", "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_a_network_returning_logits_and_aux_is_analysed_on_its_logits(run_cli, project):
    common = ("--data", "digits", "--limit", "64", "--quiet", "--json")
    plain = run_cli("fit", "plain.safetensors", "--arch", "nets.py:Plain", "-o", "plain.h5", *common)
    aux = run_cli("fit", "aux.safetensors", "--arch", "nets.py:WithAux", "-o", "aux.h5", *common)
    assert plain.code == 0 and aux.code == 0, plain.err + aux.err
    # fc1 and fc2 see the logits only: their factors are those of the network without the auxiliary head.
    fitted = {layer["module"]: layer for layer in json.loads(aux.out)["layers"]}
    assert set(fitted) == {"fc1", "fc2", "aux"}
    from uncert_cli.store import read_factor_file

    blocks = {b.module: b for b in read_factor_file("aux.h5").curvature.blocks}
    for b in read_factor_file("plain.h5").curvature.blocks:
        torch.testing.assert_close(blocks[b.module].output_factor, b.output_factor)
        torch.testing.assert_close(blocks[b.module].input_factor, b.input_factor)
    # ... and the auxiliary head, which the logits do not depend on, adds nothing to their covariance.
    ours, theirs = _ood(run_cli, "aux.h5", "nets.py:WithAux"), _ood(run_cli, "plain.h5", "nets.py:Plain")
    for predictive in ("map", "probit", "glm"):
        for key in ("nll", "accuracy", "ece"):
            assert ours["in_distribution"][predictive][key] == pytest.approx(theirs["in_distribution"][predictive][key])


def test_a_linear_returning_a_tuple_is_refused_by_name_and_left_out_with_subset(run_cli, project):
    out = project / "pair.h5"
    for method in ("kfac", "diag"):
        r = run_cli("fit", "plain.safetensors", "--arch", "nets.py:WithPairLinear", "--data", "digits", "--limit", "64",
                    "--method", method, "-o", out)
        assert r.code == 2 and r.out == "" and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
        assert "module 'fc2' (PairLinear, an nn.Linear) returns a tuple, not one tensor" in r.err
        assert "leave it out of the fit with --subset" in r.err and not out.exists()
    r = run_cli("fit", "plain.safetensors", "--arch", "nets.py:WithPairLinear", "--data", "digits", "--limit", "64",
                "--subset", "fc1", "-o", out, "--quiet")
    assert r.code == 0, r.err
    assert _ood(run_cli, "pair.h5", "nets.py:WithPairLinear")["in_distribution"]["probit"]["n"] == 64


def test_the_output_covariance_counts_the_entries_of_tuple_results():
    from uncert_cli.curvature.subset import select_units
    from uncert_cli.posterior.output_covariance import output_sizes

    class Pair(nn.Linear):
        def forward(self, x):
            y = super().forward(x)
            return y, y.square()  # both entries carry the backward vectors

    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), Pair(5, 3))
    model.register_forward_hook(lambda m, args, out: out[0])
    units = select_units(model, "all")
    assert output_sizes(model, units, torch.randn(4, 6)).unit_outputs == 5 + 3 + 3

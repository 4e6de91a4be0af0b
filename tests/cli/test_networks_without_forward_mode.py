"""Networks that torch's forward-mode differentiation cannot run, through the commands that linearise them.

``glm`` forms ``J(x) δθ`` with ``torch.func.jvp``. An ``autograd.Function`` written the classic way (no
``setup_context``) runs under no ``torch.func`` transform, and the deprecated ``nn.utils.weight_norm``'s kernel
has no forward-mode derivative; both used to end ``attack``/``tune`` with an internal error. They now take
the double-backward route (``posterior/predictives/reverse_jvp.py``) with a note, and give the numbers the
same network written with plain operations gives. A network that reads its input under ``no_grad`` has a
zero input gradient: FGSM leaves its inputs where they are instead of crashing.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.func import functional_call, jvp

from tests.reference.user_files import import_user_file
from uncert_cli.posterior.predictives.reverse_jvp import jvp_by_reverse_mode

USER_FILE = '''
import torch
from torch import nn


class Square(torch.autograd.Function):
    """x², the classic way: forward(ctx, ...) and no setup_context."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, 10)

    def square(self, h):
        return h * h

    def forward(self, x):
        return self.fc2(0.1 * self.square(self.fc1(x.flatten(1))))


class CustomFunction(Plain):
    def square(self, h):
        return Square.apply(h)


class OldWeightNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.utils.weight_norm(nn.Linear(64, 16))
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class InputUnderNoGrad(Plain):
    def forward(self, x):
        with torch.no_grad():
            h = self.fc1(x.flatten(1))
        return self.fc2(torch.relu(h))
'''

ATTACK = ("--limit", "16", "--no-tune", "--predictive", "map,glm", "--samples", "4", "--mode", "untargeted",
          "--step-sizes", "0,0.3,0.5", "--json")


@pytest.fixture
def user_nets(tmp_path, monkeypatch):
    """The user file in the test's folder (the working directory) and one state dict per class, all of
    them ``Plain``'s weights (the weight-norm net has its own)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets.py").write_text(USER_FILE)
    nets = import_user_file(tmp_path, "nets")
    torch.manual_seed(0)
    plain = nets.Plain()
    for name in ("Plain", "CustomFunction", "InputUnderNoGrad"):
        torch.save(plain.state_dict(), tmp_path / f"{name}.pt")
    torch.save(nets.OldWeightNorm().state_dict(), tmp_path / "OldWeightNorm.pt")
    return tmp_path


def _fit(run_cli, folder, name: str) -> str:
    out = folder / f"{name}.h5"
    r = run_cli("fit", folder / f"{name}.pt", "--arch", f"nets.py:{name}", "--data", "digits", "--limit", "64",
                "--method", "kfac", "-o", out, "--quiet")
    assert r.code == 0, r.err
    return str(out)


def test_a_classic_autograd_function_attacks_like_plain_operations(run_cli, user_nets):
    documents = {}
    for name in ("Plain", "CustomFunction"):
        factors = _fit(run_cli, user_nets, name)
        r = run_cli("attack", factors, "--arch", f"nets.py:{name}", *ATTACK)
        assert r.code == 0, r.err
        assert "Traceback" not in r.err and "internal error" not in r.err
        documents[name] = json.loads(r.out)
        if name == "CustomFunction":
            assert "two backward passes" in r.err  # the fallback is announced
    plain, custom = (documents[n]["untargeted"]["glm"] for n in ("Plain", "CustomFunction"))
    assert custom["accuracy"] == plain["accuracy"]
    assert custom["mean_entropy"] == pytest.approx(plain["mean_entropy"], rel=1e-4)
    # the attack does move the glm predictive (unlike a zero input gradient, below): the fallback's
    # gradient w.r.t. the input is not lost
    assert len(set(custom["mean_entropy"])) > 1


def test_a_kernel_without_forward_mode_is_linearised_too(run_cli, user_nets):
    factors = _fit(run_cli, user_nets, "OldWeightNorm")
    r = run_cli("attack", factors, "--arch", "nets.py:OldWeightNorm", *ATTACK)
    assert r.code == 0, r.err
    assert "forward AD" in r.err  # the note quotes torch's reason
    assert json.loads(r.out)["untargeted"]["glm"]["n"] == 16
    # ood's glm (what tune's search evaluates) goes the same way
    r = run_cli("ood", factors, "--arch", "nets.py:OldWeightNorm", "--against", "photo-patches", "--limit", "16",
                "--no-tune", "--predictive", "glm", "--samples", "4", "--json")
    assert r.code == 0, r.err
    assert "glm" in json.dumps(json.loads(r.out))


def test_an_input_read_under_no_grad_is_not_moved_by_the_attack(run_cli, user_nets):
    factors = _fit(run_cli, user_nets, "InputUnderNoGrad")
    r = run_cli("attack", factors, "--arch", "nets.py:InputUnderNoGrad", *ATTACK)
    assert r.code == 0, r.err
    for curve in json.loads(r.out)["untargeted"].values():
        assert len(set(curve["accuracy"])) == 1 and len(set(curve["mean_entropy"])) == 1, curve


def test_the_reverse_mode_jvp_equals_forward_mode():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    theta = {k: v.detach() for k, v in model.named_parameters()}
    tangent = {k: torch.randn_like(v) for k, v in theta.items()}
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)

    def f(p):
        return functional_call(model, p, (x,))

    expected = jvp(f, (theta,), (tangent,))[1]
    got = jvp_by_reverse_mode(f, theta, tangent)
    torch.testing.assert_close(got, expected)
    # differentiable w.r.t. the input, as the attack needs
    (by_reverse,) = torch.autograd.grad(got.square().sum(), x)
    (by_forward,) = torch.autograd.grad(jvp(f, (theta,), (tangent,))[1].square().sum(), x)
    torch.testing.assert_close(by_reverse, by_forward)
    with torch.no_grad():
        assert not jvp_by_reverse_mode(f, theta, tangent).requires_grad

"""Library errors in library terms (issue 12.7): a model that changes a layer's input in place is the
user's to fix (a UserError naming the model, exit 2 from the CLI), and the fallbacks for models vmap
cannot batch take only vmap's own errors and say so."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from uncert_cli.curvature import compute_curvature
from uncert_cli.errors import UserError
from uncert_cli.posterior import LaplacePosterior
from uncert_cli.slow_path import SlowPathWarning, vmap_unsupported


class InputChangedAfterUse(nn.Module):
    """``b``'s input is changed in place after ``b`` ran (the engine reads it after the backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = self.a(x) + 0.0
        out = self.b(h)
        h.add_(1.0)
        return out


class SharedInputChanged(nn.Module):
    """A shared layer whose input changes in place between its two calls."""

    def __init__(self) -> None:
        super().__init__()
        self.shared, self.out = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = x + 0.0
        first = self.shared(h)
        h.mul_(2.0)
        return self.out(first + self.shared(h))


@pytest.mark.parametrize("model_class", [InputChangedAfterUse, SharedInputChanged])
@pytest.mark.parametrize("method", ["kfac", "diag"])
def test_an_input_modified_in_place_is_the_users_to_fix(model_class, method):
    torch.manual_seed(0)
    batches = [(torch.randn(6, 4), torch.randint(0, 3, (6,)))]
    with pytest.raises(UserError, match="modified in place") as err:
        compute_curvature(model_class(), batches, method=method)
    assert err.value.param == "model" and "out of place" in str(err.value)


def test_only_vmaps_own_errors_take_the_fallback():
    assert vmap_unsupported(RuntimeError("Batching rule not implemented for aten::foo"))
    assert vmap_unsupported(RuntimeError("vmap: It looks like you're attempting to use a Tensor in some data-dependent control flow"))
    assert not vmap_unsupported(RuntimeError("Expected all tensors to be on the same device"))
    assert not vmap_unsupported(KeyError("vmap"))


class DataDependent(nn.Module):
    """Control flow on a tensor's value: vmap refuses it, a plain loop over samples does not."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.a(x)
        if h.sum() > 1e9:  # never true; vmap cannot know
            h = -h
        return self.b(torch.tanh(h))


def test_the_slow_path_is_announced_and_gives_the_same_numbers():
    torch.manual_seed(0)
    model = DataDependent().double()
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    post = LaplacePosterior(compute_curvature(model, [(x, y)], method="kfac"), model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probs = post.predict(x, "mc", samples=5)
    assert any(issubclass(w.category, SlowPathWarning) and "one at a time" in str(w.message) for w in caught)
    # the same samples, evaluated without vmap by hand
    from torch.func import functional_call

    dev = post.deviations(5, None)
    with torch.no_grad():
        by_hand = torch.stack([
            torch.softmax(functional_call(model, {n: post.map_parameters[n] + d[s] for n, d in dev.items()}, (x,)), -1)
            for s in range(5)
        ]).mean(0)
    torch.testing.assert_close(probs, by_hand, rtol=1e-12, atol=1e-12)


def test_the_cli_shows_the_note_as_one_line(run_cli, tmp_path, capfd):
    """Through main's warning display: one ``uncert: note:`` line, no file path or source line."""
    import uncert_cli.cli.main as cli_main
    from uncert_cli.slow_path import announce_slow_path

    cli_main.main(["--help"])  # installs the display
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = cli_main._show_warning
        announce_slow_path("the test runs", RuntimeError("vmap: no rule\nsecond line"))
    err = capfd.readouterr().err
    assert err == "uncert: note: the test runs one at a time (slower, same numbers): vmap: no rule\n"

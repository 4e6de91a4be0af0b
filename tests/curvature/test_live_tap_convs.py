"""Convs run on their live taps (``live_tap_convs``): the same outputs and gradients as the plain conv
on every geometry, and the curvature and output covariance of nets with such convs against the
explicit float64 GGN and Jacobian."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor, nn

from tests.curvature.test_curv_conv_paths import TinyMapNet, _diag_against_ggn
from tests.posterior.test_post_output_covariance import _check
from tests.reference.curvatures import random_kfac_curvature
from tests.reference.models import DT, targets
from uncert_cli.curvature import compute_curvature, engine
from uncert_cli.curvature.blocks import KroneckerBlock
from uncert_cli.curvature.live_tap_convs import cropped_conv, live_tap_convs

CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
GEOMETRIES = list(
    itertools.product([1, 2, 3], [1, 3, 5], [1, 2, 3], [1, 2], [0, 1, 2, 3, "same"], [1, 2, 4], [1, 3])
)  # dims, kernel, stride, dilation, padding, input size, groups


def _gradients(conv: nn.Module, x: Tensor, v: Tensor) -> tuple[Tensor, ...]:
    out = conv(x)
    return (out, *torch.autograd.grad(out, (x, conv.weight, conv.bias), v))


def test_cropped_convs_compute_the_same_outputs_and_gradients() -> None:
    """Every geometry of the grid: outputs, input gradients and weight gradients in float64; both the
    cropped conv and the one-position matrix product are among them."""
    torch.manual_seed(0)
    kinds = {"cropped": 0, "linear": 0}
    for dims, k, s, dil, pad, size, groups in GEOMETRIES:
        if pad == "same" and s != 1:
            continue
        conv = CONVS[dims](3, 6, k, stride=s, dilation=dil, padding=pad, groups=groups).double()
        x = torch.randn(2, 3, *(size,) * dims, dtype=torch.float64, requires_grad=True)
        if (size + 2 * (0 if pad == "same" else pad) - dil * (k - 1) - 1) < 0 and pad != "same":
            continue  # the input is smaller than the kernel's reach: no output
        plan = cropped_conv(conv, (size,) * dims)
        if plan is not None:
            kinds["linear" if plan.linear and groups == 1 else "cropped"] += 1
        plain = _gradients(conv, x, v := torch.randn_like(conv(x)))
        with live_tap_convs(conv) as swapped:
            assert swapped == [conv]
            cropped = _gradients(conv, x, v)
        for a, b in zip(plain, cropped):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert kinds["cropped"] > 20 and kinds["linear"] > 20


def test_dead_taps_are_cropped_and_forwards_restored() -> None:
    layer4 = nn.Conv2d(8, 8, 3, padding=1)  # resnet18's layer4 at 32×32 inputs: 1×1 maps
    plan = cropped_conv(layer4, (1, 1))
    assert plan is not None and plan.taps == ((1, 2), (1, 2)) and plan.linear
    down = nn.Conv2d(8, 8, 3, stride=2, padding=1)  # 2×2 → 1×1: taps 1 and 2 of each dimension
    plan = cropped_conv(down, (2, 2))
    assert plan is not None and plan.taps == ((1, 3), (1, 3)) and plan.pads == ((0, 0), (0, 0)) and plan.linear
    assert cropped_conv(layer4, (4, 4)) is None  # every tap sees the input somewhere
    # Stride 3 over a 1-wide map padded by 5: taps 2 and 5 are live, not one range; left as it is.
    assert cropped_conv(nn.Conv2d(1, 1, (1, 7), stride=3, padding=(0, 5)), (1, 1)) is None
    model = nn.Sequential(layer4, down)
    with live_tap_convs(model):
        assert "forward" in vars(layer4)
    assert "forward" not in vars(layer4) and "forward" not in vars(down)


def test_convs_with_their_own_forward_are_left_alone() -> None:
    class SamePadConv(nn.Conv2d):
        def forward(self, x: Tensor) -> Tensor:  # e.g. timm's Conv2dSame pads per call
            return super().forward(x) * 2

    own = SamePadConv(2, 2, 3, padding=1)
    assigned = nn.Conv2d(2, 2, 3, padding=1)
    marker = assigned.forward = lambda x: x  # noqa: E731 - an instance forward someone else put there
    circular = nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")
    with live_tap_convs(nn.Sequential(own, assigned, circular)) as swapped:
        assert swapped == []
    assert vars(assigned)["forward"] is marker


class ResnetTail(nn.Module):
    """resnet18's layer4 entry at 32×32 inputs in miniature: a stride-2 3×3 conv from 2×2 to 1×1
    (four of nine taps live), eval-mode BatchNorm, a 3×3 conv on the 1×1 map (the centre tap), a 1×1
    stride-2 shortcut, and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 3, 3, padding=1)
        self.down = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4).eval()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.shortcut = nn.Conv2d(3, 4, 1, stride=2, bias=False)
        self.head = nn.Linear(4, 3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.stem(x))
        out = self.conv(torch.tanh(self.bn(self.down(h)))) + self.shortcut(h)
        return self.head(torch.tanh(out).flatten(1))


class DepthwiseTail(nn.Module):
    """A depthwise 3×3 conv on a 2×2 map (a diagonal unit: its per-example gradients come from the
    generic vmapped path through the cropped conv) and a grouped stride-2 one down to 1×1."""

    def __init__(self) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(2, 2, 3, padding=2, dilation=2, groups=2)
        self.grouped = nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2)
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.grouped(torch.tanh(self.depthwise(x)))).flatten(1))


@pytest.mark.parametrize("make", [ResnetTail, TinyMapNet, DepthwiseTail])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_exact_diagonal_with_dead_taps_matches_the_explicit_ggn(make: type[nn.Module], task: str) -> None:
    torch.manual_seed(1)
    model = make().double().eval()
    shape = (5, 3, 2, 1) if make is TinyMapNet else (5, 2, 2, 2)
    x = torch.randn(*shape, dtype=torch.float64)
    assert _diag_against_ggn(model, x, targets(task, 5, 3), task) > 0


def test_kfac_with_dead_taps_is_the_kfac_of_the_plain_convs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both Kronecker factors of every conv (the output factor takes the vectors propagated back through
    the cropped convs) against the same fit with the plain convs."""
    torch.manual_seed(2)
    model = ResnetTail().double().eval()
    batches = [(torch.randn(4, 2, 2, 2, dtype=torch.float64), targets("classification", 4, 3)) for _ in range(2)]
    cropped = compute_curvature(model, batches, method="kfac")
    with monkeypatch.context() as patch:
        patch.setattr(engine, "live_tap_convs", lambda model: torch.enable_grad())  # a context that does nothing here
        plain = compute_curvature(model, batches, method="kfac")
    checked = 0
    for a, b in zip(cropped.blocks, plain.blocks):
        if isinstance(a, KroneckerBlock):
            torch.testing.assert_close(a.input_factor, b.input_factor, rtol=1e-11, atol=1e-13)
            torch.testing.assert_close(a.output_factor, b.output_factor, rtol=1e-11, atol=1e-13)
            checked += 1
    assert checked == 5


@pytest.mark.parametrize("mode", ["eigen", "factor"])
def test_output_covariance_with_dead_taps_matches_the_explicit_jacobian(mode: str) -> None:
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Tanh(), nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(),
        nn.Flatten(), nn.Linear(4, 3),
    ).to(DT)
    x = torch.randn(5, 2, 2, 2, dtype=DT)
    assert cropped_conv(model[0], (2, 2)) is not None and cropped_conv(model[2], (1, 1)) is not None
    curv = random_kfac_curvature(model, ["0", "2", "5"], "classification", n_data=30)
    _check(model, x, curv, {"0": 0.8, "2": 1.2, "5": 2.0}, mode)

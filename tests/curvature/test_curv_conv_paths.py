"""Every code path of the conv diagonal against the explicit float64 GGN: squared per-example
gradients and position pairs (``square_sums``), the closed-form eval-mode BatchNorm, and strided
conv patches (strided, padded, dilated, rectangular kernels, Conv1d)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.reference.ggn import explicit_ggn
from tests.reference.indices import param_diagonal
from tests.reference.models import targets
from uncert_cli.curvature import DiagonalBlock, compute_curvature, engine, square_sums
from uncert_cli.curvature.kronecker import conv_patch_rows


class ConvBatchNormNet(nn.Module):
    """padded conv (P = 25) → BatchNorm2d → strided, dilated, rectangular conv (P = 9) → BatchNorm2d
    called twice → 1-d conv over the flattened channels → linear. BatchNorms in eval mode with
    non-trivial running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 4, (3, 2), stride=2, dilation=(1, 2), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(4)
        self.conv3 = nn.Conv1d(4, 2, 2, stride=2, bias=False)
        self.head = nn.Linear(2 * 4, 3)
        for bn in (self.bn1, self.bn2):
            with torch.no_grad():
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.bn1(self.conv1(x)))
        h = self.conv2(h)
        h = torch.tanh(self.bn2(h) + 0.5 * self.bn2(h * h))
        return self.head(torch.tanh(self.conv3(h.flatten(2))).flatten(1))


def _diag_against_ggn(model: nn.Module, x: Tensor, y: Tensor, task: str) -> int:
    ggn = explicit_ggn(model, x, task)
    curv = compute_curvature(model, [(x[:3], y[:3]), (x[3:], y[3:])], method="diag", task=task)
    checked = 0
    for block in curv.blocks:
        assert isinstance(block, DiagonalBlock)
        for name, diag in zip(block.param_names, block.diagonal):
            torch.testing.assert_close(diag, param_diagonal(model, ggn, name), rtol=1e-9, atol=1e-12)
            checked += 1
    return checked


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("pairs", [True, False])
def test_both_square_sum_forms_are_exact(task: str, pairs: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = ConvBatchNormNet().double().eval()
    x = torch.randn(6, 2, 5, 5, dtype=torch.float64)
    used: list[bool] = []
    real = square_sums.add_square_sums_
    monkeypatch.setattr(
        "uncert_cli.curvature.diagonal.add_square_sums_", lambda acc, g, a: (used.append(True), real(acc, g, a, pairs))
    )
    assert _diag_against_ggn(model, x, targets(task, 6, 3), task) == 11
    assert used  # the conv layers went through the forced form


def test_batch_norm_takes_the_closed_form(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real = engine.BatchNormDiagAccumulator

    def recording(unit, *args):  # type: ignore[no-untyped-def]
        made.append(unit.name)
        return real(unit, *args)

    monkeypatch.setattr(engine, "BatchNormDiagAccumulator", recording)
    torch.manual_seed(1)
    model = ConvBatchNormNet().double().eval()
    x = torch.randn(5, 2, 5, 5, dtype=torch.float64)
    _diag_against_ggn(model, x, targets("classification", 5, 3), "classification")
    assert made == ["bn1", "bn2"]
    assert issubclass(real, engine.GenericDiagAccumulator)


def test_batch_norm_in_training_mode_is_not_closed_form() -> None:
    from uncert_cli.curvature.norm_diag import closed_form_batch_norm
    from uncert_cli.curvature.subset import discover_units

    model = ConvBatchNormNet().eval()
    assert [closed_form_batch_norm(u) for u in discover_units(model) if u.name.startswith("bn")] == [True, True]
    model.train()  # batch statistics couple the examples: the generic path decides what to do
    assert not any(closed_form_batch_norm(u) for u in discover_units(model) if u.name.startswith("bn"))


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Conv2d(3, 4, (3, 2), stride=(2, 1), dilation=(1, 2), padding=(1, 0)),
        nn.Conv2d(1, 2, 5),
        nn.Conv2d(3, 2, 3, padding="same", dilation=2),
    ],
)
def test_conv_patch_rows_match_unfold(conv: nn.Conv2d) -> None:
    x = torch.randn(4, conv.in_channels, 7, 6)
    padding = conv.padding if not isinstance(conv.padding, str) else (2, 2)
    expected = F.unfold(x, conv.kernel_size, conv.dilation, padding, conv.stride).transpose(1, 2)
    rows = conv_patch_rows(conv, x)
    assert rows.shape == expected.shape
    torch.testing.assert_close(rows, expected, rtol=0, atol=0)
    # The rows reproduce the convolution itself.
    out = rows @ conv.weight.reshape(conv.out_channels, -1).t() + conv.bias
    torch.testing.assert_close(out.transpose(1, 2).reshape(conv(x).shape), conv(x), rtol=1e-5, atol=1e-5)


def test_conv1d_patch_rows_match_unfold() -> None:
    conv = nn.Conv1d(2, 3, 3, stride=2, dilation=2, padding=1)
    x = torch.randn(4, 2, 9)
    expected = F.unfold(x.unsqueeze(2), (1, 3), (1, 2), (0, 1), (1, 2)).transpose(1, 2)
    torch.testing.assert_close(conv_patch_rows(conv, x), expected, rtol=0, atol=0)
    unbatched = conv_patch_rows(conv, x[0])
    torch.testing.assert_close(unbatched, expected[:1], rtol=0, atol=0)


class TinyMapNet(nn.Module):
    """3×3 convs on 1×1 and 2×1 maps (most kernel taps see only padding), one of them called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.head = nn.Linear(4 * 2, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.conv1(x))
        h = torch.tanh(self.conv2(h)) + torch.tanh(self.conv2(h * h))
        return self.head(h.flatten(1))


def test_kfac_skips_padding_only_columns_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    from uncert_cli.curvature.blocks import KroneckerBlock
    from uncert_cli.curvature.kronecker import KroneckerAccumulator

    torch.manual_seed(2)
    model = TinyMapNet().double().eval()
    x = torch.randn(6, 3, 2, 1, dtype=torch.float64)
    batches = [(x[:4], targets("classification", 4, 3)), (x[4:], targets("classification", 2, 3))]
    skipped = compute_curvature(model, batches, method="kfac")
    monkeypatch.setattr(KroneckerAccumulator, "_live_taps", lambda self, x: None)
    full = compute_curvature(model, batches, method="kfac")
    for a, b in zip(skipped.blocks, full.blocks):
        assert isinstance(a, KroneckerBlock) and isinstance(b, KroneckerBlock)
        torch.testing.assert_close(a.input_factor, b.input_factor, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(a.output_factor, b.output_factor, rtol=1e-12, atol=1e-14)
    # On the 2×1 map a 3×3 kernel's left and right columns only ever read padding.
    A = skipped.blocks[0].input_factor[:-1, :-1].reshape(3, 3, 3, 3, 3, 3)
    assert A[:, :, 0].abs().sum() == 0 and A[:, :, 1].abs().sum() > 0


def test_live_taps_are_found_from_the_geometry() -> None:
    from uncert_cli.curvature.kronecker import live_taps, tap_columns

    model = TinyMapNet()
    assert live_taps(model.conv1, (1, 1)) == ((1,), (1,))  # the centre tap only
    assert live_taps(model.conv1, (5, 5)) is None
    assert tap_columns(model.conv1, ((1,), (1,))).tolist() == [4, 13, 22]  # the centre tap of each channel
    assert live_taps(model.conv1, (2, 1)) == ((0, 1, 2), (1,))
    # Stride 3 on a 1-wide map with padding 5: taps 2 and 5 land on the single real entry.
    conv = nn.Conv2d(1, 1, (1, 7), stride=3, padding=(0, 5))
    assert live_taps(conv, (1, 1)) == ((0,), (2, 5))
    x = torch.randn(2, 1, 1, 1)
    rows = conv_patch_rows(conv, x, live_taps(conv, (1, 1)))
    full = conv_patch_rows(conv, x)
    torch.testing.assert_close(rows, full[..., tap_columns(conv, ((0,), (2, 5)))], rtol=0, atol=0)
    assert full[..., [0, 1, 3, 4, 6]].abs().sum() == 0

"""Every code path of the conv diagonal against the explicit float64 GGN: squared per-example
gradients and position pairs (``square_sums``), the closed-form eval-mode BatchNorm, and strided
conv patches (strided, padded, dilated, rectangular kernels, Conv1d)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.reference.ggn import explicit_ggn
from tests.reference.indices import param_diagonal
from tests.reference.models import targets
from uncert_cli.curvature import DiagonalBlock, compute_curvature, engine, square_sums
from uncert_cli.curvature.conv_input import InputPlan
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


def _same_as_one_product(model: nn.Module, batches: list[tuple[Tensor, Tensor]], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The KFAC curvature as planned, checked block by block against one patch product per call."""
    from uncert_cli.curvature.blocks import KroneckerBlock
    from uncert_cli.curvature.kronecker import KroneckerAccumulator

    planned = compute_curvature(model, batches, method="kfac")
    with monkeypatch.context() as patch:
        patch.setattr(KroneckerAccumulator, "_plan", lambda self, x: InputPlan(False, ((None, None),)))
        full = compute_curvature(model, batches, method="kfac")
    for a, b in zip(planned.blocks, full.blocks):
        assert isinstance(a, KroneckerBlock) and isinstance(b, KroneckerBlock)
        torch.testing.assert_close(a.input_factor, b.input_factor, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(a.output_factor, b.output_factor, rtol=1e-12, atol=1e-14)
    return planned


def test_kfac_skips_padding_only_columns_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(2)
    model = TinyMapNet().double().eval()
    x = torch.randn(6, 3, 2, 1, dtype=torch.float64)
    batches = [(x[:4], targets("classification", 4, 3)), (x[4:], targets("classification", 2, 3))]
    skipped = _same_as_one_product(model, batches, monkeypatch)
    # On the 2×1 map a 3×3 kernel's left and right columns only ever read padding.
    A = skipped.blocks[0].input_factor[:-1, :-1].reshape(3, 3, 3, 3, 3, 3)
    assert A[:, :, 0].abs().sum() == 0 and A[:, :, 1].abs().sum() > 0


def test_live_taps_are_found_from_the_geometry() -> None:
    from uncert_cli.curvature.conv_input import live_taps, tap_columns

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


class StrideOneNet(nn.Module):
    """Stride-1 convs on maps large enough for the shifted-map input factor: "same" 3×3 with bias
    called twice (the shared-module re-weighting), an unpadded rectangular one without bias, one
    padded more than its kernel needs and differently per dimension, a Conv1d, and a strided conv
    that keeps the patch path."""

    def __init__(self) -> None:
        super().__init__()
        self.same = nn.Conv2d(2, 3, 3, padding=1)
        self.rect = nn.Conv2d(3, 3, (3, 2), bias=False)
        self.wide = nn.Conv2d(3, 2, (2, 3), padding=(2, 1))
        self.strided = nn.Conv2d(2, 2, 3, stride=2, padding=1)
        self.line = nn.Conv1d(2, 2, 3, padding=1)
        self.head = nn.Linear(2 * 11, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.same(x)) * torch.tanh(self.same(0.5 * x))  # 12×13, two calls
        h = torch.tanh(self.rect(h))  # -> 10×12
        h = torch.tanh(self.wide(h))  # -> 13×12
        h = torch.tanh(self.strided(h))  # -> 7×6
        h = torch.tanh(self.line(h.flatten(2)))  # (B, 2, 42)
        return self.head(h[:, :, ::4].flatten(1))


def inputs_per_call(
    model: nn.Module, names: Sequence[str], batches: list[tuple[Tensor, Tensor]]
) -> dict[str, list[list[Tensor]]]:
    """The inputs of every call of the named modules, batch by batch."""
    seen: dict[str, list[list[Tensor]]] = {name: [] for name in names}
    handles = [
        model.get_submodule(name).register_forward_hook(lambda m, a, o, name=name: seen[name][-1].append(a[0].detach()))
        for name in names
    ]
    with torch.no_grad():
        for x, _ in batches:
            for calls in seen.values():
                calls.append([])
            model(x)
    for h in handles:
        h.remove()
    return seen


def _explicit_input_factor(conv: nn.Conv1d | nn.Conv2d, inputs: list[list[Tensor]]) -> Tensor:
    """``A = 1/N Σ_batches Σ_n (1/P) Σ_p a aᵀ`` with patches from ``F.unfold`` (calls as positions)."""
    total, n = None, 0
    for calls in inputs:
        rows = []
        for x in calls:
            if isinstance(conv, nn.Conv1d):
                size, pad, stride = (1, conv.kernel_size[0]), (0, conv.padding[0]), (1, conv.stride[0])
                patches = F.unfold(x.unsqueeze(2), size, (1, conv.dilation[0]), pad, stride)
            else:
                patches = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
            rows.append(patches.transpose(1, 2))  # (B, P, I)
        a = torch.cat(rows, 1)
        if conv.bias is not None:
            a = torch.cat([a, torch.ones(*a.shape[:2], 1, dtype=a.dtype)], 2)
        part = torch.einsum("bpi,bpj->ij", a, a) / a.shape[1]
        total = part if total is None else total + part
        n += a.shape[0]
    assert total is not None
    return total / n


def test_stride_one_input_factors_from_shifted_maps_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    from uncert_cli.curvature import kronecker
    from uncert_cli.curvature.blocks import KroneckerBlock

    torch.manual_seed(3)
    model = StrideOneNet().double().eval()
    x = torch.randn(7, 2, 12, 13, dtype=torch.float64)
    batches = [(x[:4], targets("classification", 4, 3)), (x[4:], targets("classification", 3, 3))]
    names = ("same", "rect", "wide", "line", "strided")
    seen = inputs_per_call(model, names, batches)  # for the explicit factors

    used: list[tuple[int, ...]] = []
    real = kronecker.add_shift_gram_

    def recording(acc: Tensor, image: Tensor, *rest):  # type: ignore[no-untyped-def]
        used.append(tuple(image.shape[1:]))
        return real(acc, image, *rest)

    monkeypatch.setattr(kronecker, "add_shift_gram_", recording)
    shifted = {b.module: b for b in compute_curvature(model, batches, method="kfac").blocks if isinstance(b, KroneckerBlock)}
    # The stride-1 convs took the shifted maps (the Conv1d as one row), the strided one its patches.
    assert set(used) == {(2, 12, 13), (3, 12, 13), (3, 10, 12), (2, 1, 42)}
    for name in names:
        expected = _explicit_input_factor(getattr(model, name), seen[name])
        torch.testing.assert_close(shifted[name].input_factor, expected, rtol=1e-10, atol=1e-12)
    monkeypatch.setattr(kronecker.KroneckerAccumulator, "_plan", lambda self, x: InputPlan(False, ((None, None),)))
    for block in compute_curvature(model, batches, method="kfac").blocks:
        if isinstance(block, KroneckerBlock):
            torch.testing.assert_close(shifted[block.module].input_factor, block.input_factor, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(shifted[block.module].output_factor, block.output_factor, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", ["tiny maps", "strided and dilated"])
def test_kfac_by_groups_of_positions_is_exact(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every conv's input factor from one product per group of output positions over the taps the
    group sees (forced, whatever the cost says) equals the single product over all patches."""
    from uncert_cli.curvature.blocks import KroneckerBlock
    from uncert_cli.curvature.conv_input import tap_classes
    from uncert_cli.curvature.kronecker import KroneckerAccumulator

    torch.manual_seed(4)
    model: nn.Module
    if case == "tiny maps":
        model, x = TinyMapNet().double().eval(), torch.randn(5, 3, 2, 1, dtype=torch.float64)
    else:
        model, x = ConvBatchNormNet().double().eval(), torch.randn(5, 2, 5, 5, dtype=torch.float64)
    batches = [(x[:3], targets("classification", 3, 3)), (x[3:], targets("classification", 2, 3))]
    groups_used: list[int] = []

    def grouped(self: KroneckerAccumulator, x: Tensor) -> InputPlan:
        conv = self.unit.module
        spatial = tuple(x.shape[-(conv.weight.dim() - 2) :])
        classes = tap_classes(conv, spatial)
        groups_used.append(len(classes))
        return InputPlan(False, tuple((positions, taps) for positions, taps in classes))

    monkeypatch.setattr(KroneckerAccumulator, "_plan", grouped)
    by_groups = compute_curvature(model, batches, method="kfac")
    assert max(groups_used) > 1
    monkeypatch.setattr(KroneckerAccumulator, "_plan", lambda self, x: InputPlan(False, ((None, None),)))
    whole = compute_curvature(model, batches, method="kfac")
    for a, b in zip(by_groups.blocks, whole.blocks):
        if isinstance(a, KroneckerBlock):
            assert isinstance(b, KroneckerBlock)
            torch.testing.assert_close(a.input_factor, b.input_factor, rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(a.output_factor, b.output_factor, rtol=1e-12, atol=1e-14)


def test_kfac_taps_that_are_no_range_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stride 3 over a 1-wide map padded by 5: only taps 2 and 5 of 7 see the input (no strided view
    of their block exists, so it is gathered and scattered)."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 3, (1, 7), stride=3, padding=(0, 5)), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 2, 3))
    model = model.double().eval()
    x = torch.randn(5, 2, 1, 1, dtype=torch.float64)
    batches = [(x[:3], targets("classification", 3, 3)), (x[3:], targets("classification", 2, 3))]
    skipped = _same_as_one_product(model, batches, monkeypatch)
    assert skipped.blocks[0].input_factor[:-1, :-1].reshape(2, 7, 2, 7)[:, [0, 1, 3, 4, 6]].abs().sum() == 0

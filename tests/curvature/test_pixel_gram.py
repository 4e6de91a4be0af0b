"""KFAC's input factor from the Gram matrix of whole input maps (``pixel_gram``), forced on every conv,
against the explicit float64 patch products (``F.unfold``) and against one patch product per call."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.curvature.test_curv_conv_paths import StrideOneNet, TinyMapNet, _explicit_input_factor, inputs_per_call
from tests.reference.models import targets
from uncert_cli.curvature import compute_curvature
from uncert_cli.curvature.blocks import KroneckerBlock
from uncert_cli.curvature.conv_input import InputPlan, input_plan
from uncert_cli.curvature.kronecker import KroneckerAccumulator
from uncert_cli.curvature.pixel_gram import fold_pixel_gram, pixel_selection


class TwoSizeNet(nn.Module):
    """A "same" conv and a strided, dilated one without bias, pooled: it takes inputs of any size."""

    def __init__(self) -> None:
        super().__init__()
        self.same = nn.Conv2d(2, 3, 3, padding=1)
        self.strided = nn.Conv2d(3, 3, 3, stride=2, padding=2, dilation=2, bias=False)
        self.head = nn.Linear(3, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.strided(torch.tanh(self.same(x))))
        return self.head(h.mean((2, 3)))


def _kfac(
    model: nn.Module, batches: list[tuple[Tensor, Tensor]], plan: InputPlan, monkeypatch: pytest.MonkeyPatch
) -> dict[str, KroneckerBlock]:
    with monkeypatch.context() as patch:
        patch.setattr(KroneckerAccumulator, "_plan", lambda self, x: plan)
        curvature = compute_curvature(model, batches, method="kfac")
    return {b.module: b for b in curvature.blocks if isinstance(b, KroneckerBlock)}


CASES = {
    # 1×1 and 2×1 maps, a dilated conv called twice (the shared-module re-weighting)
    "tiny maps": (TinyMapNet, [(4, 3, 2, 1), (2, 3, 2, 1)], ["conv1", "conv2"]),
    # stride-1 convs on larger maps (rectangular, over-padded, no bias, a Conv1d) and a strided one
    "larger maps": (StrideOneNet, [(3, 2, 12, 13), (2, 2, 12, 13)], ["same", "rect", "wide", "strided", "line"]),
    # two input sizes: two whole-map Gram sums for the same conv, each folded with its own selections
    "two sizes": (TwoSizeNet, [(3, 2, 4, 5), (2, 2, 3, 3)], ["same", "strided"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_whole_map_gram_gives_the_patch_input_factor(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make, shapes, names = CASES[case]
    torch.manual_seed(6)
    model = make().double().eval()
    batches = [(torch.randn(*shape, dtype=torch.float64), targets("classification", shape[0], 3)) for shape in shapes]
    pixels = _kfac(model, batches, InputPlan(False, (), pixels=True), monkeypatch)
    for name, inputs in inputs_per_call(model, names, batches).items():
        expected = _explicit_input_factor(model.get_submodule(name), inputs)
        torch.testing.assert_close(pixels[name].input_factor, expected, rtol=1e-10, atol=1e-12)
    patches = _kfac(model, batches, InputPlan(False, ((None, None),)), monkeypatch)
    for name, block in patches.items():
        torch.testing.assert_close(pixels[name].input_factor, block.input_factor, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(pixels[name].output_factor, block.output_factor, rtol=1e-12, atol=1e-14)


def test_taps_that_are_no_range_fold_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stride 3 over a 1-wide map padded by 5: only taps 2 and 5 of 7 see the input."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 3, (1, 7), stride=3, padding=(0, 5)), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 2, 3))
    model = model.double().eval()
    batches = [(torch.randn(3, 2, 1, 1, dtype=torch.float64), targets("classification", 3, 3))]
    pixels = _kfac(model, batches, InputPlan(False, (), pixels=True), monkeypatch)
    expected = _explicit_input_factor(model[0], inputs_per_call(model, ["0"], batches)["0"])
    torch.testing.assert_close(pixels["0"].input_factor, expected, rtol=1e-10, atol=1e-12)


def test_fold_reads_only_the_lower_triangle() -> None:
    """The whole-map Gram sum as ``gram_lower_`` leaves it (garbage above the diagonal) folds to the
    patch Gram matrix."""
    conv = nn.Conv2d(2, 3, 3, stride=1, padding=1)
    x = torch.randn(4, 2, 3, 2, dtype=torch.float64)
    rows = x.movedim(1, -1).reshape(4, -1)
    M = (rows.t() @ rows).tril() + torch.randn(12, 12, dtype=torch.float64).triu(1)
    taps, selection = pixel_selection(conv, (3, 2))
    u, v, tiles, sums = fold_pixel_gram(M, rows.sum(0), selection)
    T = selection.shape[1]
    grid = torch.zeros(T, T, 2, 2, dtype=torch.float64)
    grid.index_put_((u, v), tiles, accumulate=True)
    grid.index_put_((v, u), tiles.transpose(1, 2), accumulate=True)
    patches = F.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 18)  # columns: channel, then tap
    torch.testing.assert_close(grid.permute(2, 0, 3, 1).reshape(18, 18), patches.t() @ patches, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sums.reshape(-1), patches.sum(0), rtol=1e-12, atol=1e-12)


def test_small_maps_choose_the_whole_map_gram() -> None:
    def conv(channels: int, stride: int = 1) -> nn.Conv2d:
        return nn.Conv2d(channels, 8, 3, stride=stride, padding=1)

    # resnet18 at 32×32 inputs: layer2 (4×4), layer3 (2×2), layer4 (1×1) and the strided convs into them
    for channels, size, stride in [(128, 4, 1), (256, 2, 1), (512, 1, 1), (128, 4, 2), (256, 2, 2)]:
        assert input_plan(conv(channels, stride), (size, size)).pixels
    assert not input_plan(conv(64), (8, 8)).pixels  # layer1: shifted maps
    assert not input_plan(conv(64, 2), (8, 8)).pixels  # strided into layer2: patches, (64·64)² is too many
    assert not input_plan(nn.Conv2d(256, 8, 1, stride=2), (4, 4)).pixels  # a 1×1 conv: its patches are its input
    assert not input_plan(conv(1), (64, 64)).pixels  # too many pixel pairs to fold
    # A dilated conv on a 5×5 map: fewest multiply-adds, but (C·25)² numbers would be 7.7× the factor's
    # (C·9)², held for the whole pass
    assert not input_plan(nn.Conv2d(64, 8, 3, padding=2, dilation=2), (5, 5)).pixels


def test_the_memory_estimate_counts_the_whole_map_gram_sums() -> None:
    from uncert_cli.curvature.subset import select_units
    from uncert_cli.workflows.fit_memory import probe_forward

    model = TwoSizeNet()
    # On 2×2 inputs the "same" conv takes the whole-map Gram sum, (2 channels · 4 pixels)² numbers and
    # their sum; the strided one (a 1×1 output) its one live tap's patches.
    assert input_plan(model.same, (2, 2)).pixels and not input_plan(model.strided, (2, 2)).pixels
    probe = probe_forward(model, select_units(model, "all"), torch.zeros(1, 2, 2, 2))
    assert probe.pixel_sum_elements == 8 * 8 + 8

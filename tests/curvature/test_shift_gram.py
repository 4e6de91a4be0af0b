"""The shifted-map input factor of stride-1 convs against the explicit product of unfold patches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uncert_cli.curvature.conv_input import input_plan, tap_classes
from uncert_cli.curvature.shift_gram import add_shift_gram_


@pytest.mark.parametrize(
    ("channels", "size", "kernel", "padding"),
    [
        (3, (5, 6), (3, 3), (1, 1)),  # "same"
        (2, (4, 4), (3, 2), (0, 1)),  # rectangular kernel, unpadded rows
        (2, (7, 5), (5, 5), (2, 2)),
        (2, (3, 3), (3, 3), (2, 2)),  # more padding than the kernel needs: windows of padding only
        (2, (6, 6), (2, 3), (1, 0)),  # even kernel
        (3, (1, 9), (1, 3), (0, 1)),  # a Conv1d as one row
    ],
)
def test_shifted_maps_give_the_patch_gram_matrix(
    channels: int, size: tuple[int, int], kernel: tuple[int, int], padding: tuple[int, int]
) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, channels, *size, dtype=torch.float64, generator=gen)
    patches = F.unfold(x, kernel, padding=padding).transpose(1, 2).reshape(-1, channels * kernel[0] * kernel[1])
    # The factor is a block of a larger matrix (a layer with bias): the rest stays untouched.
    full = torch.full((patches.shape[1] + 1, patches.shape[1] + 1), 7.0, dtype=torch.float64)
    sums = add_shift_gram_(full[:-1, :-1], x, kernel, padding, alpha=0.5)
    torch.testing.assert_close(full[:-1, :-1] - 7.0, 0.5 * patches.t() @ patches, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sums, patches.sum(0), rtol=1e-12, atol=1e-12)
    assert torch.all(full[-1] == 7.0) and torch.all(full[:, -1] == 7.0)


def test_the_cheaper_form_is_chosen_by_the_map_size() -> None:
    def conv(channels: int, kernel: int = 3, padding: int = 1, stride: int = 1) -> nn.Conv2d:
        return nn.Conv2d(channels, 8, kernel, stride=stride, padding=padding)

    assert input_plan(conv(96), (32, 32)).shift  # All-CNN-C's first layers
    assert input_plan(conv(64), (8, 8)).shift  # resnet18's layer1 at 32×32 inputs
    assert not input_plan(conv(64, stride=2), (32, 32)).shift  # strided: patches
    assert input_plan(conv(64, kernel=1, padding=0), (32, 32)).parts == ((None, None),)  # 1×1: the input itself
    # Tiny maps: the whole maps' Gram matrix (test_pixel_gram.py).
    assert input_plan(conv(256), (2, 2)).pixels and input_plan(conv(512), (1, 1)).pixels
    assert input_plan(conv(64, padding=0), (32, 32)).shift  # unpadded: wider border strips, still cheaper
    # A strided conv on a large map: all positions in one product (border groups would cost more).
    assert input_plan(conv(3, kernel=7, padding=3, stride=2), (32, 32)).parts == ((None, None),)


def test_tap_classes_cover_every_position_with_its_own_taps() -> None:
    classes = tap_classes(nn.Conv2d(1, 1, 3, padding=1), (4, 4))
    assert len(classes) == 9  # first, inner and last rows × the same for columns
    assert ((0, 1), (0, 1)) in [positions for positions, _ in classes]
    assert dict(classes)[((0, 1), (0, 1))] == ((1, 2), (1, 2))  # the top-left corner sees 4 taps
    assert dict(classes)[((1, 3), (1, 3))] == ((0, 1, 2), (0, 1, 2))
    assert sum((p1 - p0) * (q1 - q0) for ((p0, p1), (q0, q1)), _ in classes) == 16

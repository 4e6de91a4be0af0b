"""The shifted-map input factor of stride-1 convs against the explicit product of unfold patches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uncert_cli.curvature.shift_gram import add_shift_gram_, prefers_shift_gram


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
    assert prefers_shift_gram(96, (32, 32), (3, 3), (1, 1))  # All-CNN-C's first layers
    assert prefers_shift_gram(64, (8, 8), (3, 3), (1, 1))  # resnet18's layer1 at 32×32 inputs
    assert not prefers_shift_gram(256, (2, 2), (3, 3), (1, 1))  # tiny maps: the patches win
    assert not prefers_shift_gram(64, (32, 32), (1, 1), (0, 0))  # a 1×1 conv's patches are its input

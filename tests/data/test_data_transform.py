"""convert_images / parse_size: channel and size conversion against closed forms, and every refusal."""

from __future__ import annotations

import pytest
import torch

from uncert_cli.data import ArrayDataset, adapt_to_model, convert_images, load_dataset, parse_size
from uncert_cli.data import transform
from uncert_cli.errors import UserError


def _dataset(inputs: torch.Tensor) -> ArrayDataset:
    """A classification set around ``inputs`` (N, ...) with all labels 0."""
    return ArrayDataset("imgs", inputs, torch.zeros(inputs.shape[0], dtype=torch.int64), "classification", 10, None)


def test_nothing_asked_or_nothing_to_do_returns_the_dataset_itself() -> None:
    ds = _dataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    assert convert_images(ds) is ds
    assert convert_images(ds, channels=1, size=(4, 4)) is ds


def test_luma_of_known_rgb_pixels_uint8_and_float() -> None:
    # pure red, green, blue, white and one mixed pixel; luma = 0.299 R + 0.587 G + 0.114 B
    rgb = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (10, 200, 40)]
    pixels = torch.tensor(rgb, dtype=torch.uint8).reshape(5, 3, 1, 1)
    gray = convert_images(_dataset(pixels), channels=1)
    expected = [round(0.299 * r + 0.587 * g + 0.114 * b) for r, g, b in rgb]  # 76, 150, 29, 255, 125
    assert gray.inputs.dtype == torch.uint8 and gray.inputs.shape == (5, 1, 1, 1)
    assert gray.inputs.flatten().tolist() == expected
    as_float = convert_images(_dataset(pixels.float() / 255), channels=1)
    assert as_float.inputs.dtype == torch.float32
    exact = torch.tensor([(0.299 * r + 0.587 * g + 0.114 * b) / 255 for r, g, b in rgb])
    assert torch.allclose(as_float.inputs.flatten(), exact, atol=1e-6)


def test_gray_to_rgb_repeats_the_channel() -> None:
    gray = torch.randint(0, 256, (3, 1, 5, 4), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    rgb = convert_images(_dataset(gray), channels=3)
    assert rgb.inputs.shape == (3, 3, 5, 4) and rgb.inputs.dtype == torch.uint8
    for channel in range(3):
        assert torch.equal(rgb.inputs[:, channel], gray[:, 0])


def test_constant_images_stay_constant_under_resize() -> None:
    values = torch.tensor([0, 7, 128, 255], dtype=torch.uint8)
    images = values.reshape(4, 1, 1, 1).expand(4, 3, 16, 16).contiguous()
    for size in ((8, 8), (5, 11), (30, 21)):  # down, mixed, up
        out = convert_images(_dataset(images), size=size)
        assert out.inputs.shape == (4, 3, *size) and out.inputs.dtype == torch.uint8
        assert torch.equal(out.inputs, values.reshape(4, 1, 1, 1).expand(4, 3, *size))
    floats = torch.full((2, 1, 9, 9), -2.5)
    out = convert_images(_dataset(floats), size=(4, 3))
    assert out.inputs.dtype == torch.float32 and torch.allclose(out.inputs, torch.full((2, 1, 4, 3), -2.5))


def test_antialiased_downsampling_closed_forms() -> None:
    floats = torch.tensor([[1.0, 2.0], [3.0, 10.0]]).reshape(1, 1, 2, 2)
    assert convert_images(_dataset(floats), size=(1, 1)).inputs.item() == pytest.approx(4.0)
    pixels = torch.tensor([[0, 255], [255, 255]], dtype=torch.uint8).reshape(1, 1, 2, 2)
    assert convert_images(_dataset(pixels), size=(1, 1)).inputs.item() == round(3 * 255 / 4)  # 191.25 → 191
    # 4x4 → 2x2: a tent of radius 2 input pixels (the scale) around output centres 1.0 and 3.0 weighs
    # input centres 0.5, 1.5, 2.5, 3.5 by 1 - |d|/2, renormalised: rows (3, 3, 1, 0)/7 and (0, 1, 3, 3)/7
    block = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    tent = torch.tensor([[3.0, 3.0, 1.0, 0.0], [0.0, 1.0, 3.0, 3.0]]) / 7
    out = convert_images(_dataset(block.reshape(1, 1, 4, 4)), size=(2, 2)).inputs[0, 0]
    assert torch.allclose(out, tent @ block @ tent.T, atol=1e-5)


def test_uint8_range_is_kept_and_float_scale_matches() -> None:
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (6, 3, 13, 17), generator=generator).to(torch.uint8)
    pixels[0] = 255  # extremes must survive rounding/clamping
    pixels[1] = 0
    out = convert_images(_dataset(pixels), channels=1, size=(7, 9))
    assert out.inputs.dtype == torch.uint8 and out.inputs.shape == (6, 1, 7, 9)
    assert bool((out.inputs[0] == 255).all()) and bool((out.inputs[1] == 0).all())
    # the same conversion on pixel/255 floats agrees with uint8 up to the rounding (half a step)
    as_float = convert_images(_dataset(pixels.float() / 255), channels=1, size=(7, 9)).inputs
    assert (as_float * 255 - out.inputs.float()).abs().max() <= 0.5 + 1e-3
    assert float(as_float.min()) >= 0.0 and float(as_float.max()) <= 1.0 + 1e-6


def test_chunks_give_the_same_result_as_one_pass(monkeypatch) -> None:
    pixels = torch.randint(0, 256, (10, 3, 6, 6), generator=torch.Generator().manual_seed(2)).to(torch.uint8)
    whole = convert_images(_dataset(pixels), channels=1, size=(3, 4)).inputs
    monkeypatch.setattr(transform, "CHUNK_ELEMENTS", 3 * 6 * 6 * 3)  # three examples per chunk, last one short
    assert torch.equal(convert_images(_dataset(pixels), channels=1, size=(3, 4)).inputs, whole)


def test_converted_set_is_not_the_original_and_keeps_targets() -> None:
    pixels = torch.full((2, 3, 4, 4), 200, dtype=torch.uint8)
    ds = _dataset(pixels)
    out = convert_images(ds, channels=1)
    assert out.targets is ds.targets and out.name == ds.name and out.num_classes == 10
    assert torch.equal(pixels, torch.full((2, 3, 4, 4), 200, dtype=torch.uint8))


def test_digits_resized_to_mnist_shape_then_adapted() -> None:
    digits = load_dataset("digits", split="test")  # genuine 8x8 uint8 images
    big = convert_images(digits, size=(28, 28))
    adapted = adapt_to_model(big, (784,))
    assert adapted.inputs.shape == (len(digits), 784) and float(adapted.inputs.max()) <= 1.0


@pytest.mark.parametrize(
    "inputs, kwargs, message",
    [
        (torch.zeros(3, 64), {"size": (8, 8)}, r"shape \(64,\), not images .*drop them"),
        (torch.zeros(3, 1, 8, 8), {"size": (0, 8)}, "two positive sizes H,W, got 0,8"),
        (torch.zeros(3, 1, 8, 8), {"size": (8, -2)}, "two positive sizes H,W, got 8,-2"),
        (torch.zeros(3, 4, 8, 8), {"channels": 1}, "4 channels; grayscale and channels convert only RGB"),
        (torch.zeros(3, 2, 8, 8), {"channels": 3}, "2 channels"),
        (torch.zeros(3, 3, 8, 8), {"channels": 2}, "1 or 3 channels, not 2"),
    ],
)
def test_refusals_are_one_line_user_errors(inputs, kwargs, message) -> None:
    with pytest.raises(UserError, match=message) as caught:
        convert_images(_dataset(inputs), **kwargs)
    assert "\n" not in str(caught.value)


def test_four_channel_images_can_still_be_resized() -> None:
    out = convert_images(_dataset(torch.full((1, 4, 4, 4), 3.0)), size=(2, 2))
    assert out.inputs.shape == (1, 4, 2, 2) and torch.allclose(out.inputs, torch.full((1, 4, 2, 2), 3.0))


def test_parse_size() -> None:
    assert parse_size(None) is None
    assert parse_size("28,28") == (28, 28)
    assert parse_size(" 16 , 9 ") == (16, 9)
    for bad in ("28", "28x28", "a,b", "1,2,3", "", "2.5,3"):
        with pytest.raises(UserError, match="^resize takes H,W") as caught:
            parse_size(bad)
        assert caught.value.param == "resize"  # the CLI shows it as --resize
    for bad in ("0,28", "28,-1"):
        with pytest.raises(UserError, match="^resize needs two positive sizes"):
            parse_size(bad)

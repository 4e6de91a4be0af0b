"""adapt_to_model: reshape, normalisation, and every refusal as a one-line UserError."""

from __future__ import annotations

import pytest
import torch

from uncert_cli.data import ArrayDataset, adapt_to_model
from uncert_cli.errors import UserError


def _images(n: int = 4, channels: int = 1, side: int = 28, labels: list[int] | None = None) -> ArrayDataset:
    pixels = torch.arange(n * channels * side * side, dtype=torch.int64).remainder(256).to(torch.uint8)
    targets = torch.tensor(labels if labels is not None else [i % 10 for i in range(n)], dtype=torch.int64)
    return ArrayDataset("imgs", pixels.reshape(n, channels, side, side), targets, "classification", 10, None)


def _regression(inputs: torch.Tensor, targets: torch.Tensor) -> ArrayDataset:
    return ArrayDataset("reg", inputs, targets, "regression")


def test_reshape_to_flat_and_scale_uint8() -> None:
    ds = _images()
    adapted = adapt_to_model(ds, (784,))
    assert adapted.inputs.dtype == torch.float32 and adapted.inputs.shape == (4, 784)
    assert torch.allclose(adapted.inputs, ds.inputs.reshape(4, 784).float() / 255)
    assert adapted.targets is ds.targets and adapted.name == "imgs"


def test_normalize_single_and_per_channel() -> None:
    gray = adapt_to_model(_images(), (1, 28, 28), normalize=([0.5], [0.25]))
    assert torch.allclose(gray.inputs, (_images().inputs.float() / 255 - 0.5) / 0.25)
    rgb = _images(channels=3, side=2)
    per_channel = adapt_to_model(rgb, None, normalize=([0.0, 0.5, 1.0], [1.0, 2.0, 4.0]))
    expected = rgb.inputs.float() / 255
    expected = (expected - torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)) / torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1)
    assert torch.allclose(per_channel.inputs, expected)
    with pytest.raises(UserError, match="2 means and 2 stds but dataset 'imgs' has 3 channels"):
        adapt_to_model(rgb, None, normalize=([0.1, 0.2], [0.3, 0.4]))


def test_normalizing_float_inputs_leaves_the_original_alone() -> None:
    inputs = torch.ones(3, 2)
    ds = _regression(inputs, torch.zeros(3, 1))
    adapt_to_model(ds, None, normalize=([1.0], [2.0]))
    assert torch.equal(inputs, torch.ones(3, 2))


def test_shape_mismatch_names_both_shapes_and_suggests_conversion() -> None:
    cifar_like = _images(channels=3, side=32)
    with pytest.raises(UserError) as caught:
        adapt_to_model(cifar_like, (1, 28, 28), convertible=True)
    message = str(caught.value)
    assert "(3, 32, 32)" in message and "(1, 28, 28)" in message and "\n" not in message
    # A Python caller reads the parameters (ImageConversion's channels, the resize), never a flag.
    assert "channels 1 resize 28,28" in message and "--" not in message
    assert caught.value.params == ("channels", "resize")
    with pytest.raises(UserError, match=r"expects \(784\).*channels 1 resize 28,28"):
        adapt_to_model(cifar_like, (784,), convertible=True)
    with pytest.raises(UserError, match="resize 28,28") as size_only:
        adapt_to_model(_images(side=32), (1, 28, 28), convertible=True)
    assert "channels" not in str(size_only.value) and size_only.value.params == ("resize",)
    # Where the caller has no conversion options, the hint is the model's own dataset.
    with pytest.raises(UserError, match="trained on") as plain:
        adapt_to_model(cifar_like, (1, 28, 28))
    assert "resize" not in str(plain.value) and "(3, 32, 32)" in str(plain.value)


def test_labels_out_of_range_of_the_model_outputs() -> None:
    ds = _images(labels=[0, 3, 25, 1])
    with pytest.raises(UserError, match="labels up to 25 but the model has only 10 outputs"):
        adapt_to_model(ds, None, num_outputs=10)
    assert len(adapt_to_model(ds, None, num_outputs=None)) == 4  # OOD use: labels unchecked


def test_task_mismatch_both_ways() -> None:
    with pytest.raises(UserError, match="float targets .regression. but the model is a classifier"):
        adapt_to_model(_regression(torch.zeros(2, 1), torch.zeros(2, 2)), None, task="classification")
    with pytest.raises(UserError, match="float labels that are not class indices .0.5 at index 0."):
        adapt_to_model(_regression(torch.zeros(2, 1), torch.tensor([[0.5], [1.0]])), None, task="classification")
    # One column of whole numbers: class labels stored as floats
    labels = adapt_to_model(_regression(torch.zeros(3, 1), torch.tensor([[0.0], [2.0], [1.0]])), None,
                            num_outputs=3, task="classification")
    assert labels.task == "classification" and labels.num_classes == 3 and labels.targets.tolist() == [0, 2, 1]
    with pytest.raises(UserError, match="integer class labels but the model does regression"):
        adapt_to_model(_images(), None, task="regression")
    with pytest.raises(UserError, match="2-dimensional targets but the model has 1 outputs"):
        adapt_to_model(_regression(torch.zeros(2, 1), torch.zeros(2, 2)), None, num_outputs=1, task="regression")


def test_nan_and_inf_are_refused() -> None:
    bad_inputs = torch.zeros(5, 2)
    bad_inputs[3, 1] = float("nan")
    with pytest.raises(UserError, match="NaN or inf inputs in 1 example.*index 3"):
        adapt_to_model(_regression(bad_inputs, torch.zeros(5, 1)), None)
    bad_targets = torch.zeros(5, 1)
    bad_targets[0, 0] = float("inf")
    with pytest.raises(UserError, match="NaN or inf targets.*index 0"):
        adapt_to_model(_regression(torch.zeros(5, 2), bad_targets), None)


def test_empty_dataset_is_refused() -> None:
    empty = ArrayDataset("none", torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), "classification", 2, None)
    with pytest.raises(UserError, match="dataset 'none' is empty"):
        adapt_to_model(empty, (3,))

"""What a model's own layers say about its input and output sizes, when its metadata does not.

A state dict loaded with an ``arch`` (``uncert info``) knows no input shape and no class count
from metadata; the first and last parametrised layers usually do (a Linear's ``in_features``, a
conv's ``in_channels``, the head's ``out_features``). These are hints, labelled as such.
"""

from __future__ import annotations

from torch import nn

__all__ = ["input_hint", "output_hint"]


def _parametrised(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None]


def input_hint(model: nn.Module) -> str | None:
    """``"64 features"``, ``"3 channels × H × W"`` or ``"token ids < 1000"`` from the first
    parametrised module in registration order (``None`` when it says nothing about the input).
    """
    layers = _parametrised(model)
    if not layers:
        return None
    name, first = layers[0]
    if isinstance(first, nn.Linear):
        return f"{first.in_features} features (first layer {name})"
    if isinstance(first, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        dims = " × ".join("HWD"[: first.weight.dim() - 2]) if first.weight.dim() > 3 else "L"
        return f"{first.in_channels} channels × {dims} (first layer {name})"
    if isinstance(first, nn.Embedding):
        return f"token ids < {first.num_embeddings} (first layer {name})"
    return None


def output_hint(model: nn.Module) -> int | None:
    """``out_features`` of the last parametrised module when it is a Linear (the usual head)."""
    layers = _parametrised(model)
    if layers and isinstance(layers[-1][1], nn.Linear):
        return int(layers[-1][1].out_features)
    return None

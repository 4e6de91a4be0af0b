"""Which modules hold parameters, and which curvature structure uncert uses for each."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["LayerInfo", "describe_layers", "KRONECKER_TYPES"]

#: Layers whose weight acts as a matrix on (unfolded) inputs, so KFAC's Kronecker factors apply.
KRONECKER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass
class LayerInfo:
    """One parameter-holding module.

    ``name`` is its dotted path in the model (``""`` for parameters held by the root module
    itself), ``type`` its class name, ``params`` the number of parameters it owns (not counting
    children, nor parameters already owned by an earlier module), and ``structure`` is
    ``"kronecker"`` or ``"diagonal"``.
    """

    name: str
    type: str
    params: int
    structure: str


def describe_layers(module: nn.Module) -> list[LayerInfo]:
    """Modules with direct (``recurse=False``) parameters, in definition order.

    A parameter shared by several modules (tied weights) is counted at its first owner only,
    so the counts add up to ``sum(p.numel() for p in module.parameters())``.
    """
    seen: set[int] = set()
    layers: list[LayerInfo] = []
    for name, sub in module.named_modules():
        own = [p for p in sub.parameters(recurse=False) if id(p) not in seen]
        if not own:
            continue
        seen.update(id(p) for p in own)
        structure = "kronecker" if isinstance(sub, KRONECKER_TYPES) else "diagonal"
        layers.append(LayerInfo(name, type(sub).__name__, sum(p.numel() for p in own), structure))
    return layers

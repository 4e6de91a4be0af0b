"""Which modules hold parameters, and which curvature structure uncert uses for each."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.utils.parametrize import is_parametrized

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
    #: the block's name when this module shares parameters with others (tied weights: "a+b")
    tied_block: str | None = None
    #: parameters of this module with requires_grad=False (no posterior unless ``include_frozen``)
    frozen_params: int = 0


def describe_layers(module: nn.Module) -> list[LayerInfo]:
    """Modules with direct (``recurse=False``) parameters, in definition order.

    A parameter shared by several modules (tied weights) is counted at its first owner only,
    so the counts add up to ``sum(p.numel() for p in module.parameters())``; the modules that
    share it form one diagonal block (``tied_block``), as ``uncert fit`` computes it.
    """
    from uncert_cli.curvature.subset import discover_units  # the fit's own grouping

    tied = {m.name: u.name for u in discover_units(module, include_frozen=True) for m in u.members}
    seen: set[int] = set()
    layers: list[LayerInfo] = []
    for name, sub in module.named_modules():
        # A parametrized module (weight_norm, spectral_norm) owns its parametrizations' parameters: one diagonal block
        parametrized = is_parametrized(sub)
        own = [p for p in sub.parameters(recurse=parametrized) if id(p) not in seen]
        if not own:
            continue
        seen.update(id(p) for p in own)
        kronecker = isinstance(sub, KRONECKER_TYPES) and name not in tied and not parametrized
        structure = "kronecker" if kronecker else "diagonal"
        frozen = sum(p.numel() for p in own if not p.requires_grad)
        layers.append(
            LayerInfo(name, type(sub).__name__, sum(p.numel() for p in own), structure, tied.get(name), frozen)
        )
    return layers

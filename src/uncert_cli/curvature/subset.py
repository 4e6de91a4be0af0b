"""Which modules get a curvature block ("units"), how each is structured, and ``--subset`` parsing.

A *unit* is a module that owns parameters directly (``module.parameters(recurse=False)``). The one
exception is :class:`torch.nn.MultiheadAttention`: its ``out_proj`` Linear is never *called* (the
attention forward uses ``out_proj.weight`` functionally), so the attention module owns all of its
parameters, ``out_proj``'s included, and ``out_proj`` is not a unit of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from uncert_cli.errors import UserError

Structure = Literal["kronecker", "diagonal"]


def _conv_padding(module: nn.Conv1d | nn.Conv2d) -> tuple[int, ...] | None:
    """Symmetric integer padding of a conv (``None`` if string padding would be asymmetric)."""
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return (0,) * len(module.kernel_size)
        pads = []
        for k, d in zip(module.kernel_size, module.dilation):
            total = d * (k - 1)
            if total % 2:
                return None
            pads.append(total // 2)
        return tuple(pads)
    return tuple(module.padding)


def supported_structure(module: nn.Module) -> Structure | None:
    """``"kronecker"`` for modules the engine factorises, ``"diagonal"`` for other modules with
    direct parameters, ``None`` for modules without direct parameters.

    Kronecker: ``nn.Linear`` (any leading dimensions) and ``nn.Conv1d``/``nn.Conv2d`` with
    ``groups=1``, zero padding mode and symmetric padding (dilation and stride are fine: patches
    come from ``F.unfold``). Grouped/depthwise convs, Conv3d, transposed convs, norms, embeddings
    and attention get a diagonal block.
    """
    if isinstance(module, nn.MultiheadAttention):
        return "diagonal"
    if next(module.parameters(recurse=False), None) is None:
        return None
    if isinstance(module, nn.Linear):
        return "kronecker"
    if type(module) in (nn.Conv1d, nn.Conv2d):
        if module.groups == 1 and module.padding_mode == "zeros" and _conv_padding(module) is not None:
            return "kronecker"
    return "diagonal"


@dataclass
class Unit:
    """One module that gets one block; ``params`` are named relative to the model."""

    name: str
    module: nn.Module
    param_names: tuple[str, ...]  # full names ("fc1.weight"), weight first for Linear/Conv
    local_names: tuple[str, ...]  # names relative to ``module`` ("weight", "out_proj.weight")
    params: tuple[Tensor, ...]
    structure: Structure

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.params)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def discover_units(model: nn.Module) -> list[Unit]:
    """All units of ``model`` in module registration order."""
    units: list[Unit] = []
    absorbed: set[str] = set()
    for name, module in model.named_modules():
        if any(name == a or name.startswith(a + ".") for a in absorbed):
            continue
        structure = supported_structure(module)
        if structure is None:
            continue
        if isinstance(module, nn.MultiheadAttention):
            named = list(module.named_parameters())
            absorbed.add(name)
        else:
            named = list(module.named_parameters(recurse=False))
            # Weight first, bias second: the W_aug = [W | b] convention of blocks.py.
            order = {"weight": 0, "bias": 1}
            named.sort(key=lambda kv: order.get(kv[0], 2))
        if structure == "kronecker" and [n for n, _ in named] not in (["weight"], ["weight", "bias"]):
            structure = "diagonal"
        units.append(
            Unit(
                name=name,
                module=module,
                param_names=tuple(_join(name, n) for n, _ in named),
                local_names=tuple(n for n, _ in named),
                params=tuple(p for _, p in named),
                structure=structure,
            )
        )
    return units


def forward_call_order(model: nn.Module, units: list[Unit], example_input: Tensor) -> list[Unit]:
    """Units in the order their modules are first called by ``model(example_input)``."""
    order: list[int] = []
    handles = []
    for i, unit in enumerate(units):

        def hook(_m: nn.Module, _a: object, _o: object, i: int = i) -> None:
            if i not in order:
                order.append(i)

        handles.append(unit.module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    return [units[i] for i in order]


def select_units(
    model: nn.Module, subset: str, example_input: Tensor | None = None
) -> list[Unit]:
    """Resolve ``subset`` (``"all"``, ``"last-layer"`` or comma-separated module names).

    ``"last-layer"`` is the last unit in forward call order; that needs ``example_input`` (one
    probe forward under ``no_grad``). Without it, registration order is used as a proxy.
    """
    units = discover_units(model)
    if not units:
        raise UserError("the model has no parameters; there is nothing to fit a Laplace approximation to")
    spec = subset.strip()
    if spec == "all":
        return units
    if spec == "last-layer":
        ordered = forward_call_order(model, units, example_input) if example_input is not None else units
        if not ordered:
            raise UserError("no module with parameters was called by the model's forward; check the model")
        return [ordered[-1]]
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    by_name = {u.name: u for u in units}
    unknown = [w for w in wanted if w not in by_name]
    if unknown or not wanted:
        available = ", ".join(u.name or "<root>" for u in units)
        raise UserError(
            f"unknown module(s) in --subset: {', '.join(unknown) or subset!r}; "
            f"use 'all', 'last-layer' or a comma-separated list of: {available}"
        )
    chosen = set(wanted)
    return [u for u in units if u.name in chosen]

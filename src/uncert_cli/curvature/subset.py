"""Which modules get a curvature block ("units"), how each is structured, and ``--subset`` parsing.

A *unit* is a module that owns parameters directly (``module.parameters(recurse=False)``). The one
exception is :class:`torch.nn.MultiheadAttention`: its ``out_proj`` Linear is never *called* (the
attention forward uses ``out_proj.weight`` functionally), so the attention module owns all of its
parameters, ``out_proj``'s included, and ``out_proj`` is not a unit of its own.

Tied weights (``b.weight = a.weight``): modules that share a parameter tensor form *one* unit, named
``a+b``, whose parameters are the union of theirs, each tensor once under its first name (the name
``model.named_parameters()`` gives it). Its curvature must be that of the shared tensor, i.e. of the
sum of its uses, which a Kronecker factor of one module cannot express, so such a unit is always
diagonal (exact: per-example gradients of every use are summed before squaring).

Frozen parameters (``requires_grad=False``) are left out unless ``include_frozen``: a posterior
over weights that training never moved would say nothing about what the data determined.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrize import is_parametrized

from uncert_cli.core.errors import UserError

Structure = Literal["kronecker", "diagonal"]


def conv_padding(module: nn.Conv1d | nn.Conv2d | nn.Conv3d) -> tuple[int, ...] | None:
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
    are strided views of the padded input). Grouped/depthwise convs, Conv3d, transposed convs, norms, embeddings
    and attention get a diagonal block.
    """
    if isinstance(module, nn.MultiheadAttention):
        return "diagonal"
    if next(module.parameters(recurse=False), None) is None:
        return None
    if isinstance(module, nn.Linear):
        return "kronecker"
    if type(module) in (nn.Conv1d, nn.Conv2d):
        conv = cast(nn.Conv1d | nn.Conv2d, module)
        if conv.groups == 1 and conv.padding_mode == "zeros" and conv_padding(conv) is not None:
            return "kronecker"
    return "diagonal"


@dataclass
class Member:
    """One module of a tied unit: its path, its parameters' names relative to it, and the
    positions of those parameters in the unit's ``params``.
    """

    name: str
    module: nn.Module
    local_names: tuple[str, ...]
    slots: tuple[int, ...]


@dataclass
class Unit:
    """One module that gets one block; ``params`` are named relative to the model.

    A tied unit (modules sharing a parameter) lists its modules in ``members``; ``module`` is then
    the first of them and ``local_names`` are not used.
    """

    name: str
    module: nn.Module
    param_names: tuple[str, ...]  # full names ("fc1.weight"), weight first for Linear/Conv
    local_names: tuple[str, ...]  # names relative to ``module`` ("weight", "out_proj.weight")
    params: tuple[Tensor, ...]
    structure: Structure
    members: tuple[Member, ...] = ()

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def modules(self) -> tuple[nn.Module, ...]:
        """Every module whose calls feed this unit's curvature."""
        return tuple(m.module for m in self.members) if self.members else (self.module,)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def discover_units(model: nn.Module, include_frozen: bool = False) -> list[Unit]:
    """All units of ``model`` in module registration order (tied modules merged into one unit,
    frozen parameters left out unless ``include_frozen``).
    """
    units: list[Unit] = []
    absorbed: set[str] = set()
    for name, module in model.named_modules():
        if any(name == a or name.startswith(a + ".") for a in absorbed):
            continue
        structure = supported_structure(module)
        if is_parametrized(module):
            # weight_norm / spectral_norm: the weight is computed from the parametrization's own parameters
            # (``parametrizations.weight.original0``, ...), which have no per-example output of their own.
            # The module is one unit over all of them, differentiated through the parametrization, with
            # the exact diagonal of the generic path.
            named = list(module.named_parameters())
            absorbed.add(name)
            structure = "diagonal"
        elif structure is None:
            continue
        elif isinstance(module, nn.MultiheadAttention):
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
    return _without_frozen(_merge_tied(units)) if not include_frozen else _merge_tied(units)


def _merge_tied(units: list[Unit]) -> list[Unit]:
    """Merge units that share a parameter tensor (transitively) into one diagonal unit, placed where its first module was."""
    group_of = list(range(len(units)))  # union-find over units

    def root(i: int) -> int:
        while group_of[i] != i:
            group_of[i] = group_of[group_of[i]]
            i = group_of[i]
        return i

    owner: dict[int, int] = {}
    for i, u in enumerate(units):
        for p in u.params:
            j = owner.setdefault(id(p), i)
            group_of[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(units)):
        groups.setdefault(root(i), []).append(i)
    merged: list[Unit] = []
    for i, u in enumerate(units):
        members = groups[root(i)]
        if len(members) == 1:
            merged.append(u)
        elif members[0] == i:
            merged.append(_tied_unit([units[j] for j in members]))
    return merged


def _tied_unit(parts: list[Unit]) -> Unit:
    names: list[str] = []
    params: list[Tensor] = []
    slot_of: dict[int, int] = {}
    members = []
    for u in parts:
        slots = []
        for n, p in zip(u.param_names, u.params):
            if id(p) not in slot_of:
                slot_of[id(p)] = len(params)
                params.append(p)
                names.append(n)
            slots.append(slot_of[id(p)])
        members.append(Member(u.name, u.module, u.local_names, tuple(slots)))
    return Unit(
        name="+".join(u.name for u in parts), module=parts[0].module, param_names=tuple(names),
        local_names=tuple(names), params=tuple(params), structure="diagonal", members=tuple(members),
    )


def _without_frozen(units: list[Unit]) -> list[Unit]:
    """Units restricted to their trainable parameters; a unit with some frozen parameters keeps
    the others in a diagonal block (a Kronecker block needs the whole ``[W | b]``).
    """
    kept: list[Unit] = []
    for u in units:
        live = [i for i, p in enumerate(u.params) if p.requires_grad]
        if len(live) == len(u.params):
            kept.append(u)
        elif live:
            keep = set(live)
            members = tuple(
                Member(m.name, m.module, tuple(n for n, s in zip(m.local_names, m.slots) if s in keep),
                       tuple(live.index(s) for s in m.slots if s in keep))
                for m in u.members
            )
            kept.append(Unit(
                name=u.name, module=u.module, param_names=tuple(u.param_names[i] for i in live),
                local_names=tuple(u.local_names[i] for i in live), params=tuple(u.params[i] for i in live),
                structure="diagonal", members=tuple(m for m in members if m.slots),
            ))
    return kept


def frozen_parameters(model: nn.Module) -> list[str]:
    """Names of the model's parameters with ``requires_grad=False`` (each tensor once)."""
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def forward_call_order(model: nn.Module, units: list[Unit], example_input: Tensor) -> list[Unit]:
    """Units in the order their modules are first called by ``model(example_input)``."""
    order: list[int] = []
    handles: list[torch.utils.hooks.RemovableHandle] = []
    for i, unit in enumerate(units):

        def hook(_m: nn.Module, _a: object, _o: object, i: int = i) -> None:
            if i not in order:
                order.append(i)

        handles.extend(m.register_forward_hook(hook) for m in unit.modules)
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    return [units[i] for i in order]


def select_units(
    model: nn.Module, subset: str, example_input: Tensor | None = None, include_frozen: bool = False
) -> list[Unit]:
    """Resolve ``subset`` (``"all"``, ``"last-layer"`` or comma-separated module names and glob patterns).

    A pattern (``classifier.*``, ``layers.1*``; :func:`fnmatch.fnmatchcase`, so ``*`` also crosses dots)
    selects every unit whose name, module names or parameter names it matches; one matching nothing is
    an error listing module names.

    ``"last-layer"`` is the last unit in forward call order; that needs ``example_input`` (one
    probe forward under ``no_grad``). Without it, registration order is used as a proxy. A tied
    unit is chosen by its joint name (``a+b``) or by the name of any of its modules.
    """
    units = discover_units(model, include_frozen)
    if not units:
        if not include_frozen and discover_units(model, True):
            raise UserError(
                "every parameter of the model is frozen (requires_grad=False); pass {param} "
                "to fit a Laplace approximation to them anyway",
                param="include_frozen",
            )
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
    by_name.update({m.name: u for u in units for m in u.members})
    chosen: set[str] = set()
    unknown: list[str] = []
    for item in wanted:
        if is_pattern(item):
            matched = [u.name for u in units if _unit_matches(u, item)]
            if not matched:
                raise UserError(
                    f"the {{param}} pattern {item!r} matches no module with parameters; "
                    f"the model's are: {_some_names(units)}",
                    param="subset",
                )
            chosen.update(matched)
        elif item in by_name:
            chosen.add(by_name[item].name)
        else:
            unknown.append(item)
    if unknown or not wanted:
        raise UserError(
            f"unknown module(s) in {{param}}: {', '.join(unknown) or subset!r}; "
            f"use 'all', 'last-layer', a comma-separated list of module names or glob patterns "
            f"('fc*', 'classifier.*'): {_some_names(units)}",
            param="subset",
        )
    return [u for u in units if u.name in chosen]


# How many module names an error about --subset lists before it says how many more there are.
_SHOWN_NAMES = 12
_GLOB_CHARACTERS = frozenset("*?[")


def is_pattern(item: str) -> bool:
    """True when a ``--subset`` item is a glob pattern (holds ``*``, ``?`` or ``[``)."""
    return not _GLOB_CHARACTERS.isdisjoint(item)


def _unit_matches(unit: Unit, pattern: str) -> bool:
    """A glob matches a unit when it matches the unit's name, one of its modules' names, or one of its
    parameters' names, so that ``classifier.*`` takes a Linear called ``classifier`` (through
    ``classifier.weight``) as well as the modules inside a ``classifier`` container.
    """
    names = (unit.name, *(m.name for m in unit.members), *unit.param_names)
    return any(fnmatch.fnmatchcase(name, pattern) for name in names)


def _some_names(units: list[Unit]) -> str:
    """The first :data:`_SHOWN_NAMES` unit names, and how many more there are."""
    names = [u.name or "<root>" for u in units]
    more = f" (+{len(names) - _SHOWN_NAMES} more)" if len(names) > _SHOWN_NAMES else ""
    return ", ".join(names[:_SHOWN_NAMES]) + more

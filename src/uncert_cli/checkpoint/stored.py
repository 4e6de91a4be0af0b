"""A network rebuilt from its stored weights alone: a module tree that holds tensors but no code.

The commands that only do arithmetic on a posterior (``report``, ``tune --objective marglik``,
``prune -o``) need the parameters' names, shapes and values, and for the report the kind of layer
each belongs to (``linear``, ``conv``, ``batchnorm2d``, ...), never the network's ``forward``. A
factor file fitted on a user's own class can therefore be answered without importing that class:
:func:`module_from_weights` lays the stored state dict out as nested :class:`StoredModule` nodes,
parameters as ``nn.Parameter`` and everything else as buffers, so that ``named_parameters()``,
``state_dict()``, ``load_state_dict()`` and the weight fingerprint behave as on the real module.
Running it is a :class:`UserError` naming the ``arch`` parameter (``--arch`` on the command line).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from torch import Tensor, nn

from uncert_cli.core.errors import UserError

__all__ = ["StoredModule", "module_from_weights", "module_kind", "module_kinds", "NEEDS_ARCH"]

NEEDS_ARCH = (
    "this step runs the network, and the factor file holds only its weights: name its class with "
    "{param} path/to/file.py:Class (and {arch_kwargs} as at fit)"
)
# Buffers every uncert-known norm layer keeps next to its parameters (used only for files that do not
# record their parameter names, written before they did).
_KNOWN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class StoredModule(nn.Module):
    """One node of a module tree rebuilt from a state dict; ``kind`` is what the report calls it."""

    def __init__(self, kind: str = "unknown") -> None:
        super().__init__()
        self._uncert_kind = kind

    def forward(self, *args: object, **kwargs: object) -> Tensor:
        raise UserError(NEEDS_ARCH, param="arch", mentions=("arch_kwargs",))


def module_kind(module: nn.Module | None) -> str:
    """What a report calls a layer: ``linear``, ``conv``, else its class name in lower case."""
    if isinstance(module, StoredModule):
        return module._uncert_kind
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    return type(module).__name__.lower() if module is not None else "unknown"


def module_kinds(model: nn.Module) -> dict[str, str]:
    """:func:`module_kind` of every module that owns parameters directly, by dotted name."""
    return {
        name: module_kind(sub)
        for name, sub in model.named_modules()
        if next(sub.parameters(recurse=False), None) is not None
    }


def guess_parameter_names(state_dict: Mapping[str, Tensor], certain: Iterable[str], complete: bool) -> list[str]:
    """Which state-dict entries are parameters, for a file that does not record it.

    ``certain``: names known to be parameters (those in curvature blocks, frozen ones). With
    ``complete`` (the fit covered every trainable parameter) that is all of them; otherwise every other
    floating-point entry that is not a known norm-layer buffer is taken for a parameter too.
    """
    known = list(dict.fromkeys(certain))
    if complete:
        return known
    others = [
        name for name, t in state_dict.items()
        if name not in known and t.is_floating_point() and name.rsplit(".", 1)[-1] not in _KNOWN_BUFFERS
    ]
    return known + others


def guess_kinds(param_shapes: Mapping[str, tuple[tuple[int, ...], bool]]) -> dict[str, str]:
    """Kinds of the Kronecker-factored modules, from their weight's dimensions (files without recorded kinds).

    ``param_shapes``: module name -> (shape of its first parameter, whether its block is Kronecker).
    Only Linear (2-D weight) and Conv (more dimensions) get Kronecker blocks; other modules stay unknown.
    """
    return {
        module: ("linear" if len(shape) == 2 else "conv")
        for module, (shape, kronecker) in param_shapes.items()
        if kronecker
    }


def module_from_weights(
    state_dict: Mapping[str, Tensor],
    parameter_names: Collection[str],
    kinds: Mapping[str, str],
    frozen: Collection[str] = (),
    where: str = "the file",
) -> StoredModule:
    """A :class:`StoredModule` tree holding ``state_dict`` (names ``a.b.weight`` become nested nodes).

    Entries named in ``parameter_names`` become parameters (in that order, then the buffers in
    ``state_dict`` order), ``requires_grad=False`` for those in ``frozen``; the others buffers.
    ``kinds`` maps module names to :func:`module_kind` strings. The tensors are shared, not copied.
    """
    params = list(dict.fromkeys(n for n in parameter_names if n in state_dict))
    chosen = set(params)
    order = params + [n for n in state_dict if n not in chosen]
    root = StoredModule(kinds.get("", "unknown"))
    for name in order:
        *path, leaf = name.split(".")
        node: nn.Module = root
        try:
            for depth, part in enumerate(path):
                child = node._modules.get(part)
                if child is None:
                    child = StoredModule(kinds.get(".".join(path[: depth + 1]), "unknown"))
                    node.add_module(part, child)
                node = child
            tensor = state_dict[name]
            if name in chosen:
                node.register_parameter(leaf, nn.Parameter(tensor, requires_grad=name not in frozen and _differentiable(tensor)))
            else:
                node.register_buffer(leaf, tensor)
        except (KeyError, TypeError, AttributeError) as exc:  # a name that is both a tensor and a module, or empty
            raise UserError(f"{where}: the stored weight name {name[:80]!r} cannot be laid out as a module tree "
                            f"({exc}); name the class with {{param}}", param="arch") from None
    return root


def _differentiable(tensor: Tensor) -> bool:
    return tensor.is_floating_point() or tensor.is_complex()

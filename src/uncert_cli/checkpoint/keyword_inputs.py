"""Feeding packed token data to a network as keyword arguments (``input_ids=..., attention_mask=...``).

Token data with several arrays per example is one ``(B, k, T)`` int64 tensor (``ArrayDataset.input_names``
names the k rows), so that batching, slicing and every ``model(x)`` in uncert stay one-tensor operations.
The unpacking is done in one place, a forward pre-hook on the root module (the counterpart of
:func:`uncert_cli.checkpoint.outputs.select_output` for outputs): a packed tensor as the first argument
becomes one keyword argument per row. Curvature capture, Jacobian products and predictives see the
network's own modules called with the network's own arguments; parameter names and the state dict are
untouched.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from uncert_cli.core.errors import UserError

__all__ = ["feed_keyword_inputs", "keyword_names"]

# module -> (keyword names, hook handle); weak, so a module's lifetime is its own
_FED: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[str, ...], RemovableHandle]] = weakref.WeakKeyDictionary()


def keyword_names(model: nn.Module) -> tuple[str, ...] | None:
    """The keywords packed inputs are fed to ``model`` as, or ``None`` when it takes one tensor."""
    fed = _FED.get(model)
    return fed[0] if fed is not None else None


def _unpacker(names: tuple[str, ...]):
    def unpack(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        x = args[0] if args else None
        if not (isinstance(x, Tensor) and x.dtype == torch.int64 and x.dim() == 3 and x.shape[1] == len(names)):
            return None  # not packed (a plain tensor, or a call uncert did not make)
        return args[1:], {**kwargs, **{name: x[:, i] for i, name in enumerate(names)}}

    return unpack


def feed_keyword_inputs(model: nn.Module, names: tuple[str, ...] | None, data_name: str) -> None:
    """Make ``model`` take ``(B, len(names), T)`` packed inputs as ``names`` keyword arguments.

    ``names=None`` (one input tensor) changes nothing. A network already fed other keywords (an OOD set
    packing other arrays than the in-distribution data) is refused: the two would reach different
    arguments of the same network.
    """
    if names is None:
        return
    current = keyword_names(model)
    if current == names:
        return
    if current is not None:
        raise UserError(
            f"'{data_name}' holds the token arrays {', '.join(names)} but the model's other data holds "
            f"{', '.join(current)}; store the same arrays in every token file a command reads"
        )
    handle = model.register_forward_pre_hook(_unpacker(names), with_kwargs=True)
    _FED[model] = (names, handle)

"""Where a parameter's entries sit in a flat parameter vector: the one set of index helpers of the tests.

A flat vector is the concatenation of the parameters ``names`` (default: every parameter, in
``model.named_parameters()`` order), each flattened row-major. Kronecker-type blocks order a layer's
entries as ``W_aug = [W.reshape(O, -1) | b]`` row-major; :func:`waug_index` gives that order's positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def param_name(module: str, kind: str) -> str:
    """``"fc.weight"`` for module ``"fc"``; a bare layer (module ``""``) names its own ``"weight"``."""
    return f"{module}.{kind}" if module else kind


def param_layout(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Offset and shape of every parameter of ``names`` in their flat concatenation."""
    params = dict(model.named_parameters())
    layout, offset = {}, 0
    for name in names if names is not None else list(params):
        layout[name] = (offset, tuple(params[name].shape))
        offset += params[name].numel()
    return layout


def param_index(model: nn.Module, param_names: Sequence[str], names: Sequence[str] | None = None) -> Tensor:
    """``(P_sub,)`` positions of the entries of ``param_names`` (concatenated) in the flat vector of ``names``."""
    layout = param_layout(model, names)
    parts = []
    for name in param_names:
        offset, shape = layout[name]
        parts.append(offset + torch.arange(int(torch.tensor(shape).prod()) if shape else 1))
    return torch.cat(parts)


def waug_index(model: nn.Module, module: str, names: Sequence[str] | None = None) -> Tensor:
    """``(O·(I+1),)`` positions of ``module``'s ``W_aug`` entries, row-major, in the flat vector of ``names``
    (``(O·I,)`` without a bias, or when ``names`` leaves the bias out)."""
    layout = param_layout(model, names)
    w_offset, w_shape = layout[param_name(module, "weight")]
    rows = w_shape[0]
    cols = int(torch.tensor(w_shape[1:]).prod()) if len(w_shape) > 1 else 1
    index = w_offset + torch.arange(rows * cols).reshape(rows, cols)
    bias = param_name(module, "bias")
    if bias in layout:
        index = torch.cat([index, (layout[bias][0] + torch.arange(rows)).reshape(rows, 1)], dim=1)
    return index.reshape(-1)


def waug_names(model: nn.Module, modules: Sequence[str]) -> list[str]:
    """Weight (and bias, where the layer has one) names of ``modules``, in order."""
    params = dict(model.named_parameters())
    return [n for m in modules for n in (param_name(m, "weight"), param_name(m, "bias")) if n in params]


def waug_order(model: nn.Module, modules: Sequence[str]) -> Tensor:
    """Positions, in the flat vector of :func:`waug_names`, of every module's ``W_aug`` entries in turn."""
    names = waug_names(model, modules)
    return torch.cat([waug_index(model, m, names) for m in modules])


def restrict(matrix: Tensor, index: Tensor) -> Tensor:
    """The ``(len(index), len(index))`` sub-matrix of rows and columns ``index``."""
    return matrix[index.unsqueeze(1), index.unsqueeze(0)]


def param_diagonal(model: nn.Module, matrix: Tensor, name: str) -> Tensor:
    """Diagonal of a ``(P, P)`` matrix over all parameters, restricted to ``name``, in the parameter's shape."""
    shape = param_layout(model)[name][1]
    return matrix.diagonal()[param_index(model, [name])].reshape(shape)


def to_waug(tensors: dict[str, Tensor], module: str) -> Tensor:
    """``(..., O·(I+1))``: one module's weight and bias from a parameter dict as ``W_aug``, leading dims kept."""
    w, b = tensors[param_name(module, "weight")], tensors[param_name(module, "bias")]
    return torch.cat([w, b.unsqueeze(-1)], -1).flatten(-2)

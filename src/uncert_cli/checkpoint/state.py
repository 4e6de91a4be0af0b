"""State-dict plumbing: unwrapping training checkpoints, aligning key prefixes, checking shapes, and fingerprinting weights."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from uncert_cli.core.errors import UserError

__all__ = [
    "weights_fingerprint",
    "is_state_dict",
    "unwrap_checkpoint",
    "align_keys",
    "check_compatible",
    "WRAPPER_KEYS",
    "state_under_key",
]

#: Keys under which training scripts commonly nest the model's state dict, tried in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net", "network", "module")
#: Prefixes added by wrappers: DistributedDataParallel/DataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_SHOW = 5  # how many offending keys an error message lists per category


def weights_fingerprint(module_or_state_dict: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) over the sorted ``(name, dtype, shape, raw bytes)`` of every tensor.

    For a module this covers its state dict (parameters and persistent buffers), which is what
    a checkpoint stores, so the value survives save/load.  Used to tie cached curvature to the
    exact weights it was computed from.
    """
    if isinstance(module_or_state_dict, nn.Module):
        state: Mapping[str, Any] = module_or_state_dict.state_dict()
    else:
        state = module_or_state_dict
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            continue  # e.g. a stray int in a loosely built state dict; not a weight
        # resolve_* materialise lazy conjugate/negative views so the bytes are the values.
        tensor = tensor.detach().cpu().resolve_conj().resolve_neg().contiguous()
        header = f"{name}\0{str(tensor.dtype).removeprefix('torch.')}\0{tuple(tensor.shape)}\0"
        digest.update(header.encode())
        # Viewing as bytes works for every dtype, including bfloat16 which numpy lacks.
        # An ndarray is a buffer; numpy's stubs declare it one only from Python 3.12 on.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]
    return digest.hexdigest()


def is_state_dict(obj: Any) -> bool:
    """A non-empty mapping from string names to tensors."""
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def unwrap_checkpoint(obj: Any, source: str, _depth: int = 0) -> dict[str, torch.Tensor] | nn.Module:
    """Find the model inside what ``torch.load`` returned.

    Returns a state dict or (only for trusted pickles) a module.  Training checkpoints often
    look like ``{"epoch": 3, "model_state_dict": {...}, "optimizer": {...}}``; the first of
    :data:`WRAPPER_KEYS` that holds a state dict or module wins.
    """
    if isinstance(obj, nn.Module):
        return obj
    if is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping) and _depth < 3:
        for key in WRAPPER_KEYS:
            if key in obj and (is_state_dict(obj[key]) or isinstance(obj[key], (nn.Module, Mapping))):
                try:
                    return unwrap_checkpoint(obj[key], source, _depth + 1)
                except UserError:
                    continue
    if isinstance(obj, Mapping):
        keys = ", ".join(repr(k) for k in list(obj)[:8]) + (" ..." if len(obj) > 8 else "")
        raise UserError(
            f"{source} holds a dict (keys: {keys or 'none'}) but no state dict of tensors; "
            f"expected a state dict or one under a key such as {', '.join(WRAPPER_KEYS[:4])}"
        )
    raise UserError(
        f"{source} holds a {type(obj).__name__}, not a state dict or model; "
        "save model.state_dict() with torch.save, or use safetensors"
    )


def state_under_key(obj: Any, key: str, source: str) -> dict[str, torch.Tensor] | nn.Module:
    """The state dict a checkpoint holds under ``key`` (``state_key``; ``a.b`` for a nested dict when
    no key is literally ``a.b``), e.g. ``ema_state_dict`` beside a Lightning ``state_dict``.
    """
    node: Any = obj
    if isinstance(node, Mapping) and key in node:
        node = node[key]
    else:
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                keys = ", ".join(repr(k) for k in list(obj)[:8]) if isinstance(obj, Mapping) else ""
                holds = f"its keys: {keys}" if keys else f"it holds a {type(obj).__name__}, not a dict"
                raise UserError(f"{source} has no {{param}} {key!r}; {holds}", param="state_key")
            node = node[part]
    if isinstance(node, nn.Module) or is_state_dict(node):
        return node if isinstance(node, nn.Module) else dict(node)
    raise UserError(f"{source}: {{param}} {key!r} holds a {type(node).__name__}, not a state dict of tensors",
                    param="state_key")


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor] | None:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return None


def align_keys(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes (``module.``, ``_orig_mod.``, or a shared first component such as
    Lightning's ``model.``) when that makes the keys fit the model better.

    Prefixes are stripped only when it helps, because a model may legitimately name its only
    child ``module`` or ``model``.
    """

    def score(candidate: dict[str, torch.Tensor]) -> int:
        return len(expected & set(candidate))

    best = state
    frontier = [state]
    for _ in range(4):  # e.g. module._orig_mod.model.
        next_frontier = []
        for candidate in frontier:
            prefixes = list(_WRAPPER_PREFIXES)
            first = next(iter(candidate), "")
            if "." in first:
                prefixes.append(first.split(".", 1)[0] + ".")
            for prefix in prefixes:
                stripped = _strip(candidate, prefix)
                if stripped is not None:
                    next_frontier.append(stripped)
                    if score(stripped) > score(best):
                        best = stripped
        frontier = next_frontier
    return best


def check_compatible(state: Mapping[str, torch.Tensor], module: nn.Module, arch: str | None) -> None:
    """Raise one :class:`UserError` listing missing keys, unexpected keys and shape mismatches.

    Done by hand before ``load_state_dict`` because its error is a multi-line dump without the
    hint users need (usually: the architecture or its keywords are wrong).
    """
    wanted = module.state_dict()
    missing = [
        k
        for k in wanted
        # BatchNorm fills in num_batches_tracked when old checkpoints lack it.
        if k not in state and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state if k not in wanted]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(wanted[k].shape)}"
        for k in state
        if k in wanted
        and not isinstance(wanted[k], nn.parameter.UninitializedParameter)
        and tuple(state[k].shape) != tuple(wanted[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return

    def listing(label: str, items: list[str]) -> str:
        shown = "; ".join(items[:_SHOW])
        more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
        return f"{len(items)} {label} [{shown}{more}]"

    parts = [
        listing(label, items)
        for label, items in [
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ]
        if items
    ]
    built = f"the model built from {arch}" if arch else "the model"
    raise UserError(
        f"the checkpoint does not fit {built}: {', '.join(parts)}; are {{param}} and {{arch_kwargs}} right?",
        param="arch", mentions=("arch_kwargs",),
    )

"""``timm:NAME`` architectures: timm's model builders, always randomly initialised and offline.

timm is an optional dependency (``pip install 'uncert-cli[timm]'``); it is imported only when a spec
names it. ``timm.create_model`` takes keywords that would read a file or reach the network
(``pretrained``, ``checkpoint_path``, ``pretrained_cfg``, ...), so those are refused whoever gives
them: the trained weights always come from the checkpoint uncert was handed.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from torch import nn

from uncert_cli.core.errors import UserError

__all__ = ["timm_builder", "timm_lists", "TIMM_MISSING"]

TIMM_MISSING = (
    "timm is not installed; install it with pip install 'uncert-cli[timm]' (or pip install timm) to use timm:NAME"
)
# create_model keywords that load weights from a file or the network, or point timm at places to do so.
_WEIGHT_SOURCES = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise UserError(TIMM_MISSING) from None
    return timm


def timm_lists(name: str) -> bool:
    """Whether ``timm.list_models()`` lists ``name`` (a bare builder name, never an attribute path)."""
    return name in _timm().list_models()


def timm_builder(name: str, kwargs: dict[str, Any], call: Callable[..., Any]) -> nn.Module:
    """``timm.create_model(name, pretrained=False, **kwargs)`` through ``call`` (arch.py's ``_call``,
    which turns constructor failures into :class:`UserError`).

    ``pretrained=False`` is accepted and dropped; any other weight source keyword is refused.
    """
    timm = _timm()
    kwargs = dict(kwargs)
    if kwargs.get("pretrained", None) is False:
        del kwargs["pretrained"]
    refused = [k for k in _WEIGHT_SOURCES if k in kwargs]
    if refused:
        raise UserError(
            f"uncert never loads weights through timm ({{param}} {', '.join(refused)}): drop them and pass "
            "the trained weights as the checkpoint file",
            param="arch_kwargs",
        )
    available = timm.list_models()
    if name not in available:
        close = difflib.get_close_matches(name, available, n=5, cutoff=0.6)
        hint = f" did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"timm has no model {name!r};{hint} (see timm.list_models())")
    return call(lambda **kw: timm.create_model(name, pretrained=False, **kw), kwargs, f"timm:{name}")

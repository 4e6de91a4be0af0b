"""Which entries of a checkpoint's state dict are the network's, and under which key prefix.

Training frameworks store the network under the attribute that held it: a Lightning ``.ckpt`` keeps
``state_dict`` keys such as ``model.fc1.weight`` next to the LightningModule's other modules
(``criterion.weight``, ``ema_model.fc1.weight``), DDP adds ``module.``, ``torch.compile`` ``_orig_mod.``.
:func:`network_entries` finds the entries that fit the architecture:

* ``strip_prefix`` given (e.g. ``"model."``): the entries under it, prefix removed; others dropped;
* else, when the keys fit as they are or after :func:`~uncert_cli.checkpoint.state.align_keys` (a prefix
  all keys share), those;
* else the entries under the one prefix (up to three leading name components) whose entries fit the
  architecture exactly, names and shapes; two such prefixes (a model and its EMA copy) are ambiguous
  and refused, naming them, so the user chooses with ``strip_prefix``.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from uncert_cli.checkpoint.state import align_keys
from uncert_cli.core.errors import UserError

__all__ = ["network_entries", "strip_given_prefix"]

_DEPTH = 3  # leading name components a prefix may have (``model.``, ``module.model.``, ``a.b.c.``)
_SHOWN = 5


def _prefixes(names: list[str]) -> list[str]:
    """Every prefix ``a.``, ``a.b.``, ... (up to :data:`_DEPTH` components) some key has, in key order."""
    seen: dict[str, None] = {}
    for name in names:
        parts = name.split(".")
        for depth in range(1, min(_DEPTH, len(parts) - 1) + 1):
            seen.setdefault(".".join(parts[:depth]) + ".", None)
    return list(seen)


def _under(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _fits(state: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> bool:
    """Same names (BatchNorm's ``num_batches_tracked`` may be absent) and same shapes."""
    if any(k not in expected for k in state):
        return False
    if any(k not in state and not k.endswith("num_batches_tracked") for k in expected):
        return False
    return all(tuple(v.shape) == tuple(expected[k].shape) for k, v in state.items() if isinstance(v, Tensor))


def strip_given_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries under ``prefix`` (``strip_prefix``) with it removed; a prefix no key has is refused."""
    chosen = _under(state, prefix)
    if not chosen:
        found = ", ".join(_prefixes(list(state))[:_SHOWN * 2]) or "none"
        raise UserError(f"no key of the checkpoint's state dict starts with {{param}} {prefix!r}; its prefixes: {found}",
                        param="strip_prefix")
    return chosen


def network_entries(
    state: Mapping[str, Tensor], expected: Mapping[str, Tensor], strip_prefix: str | None = None
) -> tuple[dict[str, Tensor], str | None]:
    """The state-dict entries of the network (see the module docstring) and a note when entries were left out.

    ``expected``: the built module's ``state_dict()`` (names and shapes). Returns the entries to load
    and None, or a one-line note naming the prefix taken and what was left out.
    """
    if strip_prefix is not None:
        return strip_given_prefix(state, strip_prefix), None
    aligned = align_keys(dict(state), set(expected))
    if _fits(aligned, expected):
        return aligned, None
    fitting = [p for p in _prefixes(list(state)) if _fits(_under(state, p), expected)]
    if len(fitting) > 1:
        raise UserError(
            f"the checkpoint holds the network's weights under several prefixes ({', '.join(fitting[:_SHOWN])}); "
            "choose one with {param} (e.g. {param} " + fitting[0] + ")", param="strip_prefix")
    if not fitting:
        return aligned, None  # check_compatible then lists what does not fit
    prefix = fitting[0]
    left = [k for k in state if not k.startswith(prefix)]
    shown = ", ".join(left[:_SHOWN]) + (f" (+{len(left) - _SHOWN} more)" if len(left) > _SHOWN else "")
    return _under(state, prefix), (f"took the weights under '{prefix}' (the only prefix whose entries fit the "
                                   f"architecture); left out {len(left)} other entries: {shown}")


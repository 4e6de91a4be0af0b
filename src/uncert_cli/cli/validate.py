"""Number options are checked at the option, for every command, before any work starts.

Typer converts ``--prior-precision inf`` and ``--batch-size 118059162071`` without complaint: the
first wrote a factor file every later command refused, the second and its like (``--seed``,
``--limit``, ``--samples`` beyond what any index or allocation can hold) ended in overflow or
allocation failures deep inside torch. :func:`check_number_options` walks the built command tree
once per run and adds one check to every ``int`` and ``float`` option, so an option added later is
covered without anyone remembering to. Option-specific rules (``min=1``, positive precisions)
stay in the option's declaration; these are the rules that hold for every number.

:func:`empty_path_argument` does the like for paths: an empty one is refused before it becomes the
current folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

# No count, size or index of this tool is meaningful beyond 32-bit range (no data set here has 2³¹
# examples, no batch, sample count or class index comes near it), and staying inside it keeps every
# product of them (batch × samples × classes) far from 64-bit overflow.
INT_LIMIT = 2**31 - 1
# Options that are counts or indices in disguise and must not be negative.
NON_NEGATIVE = frozenset({"seed", "target", "top"})

_MARK = "_uncert_number_check"


def check_number(name: str, value: Any, kind: type) -> None:
    """Raise ``typer.BadParameter`` unless ``value`` is a sensible ``kind`` (int or float) value."""
    if value is None:
        return
    if kind is float:
        if not math.isfinite(value):
            raise typer.BadParameter(f"must be a finite number, got {value}")
        return
    if not -INT_LIMIT <= value <= INT_LIMIT:
        raise typer.BadParameter(f"{value} is out of range; it must be at most {INT_LIMIT:,} in size")
    if name in NON_NEGATIVE and value < 0:
        raise typer.BadParameter(f"must be 0 or more, got {value}")


def _checked(callback: Callable[..., Any] | None, kind: type) -> Callable[..., Any]:
    def run(ctx: Any, param: Any, value: Any) -> Any:
        values = value if isinstance(value, (list, tuple)) else (value,)
        for item in values:
            check_number(param.name, item, kind)
        return callback(ctx, param, value) if callback is not None else value

    setattr(run, _MARK, True)
    return run


def number_kind(param: Any) -> type | None:
    """``int`` or ``float`` for a number option (``Optional`` and lists included), else None."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if annotation in (int, float):
        return annotation
    inner: tuple[Any, ...] = getattr(annotation, "__args__", ())
    return inner[0] if len(inner) == 1 and inner[0] in (int, float) else None


def check_number_options(group: Any) -> None:
    """Add the number check to every int/float parameter of every command under ``group``."""
    for command in getattr(group, "commands", {}).values():
        check_number_options(command)
        for param in getattr(command, "params", []):
            kind = number_kind(param)
            if kind is not None and not getattr(param.callback, _MARK, False):
                param.callback = _checked(param.callback, kind)


def _is_path(param: Any) -> bool:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    return annotation is Path or getattr(annotation, "__args__", ()) == (Path,)


def empty_path_argument(command: Any, args: list[str]) -> str | None:
    """What names an empty path among ``args`` of ``command`` (``--png ''``, ``--html=``, ``report ''``):
    the option's flag, ``"a path argument"`` for a positional one, or None when there is none.

    An empty path becomes ``Path('')``, which is the current folder: ``--png ''`` wrote the figures there
    without a word, and ``--html ''`` was refused as "--html . is a directory", a name the user never typed.
    """
    params = getattr(command, "params", [])
    path_flags = {opt for p in params if _is_path(p) for opt in getattr(p, "opts", []) if opt.startswith("-")}
    value_flags = {opt for p in params if not getattr(p, "is_flag", False)
                   for opt in getattr(p, "opts", []) if opt.startswith("-")}
    has_path_argument = any(_is_path(p) and not any(o.startswith("-") for o in getattr(p, "opts", [])) for p in params)
    for i, word in enumerate(args):
        flag, _, value = word.partition("=")
        if word.startswith("-") and value == "" and word.endswith("=") and flag in path_flags:
            return flag
        if word != "":
            continue
        before = args[i - 1] if i > 0 else ""
        if before in path_flags:
            return before
        if before not in value_flags and has_path_argument:
            return "a path argument"
    return None


def hide_flag_types(group: Any) -> None:
    """Show on/off flags (``--quiet``, ``--json``, ``--include-frozen``) in ``--help`` without a type.

    Typer listed them as ``--quiet <bool>``, which reads as an option taking a value: ``--quiet true``
    then made ``true`` a positional argument ("no such checkpoint: true").
    """
    for command in [group, *getattr(group, "commands", {}).values()]:
        if command is not group:
            hide_flag_types(command)
        # ``--help`` is not among ``params``: click makes it on demand (and keeps it), so fetch it here.
        # typer.Context, not click's: recent typer ships its own click, and `pip install -e .` has no other.
        help_option = command.get_help_option(typer.Context(command))
        for param in [*getattr(command, "params", []), *([help_option] if help_option is not None else [])]:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""

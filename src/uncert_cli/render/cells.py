"""Pieces the rich renderers share: a number cell, a layer's label, a plain column table, the MAP-accuracy clause."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from rich.table import Table


def number_cell(x: float | None, spec: str = ".3g") -> str:
    """``x`` formatted with ``spec``; ``–`` for a missing value or NaN, ``∞`` for an infinity."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return format(x, spec)


def layer_cell(name: str) -> str:
    """A layer's name as tables print it: the network's own top-level parameters (module name "") as <root>."""
    return name or "<root>"


def column_table(title: str, columns: Sequence[str], right: Collection[str] = ("params",)) -> Table:
    """A rich table titled ``title`` with one column per name; those in ``right`` (counts) are right-aligned."""
    table = Table(title=title)
    for name in columns:
        table.add_column(name, justify="right" if name in right else "left")
    return table


def accuracy_text(accuracy: float | None, separator: str) -> str:
    """``<separator>MAP accuracy 97.50%`` for a summary line, or nothing when the accuracy was not measured."""
    return f"{separator}MAP accuracy {accuracy:.2%}" if accuracy is not None else ""

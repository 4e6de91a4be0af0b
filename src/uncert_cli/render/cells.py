"""Text of one table cell or summary number, shared by the rich renderers."""

from __future__ import annotations

import math


def number_cell(x: float | None, spec: str = ".3g") -> str:
    """``x`` formatted with ``spec``; ``–`` for a missing value or NaN, ``∞`` for an infinity."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    return format(x, spec)

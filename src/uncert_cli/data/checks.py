"""Validation of the small numeric options shared by the loaders (``--limit``, ``--seed``, ``--batch-size``)."""

from __future__ import annotations

import operator

from uncert_cli.errors import UserError


def whole_number(value: object, option: str, *, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (numpy integers accepted; bools and floats refused)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = None
    if number is None or number < minimum:
        raise UserError(f"{option} must be a whole number >= {minimum}, got {value!r}; pass e.g. {option} {max(minimum, 1) * 100}")
    return number

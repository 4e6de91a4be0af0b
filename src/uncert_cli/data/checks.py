"""Validation of the small numeric arguments shared by the loaders (``limit``, ``seed``, ``batch_size``)."""

from __future__ import annotations

import operator

from uncert_cli.core.errors import UserError

# Counts beyond 32-bit range mean nothing here and overflow index arithmetic downstream
# (the same bound as the CLI's option check, uncert_cli.cli.validate.INT_LIMIT).
MAXIMUM = 2**31 - 1


def whole_number(value: object, param: str, *, minimum: int) -> int:
    """``value`` as an int in ``[minimum, 2³¹ - 1]`` (numpy integers accepted; bools and floats refused).

    ``param`` is the caller's keyword argument (``"batch_size"``); the CLI shows it as its flag.
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = None
    if number is None or not minimum <= number <= MAXIMUM:
        raise UserError(
            f"{{param}} must be a whole number >= {minimum} and at most {MAXIMUM:,}, got {value!r}; "
            f"pass e.g. {{param}}={max(minimum, 1) * 100}",
            param=param,
        )
    return number

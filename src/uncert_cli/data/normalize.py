"""``--normalize`` values: per-channel mean and standard deviation.

Syntax (whitespace is ignored):

* ``MEAN,STD`` - one mean and one std for every channel, e.g. ``0.1307,0.3081``;
* ``M1,M2,M3;S1,S2,S3`` - one value per channel, means before the ``;``, stds after
  (e.g. ``0.4914,0.4822,0.4465;0.2470,0.2435,0.2616``); ``M;S`` is the same as ``M,S``;
* a preset name: ``mnist``, ``cifar10`` or ``imagenet`` (see :data:`NORMALIZE_PRESETS`).
"""

from __future__ import annotations

import math

from uncert_cli.core.errors import UserError

# Commonly used training-set statistics, on inputs scaled to [0, 1].
NORMALIZE_PRESETS: dict[str, tuple[list[float], list[float]]] = {
    "mnist": ([0.1307], [0.3081]),
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
}
_SYNTAX = "write MEAN,STD (e.g. 0.1307,0.3081) or M1,M2,M3;S1,S2,S3 or a preset (" + ", ".join(NORMALIZE_PRESETS) + ")"


def _numbers(text: str, original: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError as err:
        raise UserError(f"bad {{param}} '{original}': {err}; {_SYNTAX}", param="normalize") from err
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"bad {{param}} '{original}': values must be finite numbers; {_SYNTAX}", param="normalize")
    return values


def parse_normalize(text: str) -> tuple[list[float], list[float]]:
    """Parse ``--normalize`` into ``(means, stds)``, two equal-length lists (length 1 = all channels)."""
    compact = "".join(text.split())
    preset = NORMALIZE_PRESETS.get(compact.lower())
    if preset is not None:
        return list(preset[0]), list(preset[1])
    if not compact:
        raise UserError(f"empty {{param}}; {_SYNTAX}", param="normalize")
    if ";" in compact:
        halves = compact.split(";")
        if len(halves) != 2:
            raise UserError(f"bad {{param}} '{text}': use one ';' between the means and the stds; {_SYNTAX}", param="normalize")
        means, stds = _numbers(halves[0], text), _numbers(halves[1], text)
        if len(means) != len(stds):
            raise UserError(
                f"bad {{param}} '{text}': {len(means)} means but {len(stds)} stds; give one of each per channel",
                param="normalize",
            )
    else:
        values = _numbers(compact, text)
        if len(values) != 2:
            raise UserError(f"bad {{param}} '{text}': {len(values)} numbers without ';'; {_SYNTAX}", param="normalize")
        means, stds = values[:1], values[1:]
    if any(std <= 0 for std in stds):
        raise UserError(f"bad {{param}} '{text}': every std must be > 0; {_SYNTAX}", param="normalize")
    return means, stds

"""Which layers a report figure shows, so that a deep network's figures stay one screen wide.

Presentation only (choosing and pooling what to draw; the numbers come from the analysis):

* :func:`group_layers` pools consecutive layers by their module path (``layer1.0.conv1`` →
  ``layer1.0`` or ``layer1``), at the finest depth that gives at most ``max_groups`` groups;
  a network with few layers keeps one group per layer.
* :func:`top_layers` picks the layers holding the largest shares of the posterior variance
  (where the uncertainty lives), returned in network order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LayerGroup:
    """Consecutive layers shown as one: ``label`` (a module path prefix) and their indices."""

    label: str
    members: tuple[int, ...]


def _prefix(name: str, depth: int) -> str:
    head = name.split("+")[0]  # a joint block (tied weights) groups with its first module
    return ".".join(head.split(".")[:depth]) or name


def group_layers(names: Sequence[str], max_groups: int) -> list[LayerGroup]:
    """Groups of consecutive layers, at most ``max_groups`` (≥ 1) of them, in network order."""
    if len(names) <= max_groups:
        return [LayerGroup(n, (i,)) for i, n in enumerate(names)]
    deepest = max(len(n.split("+")[0].split(".")) for n in names)
    for depth in range(deepest, 0, -1):
        groups = _runs([_prefix(n, depth) for n in names])
        if len(groups) <= max_groups:
            return groups
    # Even the top-level modules are too many (a flat Sequential): equal runs of consecutive layers.
    size = -(-len(names) // max_groups)
    return [
        LayerGroup(f"{names[i]} … {names[min(i + size, len(names)) - 1]}", tuple(range(i, min(i + size, len(names)))))
        for i in range(0, len(names), size)
    ]


def _runs(keys: list[str]) -> list[LayerGroup]:
    """Consecutive equal keys as one group each (a key that comes back later starts a new group)."""
    groups: list[LayerGroup] = []
    for i, key in enumerate(keys):
        if groups and groups[-1].label == key:
            groups[-1] = LayerGroup(key, groups[-1].members + (i,))
        else:
            groups.append(LayerGroup(key, (i,)))
    return groups


def top_layers(shares: Sequence[float], k: int, eligible: Sequence[bool] | None = None) -> list[int]:
    """Indices of the ``k`` eligible layers with the largest variance shares, in network order."""
    candidates = [i for i in range(len(shares)) if eligible is None or eligible[i]]
    ranked = sorted(candidates, key=lambda i: -(shares[i] if shares[i] == shares[i] else -1.0))  # NaN last
    return sorted(ranked[:k])

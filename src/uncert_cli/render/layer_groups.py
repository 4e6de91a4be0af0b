"""Which layers a report figure shows, so that a deep network's figures stay one screen wide.

Presentation only (choosing and pooling what to draw; the numbers come from the analysis):

* :func:`group_layers` pools consecutive layers by their module path (``layer1.0.conv1`` →
  ``layer1.0`` or ``layer1``), at the finest depth that gives at most ``max_groups`` groups;
  a network with few layers keeps one group per layer.
* :func:`top_layers` picks the layers holding the largest shares of the posterior variance
  (where the uncertainty lives), returned in network order.
* :func:`block_rows` lays a table's layer names out per repeated block (a transformer's
  ``bert.encoder.layer.3``, a resnet's ``layer1.0``): one heading row per block, its layers by their path
  inside it (``attention.self.query``), so that long module paths stay readable in 80 columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from uncert_cli.render.cells import layer_cell


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


def _block_of(name: str) -> tuple[str, str] | None:
    """``("bert.encoder.layer.3", "attention.self.query")``: the path up to its first numbered component
    and the rest, else the parent module and the last component (``("bert.embeddings", "LayerNorm")``);
    ``None`` for a top-level name (``fc1``, ``classifier``).
    """
    parts = name.split("+")[0].split(".")
    for k, part in enumerate(parts[:-1]):
        if part.isdigit() and k > 0:
            return ".".join(parts[: k + 1]), name[len(".".join(parts[: k + 1])) + 1 :]
    if len(parts) == 1 or parts[-1].isdigit():  # a Sequential's "features.3" reads best whole
        return None
    return ".".join(parts[:-1]), name[len(".".join(parts[:-1])) + 1 :]


def block_rows(names: Sequence[str]) -> list[tuple[str | None, str]]:
    """Per layer, ``(heading to print before it or None, the label to print for it)``.

    Consecutive layers of one block (a numbered block such as ``bert.encoder.layer.3``, else one parent
    module such as ``bert.embeddings``) get the block's path as a heading, once, and their path inside it,
    indented; a layer alone in its block keeps its full name.
    """
    blocks = [_block_of(n) for n in names]
    keys = [b[0] if b is not None else None for b in blocks]
    rows: list[tuple[str | None, str]] = []
    for i, (name, b) in enumerate(zip(names, blocks)):
        grouped = b is not None and ((i > 0 and keys[i - 1] == b[0]) or (i + 1 < len(names) and keys[i + 1] == b[0]))
        if not grouped:
            rows.append((None, layer_cell(name)))
            continue
        assert b is not None
        rows.append((b[0] if i == 0 or keys[i - 1] != b[0] else None, "  " + b[1]))
    return rows

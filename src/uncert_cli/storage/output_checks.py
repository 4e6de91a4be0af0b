"""The factor file's record of the network's outputs, checked against itself as the file is opened.

``num_outputs`` and ``task`` live in the model metadata (``/model`` attribute ``meta``, JSON); the fit
record (``/fit``) holds the task the curvature was computed for, and the stored weights hold the head's
width. ``uncert fit`` checks the recorded width against the network's output before fitting, so in a
file it wrote these agree; a disagreement means the file was edited or damaged, and answering from it
would report, prune or compare with the wrong number of classes or the wrong likelihood.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uncert_cli.storage.arrays import damaged

_META = "/model attribute 'meta'"


def check_recorded_outputs(
    meta: Mapping[str, Any],
    fit_task: str,
    weights: Mapping[str, tuple[int, ...]],
    parameter_names: list[str] | None,
    module_kinds: Mapping[str, str] | None,
    path: Path,
) -> None:
    """Refuse a ``num_outputs`` that is not a positive whole number, a metadata task other than the fit's,
    and a ``num_outputs`` other than the rows of the head's weight ``(C, features)``.

    ``weights``: every stored weight's shape by name; ``parameter_names`` (network order) and
    ``module_kinds`` (``{module: "linear" | ...}``) as recorded, None in files written before them.
    """
    outputs = meta.get("num_outputs")
    if outputs is not None and (isinstance(outputs, bool) or not isinstance(outputs, int) or outputs < 1):
        raise damaged(path, f"{_META} field 'num_outputs'", f"is {repr(outputs)[:40]}, not a positive whole number")
    task = meta.get("task", "classification")
    if task != fit_task:
        raise damaged(path, f"{_META} field 'task'", f"is {str(task)[:40]!r} but /fit records task {fit_task!r}")
    head = _head_width(weights, parameter_names, module_kinds)
    if outputs is not None and head is not None and head != outputs:
        raise damaged(path, f"{_META} field 'num_outputs'",
                      f"is {outputs} but the network's last layer (a Linear) has {head} outputs")


def _head_width(
    weights: Mapping[str, tuple[int, ...]], parameter_names: list[str] | None, module_kinds: Mapping[str, str] | None
) -> int | None:
    """Rows of the weight of the module owning the last parameter, when that module is a Linear; else None.

    Only a Linear is read: a convolution's or a norm layer's width says nothing about the output's.
    """
    if not parameter_names or not module_kinds:
        return None
    module = parameter_names[-1].rpartition(".")[0]
    shape = weights.get(f"{module}.weight" if module else "weight")
    if module_kinds.get(module) != "linear" or shape is None or len(shape) != 2:
        return None
    return int(shape[0])

"""The factor file's record of the network's outputs, checked against itself as the file is opened.

``num_outputs`` and ``task`` live in the model metadata (``/model`` attribute ``meta``, JSON); the fit
record (``/fit``) holds the task the curvature was computed for. ``uncert fit`` checks the recorded width
against the network's output before fitting, and commands that run the network check it again; here only
what can be told from the file alone: a count that is no count, and a task other than the fit's.

The width is not compared with a stored weight: which module makes the output cannot be told from the
file (a model may register an auxiliary Linear after its real head), and a guess would refuse valid files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uncert_cli.storage.arrays import damaged

_META = "/model attribute 'meta'"


def check_recorded_outputs(meta: Mapping[str, Any], fit_task: str, path: Path) -> None:
    """Refuse a ``num_outputs`` that is not a positive whole number and a metadata task other than the fit's."""
    outputs = meta.get("num_outputs")
    if outputs is not None and (isinstance(outputs, bool) or not isinstance(outputs, int) or outputs < 1):
        raise damaged(path, f"{_META} field 'num_outputs'", f"is {repr(outputs)[:40]}, not a positive whole number")
    task = meta.get("task", "classification")
    if task != fit_task:
        raise damaged(path, f"{_META} field 'task'", f"is {str(task)[:40]!r} but /fit records task {fit_task!r}")

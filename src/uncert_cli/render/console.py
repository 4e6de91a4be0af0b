"""Where output goes: results on stdout, progress and logs on stderr; ``--json`` prints only JSON."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# No console markup: the text holds user values (file names, dataset and layer names) in which rich would read
# ``[exp]`` as a style and drop it (``-o 'x[exp].h5'`` printed as 'wrote x.h5'); emphasis goes through styles.
stdout = Console(soft_wrap=False, markup=False)
stderr = Console(stderr=True, markup=False)


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: emit null so that `jq` and strict parsers accept the document."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return _clean(value.item())
    return value


def print_json(document: Any) -> None:
    """Write one JSON document to stdout (and nothing else)."""
    sys.stdout.write(json.dumps(_clean(document), indent=2) + "\n")
    sys.stdout.flush()


def log(message: str | Text, *, quiet: bool) -> None:
    """A human log line on stderr (suppressed by --quiet); not wrapped, so that a line stays one line in a log file."""
    if not quiet:
        stderr.print(message, soft_wrap=True)


class _SamplesPerSecond(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):
        speed = task.finished_speed or task.speed
        return super().render(task) if speed is None else f"{speed:,.0f} samples/s"


class Advance:
    """What :func:`progress_bar` yields: ``advance(n_examples)``, and ``advance.describe(text)`` to show a
    short status after the bar's name (e.g. the ELBO of a variational fit).
    """

    def __init__(self, progress: Progress | None = None, task=None, description: str = "") -> None:
        self._progress, self._task, self._description = progress, task, description

    def __call__(self, n: float) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self._description} · {text}")


@contextmanager
def progress_bar(total: int, description: str, *, quiet: bool) -> Iterator[Advance]:
    """A rich progress bar on stderr with ETA and samples/s; yields ``advance(n_examples)`` (:class:`Advance`)."""
    if quiet:
        yield Advance()
        return
    columns = (
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _SamplesPerSecond(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=False) as progress:
        task = progress.add_task(description, total=total)
        try:
            yield Advance(progress, task, description)
        except BaseException:
            # A failed run leaves no half-drawn bar above its one-line error.
            progress.remove_task(task)
            raise

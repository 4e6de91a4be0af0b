"""How library calls report progress without knowing about terminals.

A :data:`Progress` is a factory ``progress(total, description)`` returning a context manager that yields
``advance(k)``; the CLI passes one that draws a rich bar on stderr (``render.console.progress_bar``), the
library default draws nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

Advance = Callable[[float], None]
Progress = Callable[[int, str], contextlib.AbstractContextManager[Advance]]


@contextlib.contextmanager
def no_progress(total: int, description: str) -> Iterator[Advance]:
    """The silent :data:`Progress`."""
    yield lambda n: None

"""Ctrl-C: one line on stderr and exit code 130, whether it comes during start-up or later.

Standard library only: this module is imported before anything slow (torch, typer), so that an
interrupt during those imports is already caught (it used to print a 20-line traceback).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a process stopped by Ctrl-C


class Interrupted(BaseException):
    """Raised by our SIGINT handler instead of KeyboardInterrupt.

    click turns a KeyboardInterrupt into ``Abort`` after printing an empty line to stderr; a
    BaseException of our own passes through click (and every ``except Exception``) untouched, and
    still runs every ``finally`` and cleanup (temporary files are removed on the way out).
    """


def say_interrupted(message: str) -> None:
    """Print ``uncert: MESSAGE`` as the one line on stderr; a second Ctrl-C meanwhile is ignored."""
    with contextlib.suppress(ValueError):  # signal.signal works only in the main thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(Exception):
        sys.stderr.write(f"uncert: {message}\n")
        sys.stderr.flush()


def exit_interrupted_during_startup() -> None:
    """Called when Ctrl-C arrives while the CLI's modules are imported: nothing can have been written."""
    say_interrupted("interrupted; nothing was written")
    raise SystemExit(EXIT_INTERRUPTED)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted()


@contextlib.contextmanager
def interrupts_raise_interrupted() -> Iterator[None]:
    """While the block runs, SIGINT raises :class:`Interrupted`; the previous handler is restored after.

    Only in the main thread (the only one Python delivers signals to); elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)

"""Ctrl-C: one line on stderr and exit code 130, whether it comes during start-up or later.

Standard library only: this module is imported before anything slow (torch, typer), so that an
interrupt during those imports is already caught (it used to print a 20-line traceback).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

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


def _exit_now(signum: int, frame: FrameType | None) -> None:
    # An exception raised into library start-up code can come out as another one (numpy replaces
    # it while converting a sequence, matplotlib then raises ValueError): during imports nothing
    # has been written yet, so leave at once instead.
    with contextlib.suppress(OSError):
        os.write(2, b"uncert: interrupted; nothing was written\n")
    os._exit(EXIT_INTERRUPTED)


def _exit_now_finished(signum: int, frame: FrameType | None) -> None:
    # What is buffered for stdout (a --json document) goes out first.
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(OSError):
        os.write(2, b"uncert: interrupted as the command finished; what it wrote is complete\n")
    os._exit(EXIT_INTERRUPTED)


def exit_at_once_on_interrupt() -> object:
    """Until :func:`restore_interrupt_handler`, Ctrl-C exits immediately (for the imports); the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, _exit_now)


def restore_interrupt_handler(previous: object) -> None:
    """Undo :func:`exit_at_once_on_interrupt` (``previous`` is what it returned)."""
    if previous is not None:
        signal.signal(signal.SIGINT, previous)  # type: ignore[arg-type]


_received = False  # set by the handler: an interrupt may surface as another exception type, or not at all
_depth = 0  # nesting of interrupts_raise_interrupted blocks (uncert demo runs the other commands inside its own)


def interrupt_received() -> bool:
    """True if Ctrl-C arrived since the outermost :func:`interrupts_raise_interrupted` block began."""
    return _received


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = True
    raise Interrupted()


def _redeliver() -> None:
    # In a helper thread, a moment later: by then the main thread has left the finalizer that
    # swallowed the first Interrupted (if not, the hook below sends it once more).
    import _thread
    import time

    time.sleep(0.01)
    if _depth > 0:  # else the command has ended meanwhile, and its end has seen interrupt_received()
        _thread.interrupt_main(signal.SIGINT)


def _unraisable_hook(previous: Callable[[Any], object]) -> Callable[[Any], None]:
    def hook(unraisable: Any) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, Interrupted):
            # The handler ran inside a finalizer (__del__, a weakref callback), where Python prints the
            # exception and carries on; send the interrupt again so that it stops the command after all.
            # _thread, not threading: Thread.start() waits in Python code, where the signal could land.
            import _thread

            _thread.start_new_thread(_redeliver, ())
            return
        previous(unraisable)

    return hook


@contextlib.contextmanager
def interrupts_raise_interrupted(*, then_exit_at_once: bool = False) -> Iterator[None]:
    """While the block runs, SIGINT raises :class:`Interrupted`; the previous handler is restored after.

    ``then_exit_at_once`` (the program, not a caller in Python): after the block, while Python shuts
    down, Ctrl-C exits with 130 at once instead (an exception then would be a traceback from an atexit
    callback, and the exit code 0).

    An Interrupted that Python swallows (raised inside a finalizer) is sent again, and
    :func:`interrupt_received` stays true for the outermost block, so the caller can still stop with 130
    where a library's bare ``except:`` kept it. Only in the main thread (the only one Python delivers
    signals to); elsewhere a no-op.
    """
    global _received, _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth == 0:
        _received = False
    _depth += 1
    previous = signal.signal(signal.SIGINT, _raise_interrupted)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable_hook(previous_hook)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGINT, _exit_now_finished if then_exit_at_once else previous)
        _depth -= 1

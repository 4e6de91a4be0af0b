"""Which files one CLI command has read and written.

The CLI opens a session around each command (:func:`command_session`); the loaders record the files
they read (:func:`note_input`) and the write path records what it wrote (:func:`note_output`). That
gives two guarantees in one place instead of in every command:

* an output is never one of the command's inputs (``fit --data my.h5 -o my.h5`` would replace the
  data with the factor file): :func:`check_not_an_input`;
* an interrupted command can say truthfully what it left behind: :func:`interrupted_message`;
* a failed command leaves no empty folder it created for its outputs (``--png new/``):
  :func:`note_created_folders`, removed again when the command ends with an exception.

Outside a session (the Python API) nothing is recorded and nothing is refused: a program may well
read a file and later replace it on purpose.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from uncert_cli.core.errors import UserError


@dataclass
class _Session:
    inputs: dict[tuple[int, int], Path] = field(default_factory=dict)  # (device, inode) -> path as given
    outputs: list[Path] = field(default_factory=list)
    created_folders: list[Path] = field(default_factory=list)  # deepest last, in creation order


_current: _Session | None = None


@contextlib.contextmanager
def command_session() -> Iterator[None]:
    """Record inputs and outputs for the duration of one command.

    A command run inside another (``uncert demo`` runs the others) gets its own inputs; what it
    writes counts for the outer command too.
    """
    global _current
    outer, _current = _current, _Session()
    try:
        yield
    except BaseException:  # failed or interrupted: what it wrote stays, the empty folders it made go
        _remove_empty_folders(_current.created_folders)
        raise
    finally:
        if outer is not None:
            outer.outputs.extend(_current.outputs)
        _current = outer


def _remove_empty_folders(folders: list[Path]) -> None:
    for folder in reversed(folders):  # the deepest first, so that its parent can be empty afterwards
        try:
            folder.rmdir()  # only ever removes an empty folder: a file written into it keeps it
        except OSError:
            pass


def note_created_folders(folders: list[Path]) -> None:
    """Record folders the current command created for its outputs, outermost first (no-op outside a session)."""
    if _current is not None:
        _current.created_folders.extend(folders)


def _key(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def note_input(path: str | os.PathLike) -> None:
    """Record that the current command reads ``path`` (no-op outside a session)."""
    if _current is None:
        return
    key = _key(path)
    if key is not None:
        _current.inputs.setdefault(key, Path(path))


def note_output(path: str | os.PathLike) -> None:
    """Record that the current command has finished writing ``path``."""
    if _current is not None:
        _current.outputs.append(Path(path))


def check_not_an_input(output: str | os.PathLike) -> None:
    """UserError if ``output`` is (a name for) a file the current command reads."""
    if _current is None:
        return
    key = _key(output)
    if key is not None and key in _current.inputs:
        source = _current.inputs[key]
        same = "" if Path(output) == source else f" (the same file as '{source}')"
        raise UserError(
            f"the output '{output}' is one of this command's inputs{same}; writing it would destroy the input. "
            "Give the output another name"
        )


def in_session() -> bool:
    """True while a command runs (a command started now would be nested in it)."""
    return _current is not None


def written_files() -> list[Path]:
    """The files the current command has written so far."""
    return list(_current.outputs) if _current is not None else []


def interrupted_message() -> str:
    """One line for Ctrl-C: what the command had written before it was interrupted."""
    written = written_files()
    if not written:
        return "interrupted; nothing was written"
    shown = ", ".join(str(p) for p in written[:3])
    more = f" and {len(written) - 3} more" if len(written) > 3 else ""
    return f"interrupted; written before that: {shown}{more} (complete files; nothing else was written)"

"""The one gate every input file passes before it is opened: checkpoints, factor files, data files.

Opening a FIFO blocks until someone writes to it, and reading a device such as ``/dev/zero`` never
ends; a file larger than the free memory cannot be loaded whole. All three are refused here from
``os.stat`` alone, which neither blocks nor reads.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from uncert_cli.core import file_session
from uncert_cli.core.errors import UserError


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages: ``"a named pipe (FIFO)"``, ``"a device"``, ... (``mode``: ``st_mode``)."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def check_input_file(path: str | os.PathLike, what: str = "input file", *, whole: bool = True) -> Path:
    """``path`` if it is an existing regular file that can be read; else a :class:`UserError`.

    ``whole``: the file is read into memory entirely, so it must also fit into the available memory
    (HDF5 data files read only the rows they need and pass ``whole=False``). The file is recorded as
    an input of the running command (see :mod:`uncert_cli.core.file_session`). Symbolic links are followed.
    """
    path = Path(path).expanduser()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"no such file: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read the {what} {path} ({exc.strerror}); check the path and its permissions") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"the {what} {path} is {file_kind(st.st_mode)}, not a regular file; pass a file saved on disk")
    if whole:
        memory = available_memory()
        if memory is not None and st.st_size > memory:
            raise UserError(
                f"the {what} {path} is {st.st_size} bytes, more than the {memory} bytes of memory available; "
                "it cannot be loaded here (free memory or use a machine with more)"
            )
    file_session.note_input(path)
    return path

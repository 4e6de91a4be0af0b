"""Write-to-temporary-then-rename, so an interrupted command never leaves a partial output file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from uncert_cli.errors import UserError


def check_output_path(path: str | os.PathLike) -> Path:
    """Fail early (before any work) when the output's directory does not exist or is not writable."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output directory '{parent}' does not exist; create it first or choose another -o path")
    if not os.access(parent, os.W_OK):
        raise UserError(f"output directory '{parent}' is not writable; choose another -o path")
    if target.is_dir():
        raise UserError(f"output path '{target}' is a directory; give a file name such as {target}/factors.h5")
    return target


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the same directory so that the final ``os.replace`` is atomic.
    On any exception (including KeyboardInterrupt) the temporary file is removed.
    """
    target = check_output_path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates the file 0600; give it the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())  # on disk before the rename makes it visible
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise

"""The one write path: every output file goes through here.

An output is written to a temporary file beside its target and renamed onto it only when complete,
so an interrupted or failed command never leaves a partial file and never damages an existing one.
On top of that this module

* checks the free space before it writes (the exact size when the bytes are in memory, an estimate
  from :func:`check_free_space` before long computations),
* turns "disk full", "read-only file system" and "permission denied" (``ENOSPC``, ``EDQUOT``,
  ``EFBIG``, ``EROFS``, ``EPERM``, ``EACCES``) into a one-line :class:`UserError` naming the path and
  the bytes needed,
* follows a symbolic link (the file it points to is replaced, the link stays) and keeps an existing
  target's permission bits and, where allowed, its owner,
* holds an ``flock`` on its temporary file while writing, so that the next successful write to the
  same name can tell a temporary left by a killed process (unlocked) from one still being written,
  and removes the former,
* locks the target's folder around the rename, so that a read-modify-write (:func:`locked_update`,
  used by ``uncert tune``) never interleaves with another uncert write to that folder.

Native writers (libhdf5, safetensors' Rust code, matplotlib's C code) never write to disk: they build
the file in memory and :func:`write_bytes` writes it with Python I/O. libhdf5 crashes when the disk
fills under it mid-write (issue 19), and only Python I/O reports every failure with its ``errno``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from uncert_cli.core import file_session
from uncert_cli.core.errors import UserError
from uncert_cli.core.input_files import file_kind
from uncert_cli.core.memory import format_size

# errno values that mean "this place cannot take the file", as opposed to a bug.
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EPERM, errno.EACCES}
_WRITE_CHUNK = 1 << 24  # bytes per os.write call (16 MiB): bounded syscalls, progress on huge files
_SAFETY_MARGIN = 64 * 1024  # file-system metadata beyond the file's own bytes


def _needed_text(needed: int | None, qualifier: str = "") -> str:
    return f"; it needs {qualifier}{format_size(needed)} ({needed} bytes)" if needed is not None else ""


def resolve_target(path: str | os.PathLike) -> Path:
    """The file a write to ``path`` replaces: a symbolic link is followed (the link itself stays)."""
    target = Path(path).expanduser()
    if target.is_symlink():
        return Path(os.path.realpath(target))
    return target


def check_output_path(path: str | os.PathLike) -> Path:
    """Fail early (before any work) when the output's directory does not exist or is not writable."""
    target = resolve_target(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output directory '{parent}' does not exist; create it first or write somewhere else")
    if not os.access(parent, os.W_OK):
        raise UserError(f"output directory '{parent}' is not writable; write somewhere else")
    if target.is_dir():
        raise UserError(f"output path '{target}' is a directory; give a file name such as {target}/factors.h5")
    existing = _stat_or_none(target)
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        # The write renames a new file onto the target: onto /dev/null (as root, in /dev) or a named pipe that
        # would replace the device or pipe itself with a regular file, for every other program on the machine.
        raise UserError(f"output path '{target}' is {file_kind(existing.st_mode)}, not a regular file, and uncert "
                        "replaces its outputs whole, which would put a file in its place; give a file name "
                        "(a temporary file you delete afterwards, to discard the output)")
    file_session.check_not_an_input(target)
    return target


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist, outermost first."""
    missing: list[Path] = []
    for candidate in (folder, *folder.parents):
        try:
            if candidate.exists():
                break
        except OSError:  # a name too long to look up does not exist; mkdir says why it cannot be made
            pass
        missing.append(candidate)
    return missing[::-1]


def make_output_directory(path: str | os.PathLike, *, param: str) -> Path:
    """Create the folder ``path`` (and parents) for outputs; UserError if it is a file or cannot be made.

    The messages name the folder by the library parameter ``param`` (``"png"``, ``"output"``); the CLI
    shows it as the running command's flag. Folders created here are recorded in the command's session, which
    removes them again if the command fails before writing into them.
    """
    folder = Path(path).expanduser()
    missing = _missing_folders(folder)
    if not missing and not folder.is_dir():
        raise UserError(f"{{param}} {folder} is a file; give a directory for the outputs", param=param)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        file_session.note_created_folders([f for f in missing if os.path.isdir(f)])  # parents made before it
        raise UserError(f"cannot create the folder {folder} ({exc.strerror}); choose another {{param}} folder",
                        param=param) from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"the folder {folder} is not writable; choose another {{param}} folder", param=param)
    file_session.note_created_folders(missing)  # removed again if the command fails with them still empty
    return folder


def free_bytes(directory: str | os.PathLike) -> int:
    """Bytes an unprivileged writer may still use in ``directory``'s file system."""
    return int(shutil.disk_usage(directory).free)


def check_free_space(path: str | os.PathLike, needed: int | None, *, lower_bound: bool = False) -> None:
    """UserError when the file system of ``path`` has less than ``needed`` bytes free (None: unknown, no check).

    ``lower_bound``: ``needed`` is an estimate the file will not undercut (said so in the message).
    """
    if needed is None:
        return
    target = resolve_target(path)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        free = free_bytes(parent)
    except OSError:
        return  # no answer from statvfs (e.g. the folder is missing): the write itself will say what is wrong
    # An existing target's blocks come back only after the rename; do not count them as free.
    required = needed + _SAFETY_MARGIN
    if required > free:
        raise UserError(
            f"not enough space to write '{target}'{_needed_text(required, 'at least ' if lower_bound else '')} "
            f"with the file system's own overhead, and only {format_size(free)} is free there; "
            "free some space or write to another disk"
        )


def check_replaceable(path: str | os.PathLike) -> None:
    """Fail before any work when the existing file ``path`` could not be replaced by a new version of it.

    A command that rewrites its input (``tune``) would otherwise do all its work first and only then find
    the folder read-only or the disk too full for the new copy, which is written beside the old one.

    Raises:
        UserError: the folder is not writable, or has less room than the file's present size.
    """
    target = resolve_target(path)
    parent = target.parent if str(target.parent) else Path(".")
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write '{target}': its folder is not writable (a read-only file system, or no "
                        "permission); nothing was changed. Copy the file to a folder you can write")
    check_free_space(target, target.stat().st_size, lower_bound=True)


def write_error(exc: BaseException, target: Path, needed: int | None) -> UserError | None:
    """The one-line UserError for a failed write of ``target``, or None if ``exc`` is not about the place.

    Python I/O carries ``errno``; the native libraries (h5py, safetensors) give only a message, so
    their wording is matched too (``os error 28``, ``errno = 28``, the strerror text).
    """
    code = exc.errno if isinstance(exc, OSError) else None
    text = str(exc)
    if code is None:
        for candidate in _NO_SPACE | _NOT_WRITABLE:
            if os.strerror(candidate) in text or f"os error {candidate})" in text or f"errno = {candidate}," in text:
                code = candidate
                break
    if code in _NO_SPACE:
        return UserError(
            f"cannot write '{target}': no space left on the device{_needed_text(needed)}; nothing was changed. "
            "Free some space or write to another disk"
        )
    if code == errno.EROFS:
        return UserError(
            f"cannot write '{target}': the file system is read-only{_needed_text(needed)}; nothing was changed. "
            "Write to another folder"
        )
    if code in (errno.EPERM, errno.EACCES):
        return UserError(
            f"cannot write '{target}': permission denied (the folder or the file is not writable, or the file is "
            f"immutable){_needed_text(needed)}; nothing was changed. Check its permissions or write elsewhere"
        )
    return None


_TEMP_SUFFIX = ".tmp"


def _temporary_name_pattern(target: Path) -> re.Pattern[str]:
    # mkstemp's random part: 8 characters of [a-z0-9_]; anchored so "f.h5.x" temporaries never match "f.h5".
    return re.compile(rf"^\.{re.escape(target.name)}\.[A-Za-z0-9_]{{8}}{re.escape(_TEMP_SUFFIX)}$")


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove temporaries of ``target`` left by killed writes (nobody holds their lock); the removed paths."""
    pattern = _temporary_name_pattern(target)
    directory = target.parent if str(target.parent) else Path(".")
    removed: list[Path] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not pattern.match(name):
            continue
        candidate = directory / name
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if not os.path.isfile(candidate):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer holds it
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
                removed.append(candidate)
        finally:
            os.close(fd)
    return removed


@dataclass(frozen=True)
class FileIdentity:
    """What says "still the same file": device, inode, size and modification time in nanoseconds."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> FileIdentity:
        st = os.stat(path)  # follows links: the identity of the file the link points to
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _copy_ownership(source: os.stat_result | None, tmp: Path) -> None:
    """Give ``tmp`` the mode (and owner, where permitted) of the file it replaces, or a new file's mode."""
    if source is None:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a plain open() would give this
        return
    os.chmod(tmp, source.st_mode & 0o7777)
    if hasattr(os, "chown"):
        with contextlib.suppress(PermissionError):  # only root may give a file away; the mode is kept anyway
            os.chown(tmp, source.st_uid, source.st_gid)


_held = threading.local()  # (device, inode) of the folders this thread has locked: a nested lock is a no-op


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive ``flock`` on the folder of ``path`` for the block: uncert's writes there take turns.

    The folder, not the file: libhdf5 takes its own ``flock`` on every HDF5 file it opens (shared for
    reading), so a lock on the file would make readers fail and writers wait for them. flock locks
    belong to an open file, so a second lock by the same thread would wait for itself; the thread's
    held set makes the inner one a no-op. Other threads and processes wait.
    """
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield  # an unreadable folder cannot be locked; the identity checks still apply
        return
    held: set[tuple[int, int]] = _held.__dict__.setdefault("folders", set())
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    try:
        if key in held:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike,
    *,
    expected_bytes: int | None = None,
    before_replace: Callable[[], None] | None = None,
    in_place: bool = False,
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``expected_bytes``: checked against the free space first. ``before_replace``: called while the
    target's folder is locked, just before the rename (a read-modify-write checks there that the file is still
    the one it read). ``in_place``: the target is one of the command's inputs on purpose (``tune``).
    On any exception (KeyboardInterrupt included) the temporary file is removed and the target is
    untouched; a full disk, a read-only file system or a permission problem is a :class:`UserError`.
    Prefer :func:`write_bytes`: here the caller's code writes the temporary file, so a native library
    may meet the full disk itself.
    """
    target = check_output_path(path) if not in_place else resolve_target(path)
    check_free_space(target, expected_bytes)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TEMP_SUFFIX, dir=directory)
    except OSError as exc:
        raise write_error(exc, target, expected_bytes) or exc from None
    tmp = Path(tmp_name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # "being written": see remove_stale_temporaries
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())  # on disk before the rename makes it visible
        with _locked(target):
            existing = _stat_or_none(target)
            _copy_ownership(existing, tmp)
            if before_replace is not None:
                before_replace()
            os.replace(tmp, target)
        file_session.note_output(target)
    except BaseException as exc:
        if _is_same_file(fd, target) and target not in file_session.written_files():
            file_session.note_output(target)  # renamed, then interrupted (Ctrl-C) before it was noted
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        translated = write_error(exc, target, expected_bytes) if isinstance(exc, Exception) else None
        if translated is not None:
            raise translated from None
        raise
    finally:
        os.close(fd)
    remove_stale_temporaries(target)


def _is_same_file(fd: int, path: Path) -> bool:
    """True if ``path`` is now the file open as ``fd``."""
    try:
        ours, theirs = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino)


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def write_bytes(
    path: str | os.PathLike,
    data: bytes | bytearray | memoryview,
    *,
    before_replace: Callable[[], None] | None = None,
    in_place: bool = False,
) -> Path:
    """Write ``data`` to ``path`` atomically with Python I/O (see :func:`atomic_output`); the target path."""
    view = memoryview(data).cast("B")
    with atomic_output(path, expected_bytes=len(view), before_replace=before_replace, in_place=in_place) as tmp:
        with open(tmp, "r+b", buffering=0) as handle:
            for start in range(0, len(view), _WRITE_CHUNK):
                chunk = view[start:start + _WRITE_CHUNK]
                while chunk:
                    written = handle.write(chunk)
                    chunk = chunk[written:]
    return resolve_target(path)


@contextlib.contextmanager
def locked_update(path: str | os.PathLike, expected: FileIdentity | None = None) -> Iterator[Path]:
    """Hold the write lock of ``path``'s folder for a read-modify-write; yields the resolved path.

    ``expected``: the identity the caller saw when it first read the file (e.g. before a long
    computation); if the file at ``path`` is no longer that file, the update is refused. Writes made
    inside the block with ``before_replace=check`` are checked again right before their rename.
    """
    target = resolve_target(path)
    with _locked(target):
        check_unchanged(target, expected)
        yield target


def check_unchanged(path: Path, expected: FileIdentity | None) -> None:
    """UserError if the file at ``path`` is not the one described by ``expected`` (None: no check)."""
    if expected is None:
        return
    try:
        now = FileIdentity.of(path)
    except FileNotFoundError:
        now = None
    if now != expected:
        raise UserError(
            f"'{path}' was replaced or changed by another command while this one was running; nothing was "
            "written into it. Run this command again on the file as it is now"
        )


@contextlib.contextmanager
def in_memory_output(path: str | os.PathLike, **options: object) -> Iterator[io.BytesIO]:
    """Yield an in-memory file; when the block succeeds, write its bytes to ``path`` with :func:`write_bytes`.

    For native writers (h5py with a file object, matplotlib's ``savefig``, safetensors' ``save``):
    they fill memory, and only Python I/O touches the disk. ``options`` go to :func:`write_bytes`.
    """
    if not options.get("in_place"):
        check_output_path(path)  # before the caller spends time building the file
    buffer = io.BytesIO()
    yield buffer
    with buffer.getbuffer() as view:  # no copy of the bytes
        write_bytes(path, view, **options)  # type: ignore[arg-type]

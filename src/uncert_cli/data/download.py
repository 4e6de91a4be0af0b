"""Fetching built-in datasets with torchvision (only ever when the user passed --download)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from uncert_cli.core.errors import UserError


def download_with_torchvision(dataset: str, target_dir: Path, fetch: Callable[[], object]) -> None:
    """Run ``fetch`` (a torchvision dataset constructor with ``download=True``) into ``target_dir``.

    torchvision verifies the MD5 of every archive it downloads. Network and checksum failures become
    a UserError that says where the files should go instead.
    """
    created = _first_missing(target_dir)
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        fetch()
    except BaseException as err:
        # Folders this attempt created hold nothing but its partial files: leave the disk as it was.
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(err, (UserError, KeyboardInterrupt, SystemExit)) or not isinstance(err, Exception):
            raise
        # urllib, OSError, RuntimeError("... corrupted") - all mean "could not get it"
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UserError(
            f"downloading '{dataset}' into {target_dir} failed ({reason}); check the network connection, "
            f"or put the files there by hand and run without {{param}}",
            param="download",
        ) from err


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder on the way to ``folder`` that does not exist yet (``None``: all exist)."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing

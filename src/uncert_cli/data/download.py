"""Fetching built-in datasets with torchvision (only ever when the user passed --download)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from uncert_cli.errors import UserError


def download_with_torchvision(dataset: str, target_dir: Path, fetch: Callable[[], object]) -> None:
    """Run ``fetch`` (a torchvision dataset constructor with ``download=True``) into ``target_dir``.

    torchvision verifies the MD5 of every archive it downloads. Network and checksum failures become
    a UserError that says where the files should go instead.
    """
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        fetch()
    except UserError:
        raise
    except Exception as err:  # urllib, OSError, RuntimeError("... corrupted") - all mean "could not get it"
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UserError(
            f"downloading '{dataset}' into {target_dir} failed ({reason}); check the network connection, "
            f"or put the files there by hand and run without {{param}}",
            param="download",
        ) from err

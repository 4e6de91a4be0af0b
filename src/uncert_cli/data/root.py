"""Where built-in datasets live on disk."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "UNCERT_DATA"


def default_cache_dir() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/uncert/data``, else ``~/.cache/uncert/data``."""
    xdg_cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg_cache) if xdg_cache and Path(xdg_cache).is_absolute() else Path.home() / ".cache"
    return base / "uncert" / "data"


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds built-in datasets.

    Precedence: the explicit ``root`` (``--data-root``) > ``$UNCERT_DATA`` > :func:`default_cache_dir`.
    Empty strings count as unset. ``~`` is expanded; the folder need not exist yet.
    """
    if root is not None and str(root).strip():
        return Path(root).expanduser()
    from_env = os.environ.get(DATA_ENV_VAR, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    return default_cache_dir()

"""Importing Hugging Face packages (transformers, datasets) with the network switched off and quiet.

Both read their offline switches when first imported, so they are set before the import. Their progress
bars and advice would break uncert's stderr (one line per error, ``--quiet``, ``--json``), so both are
silenced the same way (each has ``utils.logging``).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from uncert_cli.core.errors import UserError

_OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def import_offline(package: str, missing: str) -> Any:
    """``package`` imported offline and silenced; ``UserError(missing)`` when it is not installed."""
    for name in _OFFLINE:
        os.environ.setdefault(name, "1")
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise UserError(missing) from None
    module.utils.logging.disable_progress_bar()
    module.utils.logging.set_verbosity_error()
    return module

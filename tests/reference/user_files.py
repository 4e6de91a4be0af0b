"""A user's own model file, imported the way their training script would have imported it.

The tests that need one (checkpoints pickled from a user's class, ``--arch mynet:Net``) import it once to
save weights, then take the folder off ``sys.path`` again so that uncert has to find the file itself.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType


def import_user_file(folder: Path, name: str, forget: bool = True) -> ModuleType:
    """Import ``folder/name.py`` as module ``name``; ``folder`` is on ``sys.path`` only during the import.

    ``forget`` also drops the module from ``sys.modules``, as if it had been imported in another process."""
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))
        if forget:
            sys.modules.pop(name, None)

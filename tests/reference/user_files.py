"""A user's own model file, imported the way their training script would have imported it.

The tests that need one (checkpoints pickled from a user's class, ``--arch mynet:Net``) import it once to
save weights, then take the folder off ``sys.path`` again so that uncert has to find the file itself.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch


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


def save_user_checkpoint(folder: Path, module: str, source: str, cls: str = "Net", checkpoint: str = "net.pt") -> Any:
    """Write ``source`` to ``folder/module.py``, build ``cls`` from it under seed 0 and ``torch.save`` its state
    dict to ``folder/checkpoint``; returns the model (the weights the checkpoint holds)."""
    (folder / f"{module}.py").write_text(source)
    torch.manual_seed(0)
    model = getattr(import_user_file(folder, module), cls)()
    torch.save(model.state_dict(), folder / checkpoint)
    return model


def save_gaussian_images(path: Path, n: int, classes: int) -> np.ndarray:
    """``n`` standard-normal 1×8×8 images (seed 0) with labels ``0, 1, ..., classes-1, 0, ...`` as ``x``/``y`` in an npz."""
    x = np.random.default_rng(0).normal(size=(n, 1, 8, 8)).astype(np.float32)
    np.savez(path, x=x, y=np.arange(n) % classes)
    return x

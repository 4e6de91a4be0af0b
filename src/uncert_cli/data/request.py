"""What a registry loader is asked for (one object, so every loader has the same signature)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from uncert_cli.data.dataset import ArrayDataset


@dataclass(frozen=True)
class LoadRequest:
    """Arguments of :func:`uncert_cli.data.load_dataset`, already validated.

    ``root`` is the resolved data root (see :func:`uncert_cli.data.data_root`); ``limit`` is None or >= 1.
    Loaders may apply ``limit`` early to save work; ``load_dataset`` applies it again afterwards.
    """

    name: str
    split: str
    root: Path
    limit: int | None = None
    download: bool = False
    seed: int = 0


Loader = Callable[[LoadRequest], ArrayDataset]

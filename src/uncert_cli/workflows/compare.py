"""``uncert compare``'s library half: open two or more factor files of one checkpoint and compare them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from uncert_cli.analysis.compare import DEFAULT_FRACTION, PosteriorComparison, check_options, compare_posteriors
from uncert_cli.core.errors import UserError
from uncert_cli.storage.factor_file import read_provenance
from uncert_cli.storage.opening import OpenedFactors, open_posterior


@dataclass
class ComparedFiles:
    """The opened factor files and their comparison (the first file is the reference)."""
    opened: list[OpenedFactors]  # in the order given; the first is the reference
    comparison: PosteriorComparison


def check_distinct_files(paths: Sequence[Path]) -> None:
    """Refuse one file given twice, also under another name (a symbolic or hard link, ``./a.h5``): it would
    be compared with itself, every correlation 1 and every divergence 0.

    Raises:
        UserError: two of ``paths`` are the same file on disk.
    """
    seen: dict[tuple[int, int], Path] = {}
    for path in paths:
        try:
            status = path.stat()  # follows links: the file itself decides
        except OSError:
            continue  # a missing or unreadable file is reported when it is opened
        first = seen.setdefault((status.st_dev, status.st_ino), path)
        if first is not path:
            same = "given twice" if str(first) == str(path) else f"the same file as '{first}'"
            raise UserError(f"'{path}' is {same}; compare two or more different factor files of one checkpoint")


def check_same_checkpoint(paths: Sequence[Path]) -> None:
    """Refuse files fitted on different weights, from their attributes alone (no arrays read).

    Raises:
        UserError: two files record different weight fingerprints.
    """
    first = read_provenance(paths[0])
    for path in paths[1:]:
        other = read_provenance(path)
        if other["fingerprint"] != first["fingerprint"]:
            raise UserError(
                f"'{path}' was fitted on other weights than '{paths[0]}' (fingerprint {other['fingerprint'][:12]} "
                f"vs {first['fingerprint'][:12]}, checkpoints '{other['checkpoint']}' and '{first['checkpoint']}'); "
                "compare posteriors of one checkpoint"
            )


def compare_factor_files(paths: Sequence[Path], *, criterion: str = "snr", fraction: float = DEFAULT_FRACTION,
                         device: torch.device | str = "cpu") -> ComparedFiles:
    """Open each file with its own (possibly tuned) hyperparameters and compare the posteriors.

    Arithmetic on the stored factors and weights only: a user's class is never imported.

    Returns:
        The opened files and the per-layer comparison against the first.
    """
    check_options(len(paths), criterion, fraction)
    check_distinct_files(paths)
    check_same_checkpoint(paths)
    opened = [open_posterior(p, device=device, runs_model=False) for p in paths]
    comparison = compare_posteriors([o.posterior for o in opened], criterion=criterion, fraction=fraction)
    return ComparedFiles(opened=opened, comparison=comparison)

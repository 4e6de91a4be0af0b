"""``uncert report`` as a library call: where a factor file's posterior uncertainty lives, layer by layer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from uncert_cli.analysis import analyse_posterior
from uncert_cli.analysis.layer_stats import UncertaintyReport
from uncert_cli.storage.opening import OpenedFactors, open_posterior


@dataclass
class FactorFileReport:
    """The per-layer statistics of a factor file's posterior, with the file and network they describe."""

    opened: OpenedFactors
    layers: UncertaintyReport
    total_params: int  # every parameter of the network, covered by the posterior or not


def report_factor_file(
    path: str | Path,
    *,
    prior_precision: float | None = None,
    n_data: float | None = None,
    device: torch.device | str = "cpu",
) -> FactorFileReport:
    """Open the factor file at ``path`` and analyse its posterior (per-layer σ, variance shares, verdict).

    A report is arithmetic on the stored factors and weights, so the network's class is never imported
    (``runs_model=False``). ``prior_precision``/``n_data``: None keeps the file's (possibly tuned) value. A
    damaged file or an unusable stored value is a ``UserError`` from the opening (naming ``prior_precision``
    or ``n_data``, which replace a stored value).

    Returns:
        The opened file and its statistics (:class:`~uncert_cli.analysis.layer_stats.UncertaintyReport`).
    """
    opened = open_posterior(path, prior_precision=prior_precision, n_data=n_data, device=device,
                            flags=("prior_precision", "n_data"), runs_model=False)
    layers = analyse_posterior(opened.posterior, opened.model.meta.input_shape)
    total = sum(p.numel() for p in opened.model.module.parameters())
    return FactorFileReport(opened=opened, layers=layers, total_params=total)

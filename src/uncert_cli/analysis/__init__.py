"""Analyses of a Laplace posterior: numbers in, dataclasses out, no printing.

* :mod:`.layer_stats` -- where the posterior variance lives, per layer (``uncert report``).
* :mod:`.pruning` -- per-weight pruning scores, selection and evaluation (``uncert prune``).
* :mod:`.ood` -- detection and calibration of predictives on in- and out-of-distribution sets.
* :mod:`.attack` -- fast-gradient-sign attacks through a predictive.
* :mod:`.metrics` -- calibration and detection metrics on arrays.

Nothing here fits a posterior or opens a file; :mod:`uncert_cli.workflows` does both and calls these.
"""

from uncert_cli.analysis.layer_stats import (
    BARELY_IDENTIFIED_RATIO,
    FirstLayerMap,
    LayerDetail,
    LayerStats,
    UncertaintyReport,
    Verdict,
    analyse_posterior,
)

__all__ = [
    "BARELY_IDENTIFIED_RATIO",
    "FirstLayerMap",
    "LayerDetail",
    "LayerStats",
    "UncertaintyReport",
    "Verdict",
    "analyse_posterior",
]

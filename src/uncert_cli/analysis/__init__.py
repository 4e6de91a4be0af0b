"""Analyses of a Laplace posterior: numbers in, dataclasses out, no printing.

* :mod:`.layer_stats` -- where the posterior variance lives, per layer (``uncert report``).
* :mod:`.pruning` -- per-weight pruning scores, selection and evaluation (``uncert prune``).
* :mod:`.tracking` -- layer statistics across the checkpoints of a training run (``uncert track``).
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

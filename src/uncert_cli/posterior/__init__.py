"""Laplace posteriors over trained networks from curvature blocks of any structure.

One module per concept: ``structures`` (one class per block structure: diagonal, Kronecker, EKFAC,
dense, low-rank, KFAC + diagonal, behind one protocol), ``sampling``, ``marginals``,
``output_covariance``, ``predictives`` (one object per predictive in one registry; ``predictive`` is
its older import path), ``marglik`` (evidence, log-det, entropy), ``tuning``,
``widest``; ``laplace`` ties them together. ``precision`` and ``structured`` are older import paths.
"""

from uncert_cli.posterior.laplace import LaplacePosterior
from uncert_cli.posterior.precision import PriorMode
from uncert_cli.posterior.predictive import Predictive
from uncert_cli.posterior.tuning import TuneResult, grid_edges, tune_prior_marglik, tune_val_nll, validation_nll
from uncert_cli.posterior.widest import DEFAULT_NLL_TOLERANCE, tune_widest, validation_scores

__all__ = [
    "LaplacePosterior",
    "PriorMode",
    "Predictive",
    "TuneResult",
    "tune_prior_marglik",
    "tune_val_nll",
    "grid_edges",
    "validation_nll",
    "tune_widest",
    "validation_scores",
    "DEFAULT_NLL_TOLERANCE",
]

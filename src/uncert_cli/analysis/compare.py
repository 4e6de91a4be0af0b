"""Two or more posteriors of one network side by side, layer by layer (``uncert compare``).

The posteriors may differ in method (diag, kfac, vi, ...) or hyperparameters (N, τ); they must hold
the same weights (the caller checks the fingerprints). A *layer* here is the module that owns a
parameter (``fc1`` for ``fc1.weight`` and ``fc1.bias``), so a joint block (``full``, ``lowrank``)
is split into the same rows as a per-layer fit and the rows of any two files line up.

Per layer and file (``σ²`` a parameter's marginal posterior variance, ``1/τ`` its prior variance):

* ``variance_share``: the layer's ``Σσ²`` over the file's total ``Σσ²``;
* ``posterior_std_mean``: the mean of ``σ``;
* ``variance_ratio``: the mean of ``σ²·τ`` (1: the data left the prior as it was).

Per layer, the first file (the reference ``A``) against each other file ``B``:

* ``std_spearman``: Spearman's rank correlation of the per-parameter ``σ`` (ties get average ranks;
  null where either file's ``σ`` is constant over the layer);
* ``top_overlap``: of the ``k = max(1, round(fraction · n))`` weights of the layer that ``criterion``
  would prune first (weight tensors only, as ``uncert prune``: no biases or 1-D parameters), the
  share both files pick; null for a layer without weight tensors;
* ``kl``: ``KL(q_A ‖ q_B)`` of the two product-of-marginals Gaussians over the layer's parameters,
  ``½ Σ (σ_A²/σ_B² + (μ_B − μ_A)²/σ_B² − 1 + ln σ_B²/σ_A²)`` in nats, and ``kl_per_weight`` the
  same divided by the layer's parameter count. It ignores the correlations a Kronecker or dense
  block has: it compares what the two posteriors say about each weight alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor

from uncert_cli.analysis.pruning import CRITERIA, score_weights
from uncert_cli.core.errors import UserError
from uncert_cli.posterior import LaplacePosterior

DEFAULT_FRACTION = 0.1  # share of a layer's weights in the compared pruning candidates


@dataclass
class FileLayer:
    """One file's numbers for one layer (see the module docstring)."""

    variance_share: float
    posterior_std_mean: float
    variance_ratio: float


@dataclass
class PairLayer:
    """The reference file against another one, for one layer (see the module docstring)."""

    std_spearman: float | None
    top_overlap: float | None
    top_k: int | None
    kl: float
    kl_per_weight: float


@dataclass
class LayerComparison:
    """One layer: ``files[i]`` is ``None`` where file ``i`` does not cover it; ``versus_first[j]``
    compares file 0 with file ``j + 1`` (``None`` where either does not cover the layer).
    """

    name: str
    params: int
    files: list[FileLayer | None]
    versus_first: list[PairLayer | None]
    std: list[Tensor | None]  # per file: the layer's per-parameter σ, (params,) float64; for plots


@dataclass
class PosteriorComparison:
    criterion: str
    fraction: float
    layers: list[LayerComparison]  # network order of the reference, then layers only later files cover


def owning_module(param_name: str) -> str:
    """``fc1`` for ``fc1.weight``; a parameter of the root module is its own row."""
    return param_name.rsplit(".", 1)[0] if "." in param_name else param_name


@dataclass
class _Flat:
    """One file's flat per-parameter arrays, by parameter name (float64)."""

    mean: dict[str, Tensor]
    var: dict[str, Tensor]
    prior_var: dict[str, float]
    prune_key: dict[str, Tensor]  # weight tensors only: lowest key pruned first
    total_var: float
    order: list[str]  # covered parameter names in network order


def _flatten(posterior: LaplacePosterior, criterion: str) -> _Flat:
    variances = posterior.marginal_variance()
    var = {n: v.detach().double().reshape(-1).cpu() for n, v in variances.items()}
    mean = {n: posterior.map_parameters[n].detach().double().reshape(-1).cpu() for n in var}
    keys: dict[str, Tensor] = {}
    if any(posterior.map_parameters[n].ndim >= 2 for n in var):  # else nothing to prune (biases, norms)
        scored = score_weights(posterior, criterion)
        split = scored.keys().double().cpu().split([p.mean.numel() for p in scored.params])
        keys = {p.param_name: key for p, key in zip(scored.params, split)}
    order = [n for spec in posterior.specs for n in spec.param_names]
    return _Flat(mean, var, posterior.prior_variance(), keys, float(sum(v.sum() for v in var.values())), order)


def _rows(flats: list[_Flat]) -> dict[str, list[str]]:
    """Layer name -> its parameter names, in the order the files list them (reference first)."""
    rows: dict[str, list[str]] = {}
    for flat in flats:
        for name in flat.order:
            names = rows.setdefault(owning_module(name), [])
            if name not in names:
                names.append(name)
    return rows


def _file_layer(flat: _Flat, names: list[str]) -> FileLayer | None:
    if not all(n in flat.var for n in names):
        return None
    var = torch.cat([flat.var[n] for n in names])
    ratio = torch.cat([flat.var[n] / flat.prior_var[n] for n in names])
    share = float(var.sum()) / flat.total_var if flat.total_var > 0 else math.nan
    return FileLayer(variance_share=share, posterior_std_mean=float(var.sqrt().mean()),
                     variance_ratio=float(ratio.mean()))


def _spearman(a: Tensor, b: Tensor) -> float | None:
    if a.numel() < 2 or bool((a == a[0]).all()) or bool((b == b[0]).all()):
        return None  # a constant σ has no ranking
    rho = spearmanr(a.numpy(), b.numpy()).statistic
    return float(rho) if np.isfinite(rho) else None


def _top_overlap(a: _Flat, b: _Flat, names: list[str], fraction: float) -> tuple[float | None, int | None]:
    weights = [n for n in names if n in a.prune_key and n in b.prune_key]
    if not weights:
        return None, None
    key_a = torch.cat([a.prune_key[n] for n in weights])
    key_b = torch.cat([b.prune_key[n] for n in weights])
    k = max(1, int(round(fraction * key_a.numel())))
    top_a = torch.sort(key_a, stable=True).indices[:k]
    top_b = torch.sort(key_b, stable=True).indices[:k]
    both = torch.zeros(key_a.numel(), dtype=torch.int8)
    both[top_a] += 1
    both[top_b] += 1
    return int((both == 2).sum()) / k, k


def _pair_layer(a: _Flat, b: _Flat, names: list[str], fraction: float) -> PairLayer | None:
    if not all(n in a.var and n in b.var for n in names):
        return None
    var_a = torch.cat([a.var[n] for n in names])
    var_b = torch.cat([b.var[n] for n in names])
    diff = torch.cat([b.mean[n] - a.mean[n] for n in names])
    kl = 0.5 * float((var_a / var_b + diff.square() / var_b - 1 + torch.log(var_b / var_a)).sum())
    overlap, k = _top_overlap(a, b, names, fraction)
    return PairLayer(std_spearman=_spearman(var_a.sqrt(), var_b.sqrt()), top_overlap=overlap, top_k=k,
                     kl=kl, kl_per_weight=kl / var_a.numel())


def check_options(count: int, criterion: str, fraction: float) -> None:
    """Refuse what :func:`compare_posteriors` cannot do, before any file is read.

    Raises:
        UserError: fewer than two posteriors, an unknown ``criterion``, ``fraction`` outside (0, 1].
    """
    if count < 2:
        raise UserError("compare needs at least two factor files of the same checkpoint")
    if criterion not in CRITERIA:
        raise UserError(f"unknown pruning criterion '{criterion}'; use one of {', '.join(CRITERIA)}", param="criterion")
    if not (0.0 < fraction <= 1.0):
        raise UserError(f"{{param}} must be above 0 and at most 1, got {fraction}", param="fraction")


def compare_posteriors(posteriors: list[LaplacePosterior], *, criterion: str = "snr",
                       fraction: float = DEFAULT_FRACTION) -> PosteriorComparison:
    """Per-layer numbers of each posterior and of the first against each other one (module docstring).

    Raises:
        UserError: fewer than two posteriors, an unknown ``criterion``, ``fraction`` outside (0, 1].
    """
    check_options(len(posteriors), criterion, fraction)
    flats = [_flatten(p, criterion) for p in posteriors]
    layers: list[LayerComparison] = []
    for name, names in _rows(flats).items():
        params = sum(next(f.var[n].numel() for f in flats if n in f.var) for n in names)
        layers.append(LayerComparison(
            name=name,
            params=params,
            files=[_file_layer(f, names) for f in flats],
            versus_first=[_pair_layer(flats[0], f, names, fraction) for f in flats[1:]],
            std=[torch.cat([f.var[n] for n in names]).sqrt() if all(n in f.var for n in names) else None
                 for f in flats],
        ))
    return PosteriorComparison(criterion=criterion, fraction=fraction, layers=layers)

"""Where the posterior uncertainty lives: per-layer statistics of a Laplace posterior.

Everything is computed from the posterior's marginal variances (for Kronecker blocks these come from
the factor eigendecompositions, ``(Ug²) M⁻¹ (Ua²)ᵀ``), so no dense covariance is ever formed and a
1.9M-parameter network takes a few matrix products.

Definitions (per layer = per curvature block = per module; ``σ²`` the marginal posterior variance of
one parameter, ``σ²_prior = 1/τ`` its prior variance, ``μ`` its MAP value):

* ``variance_share``: ``Σ_layer σ² / Σ_all σ²`` -- which fraction of the total posterior variance
  (the trace of the covariance) sits in this layer.
* ``variance_ratio``: the mean over the layer's parameters of ``σ² / σ²_prior``. Near 1: the data
  did not move the weight's uncertainty away from the prior; near 0: the data pinned it down.
* ``barely_identified_fraction``: the fraction of the layer's parameters with ``σ²/σ²_prior >``
  :data:`BARELY_IDENTIFIED_RATIO` (0.9): the data removed less than 10% of the prior variance.
* ``effective_params``: MacKay's ``γ = Σ λ/(λ+τ)`` over the eigenvalues ``λ`` of the block's data
  term ``N·curvature``: how many directions the data determined.
* ``entropy_per_param``: the block's Gaussian entropy ``½(P(1+log 2π) − log det precision)`` divided
  by ``P``, in nats.
* ``relative_std_median``: the median of ``σ/|μ|`` (infinite for weights that are exactly 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from uncert_cli.checkpoint.stored import module_kind
from uncert_cli.posterior import LaplacePosterior

#: A parameter whose posterior variance is above this fraction of its prior variance is "barely
#: identified by the data" (the data removed less than 10% of the prior's variance).
BARELY_IDENTIFIED_RATIO = 0.9


@dataclass
class LayerStats:
    """Summary numbers of one layer (one curvature block); see the module docstring."""

    name: str  # module path, e.g. "fc1"
    kind: str  # "linear", "conv" or the module's class name in lower case
    structure: str  # "kronecker", "diagonal", or the fitted structure's name (ekfac, kron-diag, lowrank, dense)
    params: int
    prior_precision: float
    posterior_std_mean: float
    posterior_std_median: float
    posterior_std_max: float
    relative_std_median: float
    variance_share: float
    variance_ratio: float
    effective_params: float
    entropy_per_param: float
    barely_identified_fraction: float


@dataclass
class LayerDetail:
    """Per-parameter arrays of one layer, for plots.

    ``std`` and ``snr`` are flat over all the block's parameters, ``(P,)``. ``weight_std`` has the
    weight's shape; ``sigma_map`` is a 2-D picture of the weight's σ: ``(O, I)`` for a Linear layer,
    ``(O, kh, kw)`` (mean over input channels; 1-D kernels become ``(O, 1, k)``) for a convolution, else ``None``.
    ``input_eigenvalues`` ``(I',)`` / ``output_eigenvalues`` ``(O,)`` are the KFAC factor spectra
    (``None`` for diagonal blocks).
    """

    name: str
    kind: str
    weight_name: str
    weight_std: Tensor
    std: Tensor
    snr: Tensor
    sigma_map: Tensor | None
    input_eigenvalues: Tensor | None
    output_eigenvalues: Tensor | None


@dataclass
class FirstLayerMap:
    """σ of the first layer's weights aggregated per input feature (mean over output units).

    ``kind="pixels"``: the first layer is Linear over the flattened input, ``values`` has the model's
    ``input_shape`` ``(C, H, W)`` (or ``(D,)``). ``kind="kernel"``: the first layer is a convolution,
    whose weights are shared over positions, so the map is per kernel tap, ``(C_in, kh, kw)``.
    """

    layer: str
    kind: str
    values: Tensor


@dataclass
class Verdict:
    """The plain-language summary and the numbers it quotes."""

    text: str
    top_layer: str
    top_variance_share: float
    top_barely_identified_fraction: float
    barely_identified_fraction: float  # over all covered parameters


@dataclass
class UncertaintyReport:
    layers: list[LayerStats]  # network order
    details: list[LayerDetail]
    first_layer: FirstLayerMap | None
    verdict: Verdict
    covered_params: int
    effective_params: float
    entropy: float  # nats, all blocks
    total_variance: float  # Σ σ² over all covered parameters


def _get_module(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _median(x: Tensor) -> float:
    # torch.median returns the lower middle value; fine for a summary and exact for odd counts.
    return float(x.median()) if x.numel() else math.nan


def analyse_posterior(posterior: LaplacePosterior, input_shape: tuple[int, ...] | None = None) -> UncertaintyReport:
    """Per-layer statistics of ``posterior`` in network (block) order."""
    variances = posterior.marginal_variance()
    prior_var = posterior.prior_variance()
    taus = posterior.prior_precision
    gammas = posterior.effective_params()
    entropies = posterior.entropy()
    total_variance = float(sum(v.double().sum() for v in variances.values()))

    layers: list[LayerStats] = []
    details: list[LayerDetail] = []
    barely_total = 0
    for spec in posterior.specs:
        names = spec.param_names
        var = torch.cat([variances[n].double().reshape(-1) for n in names])  # (P,)
        mean = torch.cat([posterior.map_parameters[n].double().reshape(-1) for n in names])  # (P,)
        std = var.sqrt()
        ratio = torch.cat([variances[n].double().reshape(-1) / prior_var[n] for n in names])
        barely = int((ratio > BARELY_IDENTIFIED_RATIO).sum())
        barely_total += barely
        kind = module_kind(_get_module(posterior.model, spec.module))
        if kind == "unknown" and "+" in spec.module:
            # a joint block over several modules: tied weights (diag/kfac) or a full/lowrank fit
            kind = "joint"
        structure = spec.tag  # as `uncert fit` and the factor file name it
        layers.append(
            LayerStats(
                name=spec.module,
                kind=kind,
                structure=structure,
                params=spec.num_params,
                prior_precision=taus[spec.module],
                posterior_std_mean=float(std.mean()),
                posterior_std_median=_median(std),
                posterior_std_max=float(std.max()),
                relative_std_median=_median(std / mean.abs()),
                variance_share=float(var.sum()) / total_variance if total_variance > 0 else math.nan,
                variance_ratio=float(ratio.mean()),
                effective_params=gammas[spec.module],
                entropy_per_param=entropies[spec.module] / spec.num_params,
                barely_identified_fraction=barely / spec.num_params,
            )
        )
        weight_std = variances[names[0]].double().sqrt()
        eigen = spec.kronecker_eigen  # the factor spectra, where the structure has Kronecker factors
        details.append(
            LayerDetail(
                name=spec.module,
                kind=kind,
                weight_name=names[0],
                weight_std=weight_std,
                std=std,
                snr=mean.abs() / std,
                sigma_map=_sigma_map(kind, weight_std),
                input_eigenvalues=eigen.input_eigenvalues.double() if eigen is not None else None,
                output_eigenvalues=eigen.output_eigenvalues.double() if eigen is not None else None,
            )
        )
    covered = sum(layer.params for layer in layers)
    return UncertaintyReport(
        layers=layers,
        details=details,
        first_layer=_first_layer_map(details[0], input_shape) if details else None,
        verdict=make_verdict(layers, barely_total / covered if covered else math.nan),
        covered_params=covered,
        effective_params=gammas["total"],
        entropy=entropies["total"],
        total_variance=total_variance,
    )


def _sigma_map(kind: str, weight_std: Tensor) -> Tensor | None:
    """A 2-D (Linear: ``(O, I)``) or per-output-channel (conv: ``(O, kh, kw)``) picture of σ."""
    if kind == "linear" and weight_std.ndim == 2:
        return weight_std
    if kind == "conv" and weight_std.ndim >= 3:
        per_channel = weight_std.mean(dim=1)  # average over input channels: (O, *kernel)
        return per_channel if per_channel.ndim == 3 else per_channel.reshape(per_channel.shape[0], 1, -1)
    return None


def _first_layer_map(detail: LayerDetail, input_shape: tuple[int, ...] | None) -> FirstLayerMap | None:
    w = detail.weight_std
    if detail.kind == "linear" and w.ndim == 2:
        per_input = w.mean(dim=0)  # (I,): mean σ over the output units reading this input feature
        if input_shape is not None and math.prod(input_shape) == per_input.numel():
            return FirstLayerMap(detail.name, "pixels", per_input.reshape(input_shape))
        return FirstLayerMap(detail.name, "pixels", per_input)
    if detail.kind == "conv" and w.ndim >= 3:
        return FirstLayerMap(detail.name, "kernel", w.mean(dim=0))  # (C_in, *kernel)
    return None


def make_verdict(layers: list[LayerStats], barely_overall: float) -> Verdict:
    """The one-paragraph answer to "where is the uncertainty?"."""
    top = max(layers, key=lambda layer: (layer.variance_share if math.isfinite(layer.variance_share) else -1.0))
    text = (
        f"{top.variance_share:.0%} of the posterior variance sits in layer {top.name}; "
        f"{top.barely_identified_fraction:.0%} of its weights are barely identified by the data "
        f"(posterior variance above {BARELY_IDENTIFIED_RATIO:.0%} of the prior's). "
        f"Over the whole network {barely_overall:.0%} of the parameters are barely identified."
    )
    return Verdict(
        text=text,
        top_layer=top.name,
        top_variance_share=top.variance_share,
        top_barely_identified_fraction=top.barely_identified_fraction,
        barely_identified_fraction=barely_overall,
    )

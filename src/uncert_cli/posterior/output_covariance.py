"""``J(x) Σ J(x)ᵀ`` of the linearised network, per example, without per-example parameter Jacobians.

For a Linear/Conv unit the Jacobian of output ``c`` of example ``n`` with respect to the packed
weights ``W_aug = [W | b]`` is ``J_{n,c} = Σ_p g_{c,n,p} a_{n,p}ᵀ`` (``a``: input with a 1 appended,
``g``: the derivative of output ``c`` with respect to the unit's output, ``p``: positions). The
posterior covariance of a Kronecker block is diagonal in the basis ``U_G ⊗ U_A`` with inverse
eigenvalues ``S = 1/M`` (``(O, I')``); a diagonal block is the same with identity bases. So

    (J Σ Jᵀ)_{n,c,d} = Σ_{o,i} Ĵ_{n,c,o,i} Ĵ_{n,d,o,i} S_{o,i},   Ĵ_{n,c} = U_Gᵀ J_{n,c} U_A,

and with one position (a Linear on ``(B, I)`` inputs, called once) it factorises further:
``Σ_o ĝ_{c,n,o} ĝ_{d,n,o} w_{n,o}`` with ``w_n = S â_n²`` -- three small matrix products per batch
on top of one forward pass and one batched backward of the ``C`` unit vectors to the unit outputs
(the curvature engine's hooks). Memory is ``B·C`` times the unit outputs; the ``(B, C, P)``
Jacobian is never formed.

:func:`output_covariance` returns ``None`` when a block is not a Linear/Conv Kronecker or diagonal
block (norm layers, dense, low-rank): callers then use the generic per-example VJP path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from uncert_cli.core.model_state import model_state
from uncert_cli.core.slow_path import announce_slow_path, vmap_unsupported
from uncert_cli.curvature.hooks import Capture, backprop_vectors, output_entries
from uncert_cli.curvature.kronecker import conv_patches, per_example_rows
from uncert_cli.curvature.live_tap_convs import live_tap_convs
from uncert_cli.curvature.subset import Unit, conv_padding, select_units
from uncert_cli.posterior.structures import Structure

# Bound on B·C·O·I' numbers of the rotated per-example Jacobian formed for multi-position units.
CHUNK_ELEMENTS = 1 << 24
# Bound on examples × outputs backpropagated at once: the backward carries C vectors per example through
# every unit output, so a 1000-class model takes 65 examples at a time (10 classes: 6,553).
OUTPUT_ROWS = 1 << 16
# Bound on the numbers those vectors hold at the unit outputs (C per example and unit output element):
# resnet18 at 3×224×224 has 5.0M unit outputs per example (its BatchNorms' included), so 500 examples of
# 10 classes would hold 100 GB; 2²⁷ float32 numbers are 512 MiB (2 examples at a time there, 132 at 3×32×32).
VECTOR_ELEMENTS = 1 << 27


def _rotated_rows(unit: Unit, spec: Structure, prec: Tensor, a: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """Inputs ``a`` ``(B, P, I)`` and derivatives ``g`` ``(C, B, P, O)`` in the block's eigenbasis:
    ``(â (B, P, I'), ĝ (C, B, P, O))``, the hyperparameter-free part of :func:`_unit_covariances`.
    """
    B, P, _ = a.shape
    if len(unit.params) == 2:
        a = torch.cat([a, a.new_ones(B, P, 1)], dim=-1)
    UG, UA, _ = spec.output_basis(prec)  # the bases do not depend on N or τ; None means identity
    return (a if UA is None else a @ UA), (g if UG is None else g @ UG)


def _weighted_gram(rows: Tensor, weights: Tensor) -> Tensor:
    """``Σ_j rows[b, c, j] rows[b, d, j] weights[j]`` ``(B, C, C)`` for rows ``(B, C, J)``: one batched matmul."""
    return torch.bmm(rows * weights, rows.transpose(1, 2))


# Forming the rotated Jacobian and its weighted Gram streams memory; measured on resnet18's layer shapes
# (benchmarks/ood_conv.py, 2 CPU threads) a multiply-add there costs about 3 of the pair kernel's.
_ROWS_COST = 3


def _prefer_position_pairs(C: int, P: int, O: int, I_aug: int, settings: int) -> bool:
    """Whether :func:`_position_pair_covariance` is cheaper per example than forming the rotated
    Jacobian ``Ĵ`` ``(C, O, I')`` once and its weighted Gram once per setting (``settings`` precisions).

    Forming ``Ĵ`` is ``C·P·O·I'`` multiply-adds through a contraction of length ``P`` and each Gram
    ``C²·O·I'`` more, both bound by memory traffic (:data:`_ROWS_COST`); the pair kernel is one dense
    matrix product of ``P²·I'·O`` per setting. On resnet18 at 3×32×32 (C = 10) the kernel wins for
    layer3 (P = 4: 40× faster) and layer2 (P = 16: 4.5×), the rows for layer1 (P = 64) and the stem (P = 256).
    """
    rows = _ROWS_COST * (C * P * O * I_aug + settings * C * C * O * I_aug)
    pairs = P * P * I_aug + settings * (P * P * I_aug * O + C * P * P * O + C * C * P * O)
    return pairs < rows


def _position_pairs(a_hat: Tensor) -> Tensor:
    """``â_{p,i} â_{q,i}`` ``(B·P², I')`` for rows ``â`` ``(B, P, I')``: shared by every setting's kernel."""
    B, P, I_aug = a_hat.shape
    return (a_hat.unsqueeze(2) * a_hat.unsqueeze(1)).reshape(B * P * P, I_aug)


def _position_pair_covariance(pairs: Tensor, g_hat: Tensor, S: Tensor) -> Tensor:
    """One unit's ``J Σ Jᵀ`` ``(B, C, C)`` from position pairs, without forming the rotated Jacobian.

    For the pairs of rows ``â`` (:func:`_position_pairs`, ``(B·P², I')``), ``ĝ`` ``(C, B, P, O)`` and
    variances ``S`` ``(O, I')``:

        Σ_{o,i} S_{o,i} Ĵ_{c,o,i} Ĵ_{d,o,i} = Σ_{p,q,o} ĝ_{c,p,o} ĝ_{d,q,o} K_{p,q,o},
        K_{p,q,o} = Σ_i â_{p,i} â_{q,i} S_{o,i}   (one (B·P², I') × (I', O) matrix product).
    """
    _, B, P, _ = g_hat.shape
    kernel = (pairs @ S.t()).reshape(B, P, P, -1)  # (B, P, Q, O)
    through = torch.einsum("cbpo,bpqo->cbqo", g_hat, kernel)
    return torch.einsum("cbqo,dbqo->bcd", through, g_hat)


def _unit_covariances(spec: Structure, precs: Sequence[Tensor], a_hat: Tensor, g_hat: Tensor) -> list[Tensor]:
    """Contribution ``(B, C, C)`` of one unit for each precision in ``precs`` (one per hyperparameter
    setting), from its rotated rows (:func:`_rotated_rows`).
    """
    B, P, I_aug = a_hat.shape
    C, O = g_hat.shape[0], g_hat.shape[-1]
    scales = [spec.output_basis(prec)[2] for prec in precs]  # (O, I') each
    if P == 1:
        gh = g_hat[:, :, 0]  # (C, B, O)
        squared = a_hat[:, 0].square()  # (B, I')
        return [torch.einsum("cbo,bo,dbo->bcd", gh, squared @ S.t(), gh) for S in scales]
    out: list[list[Tensor]] = [[] for _ in scales]
    if _prefer_position_pairs(C, P, O, I_aug, len(scales)):
        step = max(1, CHUNK_ELEMENTS // max(1, P * P * max(I_aug, O)))
        for s in range(0, B, step):
            pairs = _position_pairs(a_hat[s : s + step])  # formed once per chunk, as the cost model counts
            for parts, S in zip(out, scales):
                parts.append(_position_pair_covariance(pairs, g_hat[:, s : s + step], S))
        return [_joined(parts, dim=0) for parts in out]
    step = max(1, CHUNK_ELEMENTS // max(1, C * O * I_aug))
    for s in range(0, B, step):
        J = torch.einsum("cbpo,bpi->bcoi", g_hat[:, s : s + step], a_hat[s : s + step])  # formed once per chunk
        for parts, S in zip(out, scales):
            parts.append(_weighted_gram(J.flatten(2), S.reshape(-1)))
    return [_joined(parts, dim=0) for parts in out]


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _frozen_batch_norm(module: nn.Module) -> bool:
    """A BatchNorm that, in eval mode, is a per-channel affine map of its input (running statistics, γ and β):
    its per-example Jacobian rows are then exact and cheap (:func:`_batch_norm_covariances`).
    """
    return (
        isinstance(module, _BATCH_NORMS) and module.affine and module.track_running_stats
        and module.running_mean is not None and module.running_var is not None
    )


def _grouped_conv(module: nn.Module) -> bool:
    """A grouped (e.g. depthwise) Conv1d/2d with zero padding: a diagonal unit whose rows are its patches."""
    return (
        isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups > 1 and module.padding_mode == "zeros"
        and conv_padding(module) is not None
    )


def _has_rows(unit: Unit) -> bool:
    """Whether the factored path has per-example Jacobian rows for this unit."""
    if unit.members:  # tied parameters: no single module's rows
        return False
    if unit.structure == "kronecker":
        return True
    local = [n.rsplit(".", 1)[-1] for n in unit.param_names]
    if _frozen_batch_norm(unit.module):
        return local == ["weight", "bias"]
    return _grouped_conv(unit.module) and local in (["weight"], ["weight", "bias"])


def supported(model: nn.Module, specs: Sequence[Structure]) -> list[Unit] | None:
    """The units of ``specs`` if every one is a Linear/Conv block whose structure has a factored output
    covariance (Kronecker, EKFAC, diagonal) or an eval-mode BatchNorm's diagonal block, else None.
    """
    if not specs or not all(s.factored_outputs for s in specs):
        return None
    # The file names what it covers, frozen parameters included when the fit included them.
    units = {u.name: u for u in select_units(model, ",".join(s.module for s in specs), include_frozen=True)}
    chosen = []
    for s in specs:
        u = units.get(s.module)
        if u is None or not _has_rows(u) or tuple(u.param_names) != tuple(s.param_names):
            return None
        chosen.append(u)
    return chosen


def _batch_norm_covariances(
    module: nn.Module, spec: Structure, precs: Sequence[Tensor], calls: Sequence[tuple[Tensor, Tensor]]
) -> list[Tensor]:
    """Contribution ``(B, C, C)`` of an eval-mode BatchNorm's (γ, β) diagonal block for each precision.

    In eval mode the layer is ``y = γ x̂ + β`` per channel with ``x̂ = (x − μ)/√(σ² + ε)`` from the running
    statistics, so the Jacobian rows of output ``c`` are ``∂f_c/∂γ_k = Σ_p g_{c,k,p} x̂_{k,p}`` and
    ``∂f_c/∂β_k = Σ_p g_{c,k,p}`` (``p``: positions; summed over the calls of a reused layer). ``calls``
    holds ``(x (B, K, ...), g (C, B, K, ...))`` per call.
    """
    bn: Any = module  # an eval-mode BatchNorm with running statistics (see _frozen_batch_norm)
    weight_rows, bias_rows = None, None
    for x, g in calls:
        K = x.shape[1]
        shape = (1, K) + (1,) * (x.dim() - 2)
        mean = bn.running_mean.reshape(shape).to(g.dtype)
        std = (bn.running_var.reshape(shape) + bn.eps).sqrt().to(g.dtype)
        x_hat = (x.to(g.dtype) - mean) / std  # (B, K, ...)
        flat_g = g.reshape(g.shape[0], g.shape[1], K, -1)  # (C, B, K, P)
        w = torch.einsum("cbkp,bkp->cbk", flat_g, x_hat.reshape(x.shape[0], K, -1))
        b = flat_g.sum(-1)
        weight_rows = w if weight_rows is None else weight_rows + w
        bias_rows = b if bias_rows is None else bias_rows + b
    assert weight_rows is not None and bias_rows is not None  # calls holds at least one call
    out = []
    for prec in precs:
        S = spec.output_basis(prec)[2]  # (K, 2): [γ_k, β_k] variances
        rows = torch.cat([weight_rows, bias_rows], dim=-1).transpose(0, 1)  # (B, C, 2K)
        out.append(_weighted_gram(rows, torch.cat([S[:, 0], S[:, 1]])))
    return out


def _grouped_conv_covariances(
    module: nn.Module, spec: Structure, precs: Sequence[Tensor], calls: Sequence[tuple[Tensor, Tensor]]
) -> list[Tensor] | None:
    """Contribution ``(B, C, C)`` of a grouped conv's diagonal block for each precision.

    Output channel ``o`` of group ``γ`` sees only that group's input patches, so the Jacobian rows are
    ``J_{c,o,i} = Σ_p g_{c,o,p} â_{γ(o),i,p}`` (``â``: the group's patches with a 1 appended for the bias),
    ``(B, C, groups, O/groups, I')``; a depthwise conv keeps this small. ``calls`` holds ``(x, g)`` per call.
    None when the rows would exceed :data:`CHUNK_ELEMENTS` (the generic path answers).
    """
    conv = cast(nn.Conv1d | nn.Conv2d, module)  # a grouped conv (see _grouped_conv)
    groups, has_bias = conv.groups, conv.bias is not None
    rows = None
    for x, g in calls:
        B, C = x.shape[0], g.shape[0]
        patches = conv_patches(conv, x).to(g.dtype)  # (B, C_in·∏kernel, P)
        patches = patches.reshape(B, groups, -1, patches.shape[-1])
        if has_bias:
            patches = torch.cat([patches, patches.new_ones(B, groups, 1, patches.shape[-1])], dim=2)
        if B * C * conv.out_channels * patches.shape[2] > CHUNK_ELEMENTS:
            return None
        per_group = g.reshape(C, B, groups, conv.out_channels // groups, -1)
        part = torch.einsum("cbgop,bgip->bcgoi", per_group, patches)
        rows = part if rows is None else rows + part
    assert rows is not None  # calls holds at least one call
    out = []
    for prec in precs:
        S = spec.output_basis(prec)[2]  # (O, I'), output channels in group order
        out.append(_weighted_gram(rows.flatten(2), S.reshape(-1)))
    return out


def _joined(parts: list[Tensor], dim: int) -> Tensor:
    """The calls' rows side by side; one call's as they are (a copy of resnet18's stem patches is 75 MB per 500 images)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


@dataclass(frozen=True)
class OutputSizes:
    """Per example: the network's outputs ``C`` and the elements of every unit's outputs (all calls)."""

    outputs: int
    unit_outputs: int

    def examples_per_backward(self) -> int:
        """Examples whose ``C`` vectors are propagated together (:data:`OUTPUT_ROWS`, :data:`VECTOR_ELEMENTS`)."""
        C = max(1, self.outputs)
        return max(1, min(OUTPUT_ROWS // C, VECTOR_ELEMENTS // (C * max(1, self.unit_outputs))))


def output_sizes(model: nn.Module, units: Sequence[Unit], x: Tensor) -> OutputSizes:
    """:class:`OutputSizes` from one forward of the first example of ``x`` ``(B, ...)`` (no graph kept)."""
    unit_outputs = 0

    def count(module: nn.Module, args: object, out: object) -> None:
        nonlocal unit_outputs
        # Every entry the capture tracks carries the C vectors, those of a tuple or list result included.
        unit_outputs += sum(o.numel() for o in output_entries(out) if isinstance(o, Tensor) and o.is_floating_point())

    handles = [u.module.register_forward_hook(count) for u in units]
    try:
        with torch.no_grad():
            outputs = model(x[:1]).reshape(1, -1).shape[1]
    finally:
        for handle in handles:
            handle.remove()
    return OutputSizes(outputs, unit_outputs)


def output_covariance(
    model: nn.Module,
    units: Sequence[Unit],
    specs: Sequence[Structure],
    precs: Sequence[Tensor],
    x: Tensor,
    sizes: OutputSizes | None = None,
) -> tuple[Tensor, Tensor] | None:
    """:func:`output_covariances` for one precision: MAP outputs ``(B, C)`` and ``J Σ Jᵀ`` ``(B, C, C)``."""
    result = output_covariances(model, units, specs, [precs], x, sizes)
    return None if result is None else (result[0], result[1][0])


def output_covariances(
    model: nn.Module,
    units: Sequence[Unit],
    specs: Sequence[Structure],
    precs_grid: Sequence[Sequence[Tensor]],
    x: Tensor,
    sizes: OutputSizes | None = None,
) -> tuple[Tensor, list[Tensor]] | None:
    """MAP outputs ``f`` ``(B, C)`` and, for each entry of ``precs_grid`` (the blocks' precisions under one
    hyperparameter setting), ``J Σ Jᵀ`` ``(B, C, C)``, over chunks of examples whose backward vectors fit
    :data:`OUTPUT_ROWS` and :data:`VECTOR_ELEMENTS` (``sizes``: found by a one-example forward when not given).

    The forward, the backward and the rotation into each block's eigenbasis do not depend on ``N`` or ``τ``,
    so a tuning grid pays for them once per batch instead of once per grid point.
    """
    step = (sizes or output_sizes(model, units, x)).examples_per_backward()
    fs: list[Tensor] = []
    covs: list[list[Tensor]] = [[] for _ in precs_grid]
    for start in range(0, x.shape[0], step):
        part = batch_output_covariances(model, units, specs, precs_grid, x[start : start + step])
        if part is None:
            return None
        fs.append(part[0])
        for out, cov in zip(covs, part[1]):
            out.append(cov)
    if len(fs) == 1:
        return fs[0], [c[0] for c in covs]
    return torch.cat(fs), [torch.cat(c) for c in covs]


def batch_output_covariances(
    model: nn.Module,
    units: Sequence[Unit],
    specs: Sequence[Structure],
    precs_grid: Sequence[Sequence[Tensor]],
    x: Tensor,
) -> tuple[Tensor, list[Tensor]] | None:
    """MAP outputs ``f`` ``(B, C)`` and ``J Σ Jᵀ`` ``(B, C, C)`` per entry of ``precs_grid`` for a batch ``x``.

    ``units``/``specs`` and each entry of ``precs_grid`` are aligned (from :func:`supported` and the
    posterior); the model must hold the MAP weights. Returns None if a Linear's input has no dimension of
    the batch size.
    """
    capture = Capture(units, [True] * len(units), [None] * len(units))
    chosen = {id(p) for u in units for p in u.params}
    # Eval mode (the linearisation is of the predicting network); gradients for the covered parameters only.
    with model_state(model, requires_grad=lambda p: id(p) in chosen), contextlib.ExitStack() as cleanup:
        cleanup.callback(capture.clear)
        cleanup.enter_context(live_tap_convs(model))  # convs on small maps skip the taps that read only padding
        # Callers often predict under no_grad or inference_mode; this needs a graph to the unit outputs.
        with torch.inference_mode(False), torch.enable_grad():
            if x.is_inference():
                x = x.clone()
            with capture.hooked():
                out = model(x)
            f = out.reshape(out.shape[0], -1)
            B, C = f.shape
            tracked = capture.tracked_outputs()
            V = torch.eye(C, dtype=f.dtype, device=f.device).unsqueeze(1).expand(C, B, C)
            try:
                grads = backprop_vectors(f, tracked, V, batched=True, retain_graph=True)
            except (RuntimeError, NotImplementedError) as exc:  # no vmap rule for an op in the graph
                if not vmap_unsupported(exc):
                    raise
                announce_slow_path("the output covariance's backward vectors are propagated", exc)
                grads = backprop_vectors(f, tracked, V, batched=False, retain_graph=False)
        covs = [f.new_zeros(B, C, C) for _ in precs_grid]
        with torch.no_grad():
            for index, (unit, spec, calls, per_call) in enumerate(zip(units, specs, capture.calls, capture.split(grads))):
                dtype = precs_grid[0][index].dtype
                grid = [precs[index] for precs in precs_grid]
                if unit.structure != "kronecker":  # an eval-mode BatchNorm or a grouped conv (see supported)
                    if any(len(call.outputs) > 1 for call in calls):
                        return None  # a subclass returning more than its own output: not the layer's rows
                    pairs = [(call.args[0], g[0].to(dtype)) for call, g in zip(calls, per_call) if g]
                    if not pairs or any(x.dim() < 2 or x.shape[0] != B for x, _ in pairs):
                        return None
                    rows = _batch_norm_covariances if _frozen_batch_norm(unit.module) else _grouped_conv_covariances
                    parts = rows(unit.module, spec, grid, pairs)
                    if parts is None:
                        return None
                    for cov, part in zip(covs, parts):
                        cov += part.to(cov.dtype)
                    continue
                found = [
                    per_example_rows(unit.module, call.args[0], g[0], B) for call, g in zip(calls, per_call) if g
                ]
                rows_of_calls = [p for p in found if p is not None]
                if not rows_of_calls or len(rows_of_calls) != len(found):
                    return None
                a = _joined([p[0] for p in rows_of_calls], dim=1).to(dtype)
                g = _joined([p[1] for p in rows_of_calls], dim=2).to(dtype)
                a_hat, g_hat = _rotated_rows(unit, spec, precs_grid[0][index], a, g)
                for cov, part in zip(covs, _unit_covariances(spec, grid, a_hat, g_hat)):
                    cov += part.to(cov.dtype)
        return f.detach(), covs

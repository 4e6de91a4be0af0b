"""``--method full | lowrank | ekfac | kfac-diag``: structures built on top of :func:`compute_curvature`.

* ``full``: one :class:`DenseBlock` over all covered parameters jointly (cross-layer terms included:
  Ritter et al.'s "full Laplace"), from exact GGN-matrix products (``ggn_products``). Refused above
  ``FULL_MAX_BYTES`` (or ``--max-memory``).
* ``lowrank``: one :class:`LowRankBlock` over all covered parameters: top-``rank`` GGN eigenpairs
  (randomized subspace iteration on the same products) plus the exact GGN diagonal
  (``compute_curvature(method="diag")``) minus the low-rank part's diagonal, clamped at 0.
* ``ekfac``: ``compute_curvature(method="kfac")``, then a second pass re-estimating the eigenvalues
  in the Kronecker eigenbases (``ekfac``). Modules without Kronecker factors keep their diagonal block.
* ``kfac-diag``: KFAC plus the exact diagonal; per Linear/Conv module the top-``rank`` Kronecker
  eigenvalue products are kept and the diagonal corrected (Lee et al. 2020).

All blocks are means of the per-example curvature, like those of diag/KFAC.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn

from uncert_cli.core.errors import UserError
from uncert_cli.core.model_state import model_state
from uncert_cli.core.slow_path import forward_ad_unsupported
from uncert_cli.core.vocabulary import FisherType, Method, Task
from uncert_cli.curvature.blocks import (
    Block,
    Curvature,
    DenseBlock,
    DiagonalBlock,
    EKFACBlock,
    KronDiagBlock,
    KroneckerBlock,
    LowRankBlock,
)
from uncert_cli.curvature.ekfac import ekfac_eigenvalues
from uncert_cli.curvature.engine import MODIFIED_IN_PLACE, check_batch, compute_curvature
from uncert_cli.curvature.ggn_products import BatchSource, GGNProducts
from uncert_cli.curvature.lowrank import top_eigenpairs
from uncert_cli.curvature.plain_kernels import plain_kernels
from uncert_cli.curvature.subset import Unit, select_units

STRUCTURED_METHODS = (Method.full, Method.lowrank, Method.ekfac, Method.kfac_diag)
FULL_MAX_BYTES = 2 << 30  # default cap on the dense GGN (float64 P x P) without --max-memory
DEFAULT_RANK = 20


def _units(model: nn.Module, source: BatchSource, subset: str, include_frozen: bool) -> list[Unit]:
    first = next(iter(source()), None)
    if first is None:
        raise UserError("the data set is empty; the curvature needs at least one example")
    return select_units(
        model, subset, example_input=first[0] if subset.strip() == "last-layer" else None, include_frozen=include_frozen
    )


def joint_label(units: list[Unit]) -> str:
    return "+".join(u.name or "<root>" for u in units)


def full_bytes(num_params: int) -> int:
    """Memory of the dense GGN and its eigenvectors in float64 (the eigendecomposition's precision)."""
    return 2 * num_params * num_params * 8


def check_full_size(num_params: int, max_bytes: int | None) -> None:
    """Refuse a dense GGN larger than ``max_bytes`` (default :data:`FULL_MAX_BYTES`)."""
    limit = FULL_MAX_BYTES if max_bytes is None else max_bytes
    need = full_bytes(num_params)
    if need > limit:
        from uncert_cli.core.memory import format_size

        raise UserError(
            f"{{method}} full needs the dense {num_params:,} x {num_params:,} GGN and its eigenvectors "
            f"(2·P²·8 bytes = {format_size(need)}), more than {format_size(limit)}; use {{method}} diag, kfac, "
            f"ekfac, kfac-diag or lowrank with {{rank}} K, or fewer parameters with {{subset}} last-layer "
            "(or raise {param})",
            param="max_bytes", mentions=("method", "rank", "subset"),
        )


def compute_structured_curvature(
    model: nn.Module,
    source: BatchSource,
    *,
    method: Method | str,
    fisher_type: FisherType | str = FisherType.exact,
    task: Task | str = Task.classification,
    mc_samples: int = 1,
    subset: str = "all",
    rank: int | None = None,
    generator: torch.Generator | None = None,
    on_batch: Callable[[int], None] | None = None,
    max_bytes: int | None = None,
    power_iters: int = 2,
    include_frozen: bool = False,
) -> Curvature:
    """Curvature of ``model`` in one of :data:`STRUCTURED_METHODS`.

    ``source()`` must return a fresh iterator over the same ``(inputs, targets)`` batches each call
    (the methods pass over the data more than once). ``rank`` is K (``lowrank``: of the whole GGN;
    ``kfac-diag``: per module), default :data:`DEFAULT_RANK`.
    """
    method = Method.parse(method, "method")
    if method not in STRUCTURED_METHODS:
        raise UserError(f"{{param}} {method} is not built here; use one of {', '.join(STRUCTURED_METHODS)}", param="method")
    fisher_type, task = FisherType.parse(fisher_type, "fisher_type"), Task.parse(task, "task")
    rank = DEFAULT_RANK if rank is None else int(rank)
    if rank < 1:
        raise UserError(f"{{param}} must be at least 1, got {rank}", param="rank")
    units = _units(model, source, subset, include_frozen)
    chosen = {id(q) for u in units for q in u.params}
    common: dict[str, Any] = dict(fisher_type=fisher_type, task=task, mc_samples=mc_samples, subset=subset,
                                  generator=generator, include_frozen=include_frozen)
    # Eval mode, gradients for the covered parameters only; curvlinops' GGN products use forward-mode AD,
    # which the fused attention and recurrent kernels lack (the engine's passes enter the same context themselves).
    with model_state(model, requires_grad=lambda p: id(p) in chosen):
        with plain_kernels(model):
            if method in ("full", "lowrank"):
                x0, y0 = next(iter(source()))
                with torch.no_grad():  # the output's form, refused as the other methods refuse it (B, C, 1)
                    check_batch(model(x0), y0, task, 0)
                try:
                    if method == "full":
                        return _full(model, source, units, task, fisher_type, max_bytes)
                    return _lowrank(model, source, units, task, fisher_type, rank, generator, on_batch, power_iters,
                                    common)
                except (RuntimeError, NotImplementedError) as exc:
                    if MODIFIED_IN_PLACE in str(exc):
                        raise UserError(
                            f"the network changes a tensor in place that its backward pass needs, and {{param}} {method} "
                            "differentiates it twice; write that step without in-place operations (x = x + 1 for "
                            "x += 1, relu for relu_), or use {param} diag, kfac, ekfac or kfac-diag",
                            param="method",
                        ) from exc
                    if not forward_ad_unsupported(exc):
                        raise
                    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                    raise UserError(
                        f"{{param}} {method} multiplies by the GGN with forward-mode derivatives, which an operation "
                        f"of this network lacks ({reason}); use {{param}} diag, kfac, ekfac or kfac-diag",
                        param="method",
                    ) from exc
            kfac = compute_curvature(model, source(), method=Method.kfac, on_batch=on_batch, **common)
            if method == "ekfac":
                return _ekfac(model, source, units, kfac, common)
            diag = compute_curvature(model, source(), method=Method.diag, **common)
            return _kfac_diag(units, kfac, diag, rank)


def _curvature(blocks: list[Block], n: int, task: Task, method: Method, fisher_type: FisherType, mc: int) -> Curvature:
    return Curvature(blocks=blocks, n_data=n, task=task, method=method, fisher_type=fisher_type,
                     mc_samples=mc if fisher_type == "mc" else 1)


def _joint_meta(units: list[Unit]) -> tuple[list[Tensor], tuple[str, ...], tuple[tuple[int, ...], ...]]:
    params = [p for u in units for p in u.params]
    names = tuple(n for u in units for n in u.param_names)
    return params, names, tuple(tuple(p.shape) for p in params)


def _full(model, source, units, task, fisher_type, max_bytes) -> Curvature:
    params, names, shapes = _joint_meta(units)
    check_full_size(sum(p.numel() for p in params), max_bytes)
    ggn = GGNProducts(model, params, source, task, fisher_type)
    block = DenseBlock(joint_label(units), names, shapes, ggn.dense())
    return _curvature([block], ggn.n_data, task, Method.full, fisher_type, 1)


def _lowrank(model, source, units, task, fisher_type, rank, generator, on_batch, power_iters, common) -> Curvature:
    params, names, shapes = _joint_meta(units)
    ggn = GGNProducts(model, params, source, task, fisher_type)
    k = min(rank, ggn.num_params)
    lam, V = top_eigenpairs(
        ggn, ggn.num_params, k, dtype=ggn.dtype, device=ggn.device, power_iters=power_iters,
        generator=torch.Generator().manual_seed(generator.initial_seed()) if generator is not None else None,
    )
    diag_curv = compute_curvature(model, source(), method=Method.diag, on_batch=on_batch, **common)
    diagonals = [cast(DiagonalBlock, b) for b in diag_curv.blocks]  # method diag gives diagonal blocks only
    by_name = {n: d for b in diagonals for n, d in zip(b.param_names, b.diagonal)}
    exact = torch.cat([by_name[n].reshape(-1) for n in names]).to(V.dtype)
    low = V.square() @ lam
    block = LowRankBlock(joint_label(units), names, shapes, lam, V, (exact - low).clamp_min(0))
    return _curvature([block], diag_curv.n_data, task, Method.lowrank, fisher_type, diag_curv.mc_samples)


def _ekfac(model, source, units, kfac: Curvature, common) -> Curvature:
    by_name = {u.name: u for u in units}
    # the units KFAC gave Kronecker factors (Linear/Conv); the others keep their diagonal block
    kron = [(i, b) for i, b in enumerate(kfac.blocks) if by_name[b.module].structure == "kronecker"]
    eigens = [cast(KroneckerBlock, b).eigen() for _, b in kron]
    if not kron:  # no Linear/Conv covered (--subset of norms only): nothing to re-estimate, no second pass
        return _curvature(list(kfac.blocks), kfac.n_data, kfac.task, Method.ekfac, kfac.fisher_type, kfac.mc_samples)
    S = ekfac_eigenvalues(
        model, [by_name[b.module] for _, b in kron], eigens, source(),
        fisher_type=common["fisher_type"], task=common["task"], mc_samples=common["mc_samples"],
        generator=common["generator"],
    )
    blocks: list[Block] = list(kfac.blocks)
    for (i, b), e, s in zip(kron, eigens, S):
        blocks[i] = EKFACBlock(b.module, b.param_names, b.param_shapes, e, s)
    return _curvature(blocks, kfac.n_data, kfac.task, Method.ekfac, kfac.fisher_type, kfac.mc_samples)


def kron_diag_block(block: KroneckerBlock, exact: DiagonalBlock, rank: int) -> KronDiagBlock:
    """Top-``rank`` eigenvalue products of ``G ⊗ A`` plus the diagonal correction (Lee et al. 2020)."""
    e = block.eigen()
    prods = torch.outer(e.output_eigenvalues, e.input_eigenvalues)  # (O, I')
    O, I = prods.shape
    L = min(rank, O * I)
    top = torch.topk(prods.reshape(-1), L).indices
    idx = torch.stack([top // I, top % I], dim=1)
    lam = prods.reshape(-1)[top]
    # diag of Σ_l λ_l (ug_i ⊗ ua_j)² = (Ug[:, i]² ⊙ λ) @ (Ua[:, j]²)ᵀ
    low = (e.output_eigenvectors[:, idx[:, 0]].square() * lam) @ e.input_eigenvectors[:, idx[:, 1]].square().T
    w = exact.diagonal[0].reshape(O, -1)
    d = torch.cat([w, exact.diagonal[1].reshape(O, 1)], dim=1) if len(exact.diagonal) == 2 else w
    return KronDiagBlock(block.module, block.param_names, block.param_shapes, e, idx, (d.to(low.dtype) - low).clamp_min(0))


def _kfac_diag(units: list[Unit], kfac: Curvature, diag: Curvature, rank: int) -> Curvature:
    exact = {b.module: b for b in diag.blocks}
    kronecker = {u.name for u in units if u.structure == "kronecker"}
    blocks: list[Block] = [
        kron_diag_block(b, exact[b.module], rank) if b.module in kronecker else b  # type: ignore[arg-type]
        for b in kfac.blocks
    ]
    return _curvature(blocks, kfac.n_data, kfac.task, Method.kfac_diag, kfac.fisher_type, kfac.mc_samples)


def estimate_structured_memory(
    model: nn.Module, method: str, subset: str, rank: int | None, include_frozen: bool = False
) -> int:
    """Bytes of the stored curvature (model dtype), before any data is touched (the method's own estimate)."""
    from uncert_cli.curvature.methods import METHODS  # the table imports this module

    units = select_units(model, subset, include_frozen=include_frozen)
    return METHODS[method].stored_bytes(model, units, rank, next(model.parameters()).dtype)

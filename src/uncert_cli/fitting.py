"""``uncert fit`` as a library call: checkpoint + data → curvature (+ what the factor file records).

The math lives in :mod:`uncert_cli.curvature`; this module only wires model, data, device, dtype,
the memory guard and the distributed reduce together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from uncert_cli.atomic import check_free_space, check_output_path
from uncert_cli.checkpoint import LoadedModel
from uncert_cli.curvature import Curvature, compute_curvature, estimate_memory
from uncert_cli.curvature.blocks import ensure_eigen
from uncert_cli.curvature.subset import frozen_parameters, select_units
from uncert_cli.curvature.structured import (
    DEFAULT_RANK,
    STRUCTURED_METHODS,
    check_full_size,
    compute_structured_curvature,
    estimate_structured_memory,
)
from uncert_cli.data import ArrayDataset, iter_batches
from uncert_cli.data.dataset import inputs_to
from uncert_cli.distributed import DistributedContext
from uncert_cli.errors import UserError
from uncert_cli.memory import format_size, peak_memory_bytes
from uncert_cli.store import PriorSettings, write_factor_file

METHODS = ("diag", "kfac", "full", "lowrank", "ekfac", "kfac-diag")
FISHER_TYPES = ("exact", "mc", "empirical")


@dataclass
class FitOptions:
    method: str = "kfac"
    fisher_type: str = "exact"
    mc_samples: int = 1
    subset: str = "all"
    batch_size: int = 256
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    max_memory: int | None = None  # bytes; refuse before allocating factors above this
    rank: int | None = None  # lowrank: K eigenpairs of the GGN; kfac-diag: L per module (default 20)
    include_frozen: bool = False  # cover parameters with requires_grad=False too


@dataclass
class FitResult:
    curvature: Curvature
    info: dict[str, Any]  # what the factor file's /fit group records


def validate_options(options: FitOptions) -> None:
    if options.method not in METHODS:
        raise UserError(f"unknown method '{options.method}'; use one of {', '.join(METHODS)}")
    if options.fisher_type not in FISHER_TYPES:
        raise UserError(f"unknown fisher type '{options.fisher_type}'; use one of {', '.join(FISHER_TYPES)}")
    if options.mc_samples < 1:
        raise UserError("--mc-samples must be at least 1")
    if options.rank is not None and options.rank < 1:
        raise UserError(f"--rank must be at least 1, got {options.rank}")
    if options.rank is not None and options.method not in ("lowrank", "kfac-diag"):
        raise UserError(f"--rank applies to --method lowrank and kfac-diag, not {options.method}; drop --rank")


def check_memory(model: torch.nn.Module, options: FitOptions) -> int:
    """Estimated factor memory in bytes; refuse (before allocating anything) above ``max_memory``."""
    if options.method in STRUCTURED_METHODS:
        if options.method == "full":
            units = select_units(model, options.subset, include_frozen=options.include_frozen)
            check_full_size(sum(u.num_params for u in units), options.max_memory)
        needed = int(estimate_structured_memory(
            model, options.method, options.subset, options.rank, include_frozen=options.include_frozen
        ))
    else:
        needed = int(estimate_memory(model, options.method, options.subset, include_frozen=options.include_frozen))
    if options.max_memory is not None and needed > options.max_memory:
        raise UserError(
            f"the {options.method} factors need about {format_size(needed)}, more than --max-memory "
            f"{format_size(options.max_memory)}; raise --max-memory, use --method diag, or fit a part "
            "with --subset last-layer"
        )
    return needed


class MapLikelihood:
    """Running Σ log p(y|x, θ*) (regression at unit noise), correct predictions and count.

    The evidence (``uncert tune --objective marglik``) needs the first; the summary shows the accuracy.
    Fed with each batch's MAP outputs by the curvature pass itself (no second pass over the data).
    """

    def __init__(self, task: str) -> None:
        self.task = task
        self.total = torch.zeros(3, dtype=torch.float64)  # log-likelihood, correct, count

    def add(self, out: torch.Tensor, y: torch.Tensor) -> None:
        """One batch: outputs ``(B, C)`` (or ``(B,)`` for regression) and targets."""
        with torch.no_grad():
            if self.task == "classification":
                self.total[0] -= F.cross_entropy(out, y, reduction="sum").double().cpu()
                self.total[1] += (out.argmax(-1) == y).sum().cpu()
            else:
                residual = (out - y.reshape(out.shape).to(out.dtype)).double()
                d = residual[0].numel()
                self.total[0] -= 0.5 * (residual**2).sum().cpu() + 0.5 * len(residual) * d * math.log(2 * math.pi)
            self.total[2] += len(out)

    def result(self, ctx: DistributedContext) -> tuple[float, float | None]:
        """``(log-likelihood, accuracy or None)`` summed over every process."""
        ctx.all_reduce_sum([self.total])
        accuracy = float(self.total[1] / self.total[2]) if self.task == "classification" else None
        return float(self.total[0]), accuracy


def map_log_likelihood(
    model: torch.nn.Module, data: ArrayDataset, options: FitOptions, task: str, ctx: DistributedContext
) -> tuple[float, float | None]:
    """:class:`MapLikelihood` by a separate pass (the structured methods, whose passes differ)."""
    acc = MapLikelihood(task)
    with torch.no_grad():
        for x, y in iter_batches(data, options.batch_size, shard=ctx.shard):
            acc.add(model(inputs_to(x, options.device, options.dtype)), y.to(options.device))
    return acc.result(ctx)


def fit_laplace(
    loaded: LoadedModel,
    data: ArrayDataset,
    options: FitOptions,
    *,
    ctx: DistributedContext | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> FitResult:
    """Compute the curvature of ``loaded.module`` on ``data`` (already adapted to the model)."""
    validate_options(options)
    ctx = ctx or DistributedContext()
    model = loaded.module.to(device=options.device, dtype=options.dtype).eval()
    task = loaded.meta.task
    frozen = frozen_parameters(model)
    factor_bytes = check_memory(model, options)
    if options.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(options.device)
    generator = torch.Generator(device=options.device).manual_seed(options.seed + ctx.rank)

    def batches():
        for x, y in iter_batches(data, options.batch_size, shard=ctx.shard):
            yield inputs_to(x, options.device, options.dtype), y.to(options.device)

    start = time.perf_counter()
    if options.method in STRUCTURED_METHODS:
        if ctx.world_size > 1:
            raise UserError(f"--method {options.method} runs in one process; launch it without torchrun")
        curvature = compute_structured_curvature(
            model, batches, method=options.method, fisher_type=options.fisher_type,  # type: ignore[arg-type]
            task=task, mc_samples=options.mc_samples, subset=options.subset,  # type: ignore[arg-type]
            rank=options.rank, generator=generator, on_batch=on_batch, max_bytes=options.max_memory,
            include_frozen=options.include_frozen,
        )
    else:
        likelihood = MapLikelihood(task)
        curvature = compute_curvature(
            model,
            batches(),
            method=options.method,  # type: ignore[arg-type]
            fisher_type=options.fisher_type,  # type: ignore[arg-type]
            task=task,  # type: ignore[arg-type]
            mc_samples=options.mc_samples,
            subset=options.subset,
            generator=generator,
            on_batch=on_batch,
            reduce=ctx.all_reduce_sum if ctx.world_size > 1 else None,
            on_outputs=likelihood.add,
            include_frozen=options.include_frozen,
        )
    # Decompose now: a factor with NaN/inf is refused (naming its layer) before any file exists.
    repairs = ensure_eigen(curvature)
    seconds = time.perf_counter() - start
    if options.method in STRUCTURED_METHODS:
        log_likelihood, accuracy = map_log_likelihood(model, data, options, task, ctx)
    else:
        log_likelihood, accuracy = likelihood.result(ctx)
    info: dict[str, Any] = {
        "dataset": data.name,
        "subset": options.subset,
        "batch_size": options.batch_size,
        "dtype": str(options.dtype).removeprefix("torch."),
        "device": options.device.type,
        "seed": options.seed,
        "world_size": ctx.world_size,
        "seconds": seconds,
        "peak_memory_bytes": peak_memory_bytes(options.device),
        "estimated_factor_bytes": factor_bytes,
        "rank": (options.rank or DEFAULT_RANK) if options.method in ("lowrank", "kfac-diag") else None,
        "log_likelihood": log_likelihood,
        # Frozen (requires_grad=False) parameters get no posterior unless --include-frozen.
        "include_frozen": options.include_frozen,
        "frozen_parameters": frozen,
        # {module: [what the eigensolver needed]} for the layers plain eigh failed on; absent when none
        "eigen_repairs": {module: list(r) for module, r in repairs.items()} or None,
    }
    if accuracy is not None:
        info["map_accuracy"] = accuracy
    return FitResult(curvature=curvature, info=info)


def expected_file_bytes(model: torch.nn.Module, options: FitOptions) -> int:
    """A lower bound of the factor file's size, checked against the free space before the fit starts.

    The file holds the weights and the factors (and, for Kronecker blocks, their eigenvectors too),
    gzip-compressed; float data rarely compresses below half, so half of weights + factors is a size
    the file will not undercut. The exact size is checked again before the file is written.
    """
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return (weights + check_memory(model, options)) // 2


def fit_to_file(
    loaded: LoadedModel,
    data: ArrayDataset,
    options: FitOptions,
    output: str | Path,
    *,
    prior: PriorSettings | None = None,
    split: str = "train",
    ctx: DistributedContext | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> FitResult:
    """:func:`fit_laplace`, then write the factor file (rank 0 only; atomically)."""
    ctx = ctx or DistributedContext()
    check_output_path(output)  # also refuses an output that is one of the inputs (fit --data x.h5 -o x.h5)
    # The fit may cast the module (--dtype, --device); the file keeps the checkpoint's own weights.
    state_dict = {k: v.detach().cpu().clone() for k, v in loaded.module.state_dict().items()}
    if ctx.is_main:
        check_free_space(output, expected_file_bytes(loaded.module, options), lower_bound=True)
    result = fit_laplace(loaded, data, options, ctx=ctx, on_batch=on_batch)
    if ctx.is_main:
        write_factor_file(
            output, result.curvature, state_dict=state_dict, model_meta=loaded.meta,
            fingerprint=loaded.fingerprint, checkpoint_path=str(Path(loaded.source).resolve()),
            fit={**result.info, "split": split}, prior=prior or PriorSettings(),
        )
    return result

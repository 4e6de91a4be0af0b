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

from uncert_cli.checkpoint import LoadedModel
from uncert_cli.checkpoint.outputs import recorded_output
from uncert_cli.checkpoint.stored import module_kinds
from uncert_cli.core.atomic import check_free_space, check_output_path
from uncert_cli.core.distributed import DistributedContext
from uncert_cli.core.errors import ParameterText, UserError
from uncert_cli.core.likelihood import categorical_nll_sum, gaussian_nll_sum, regression_residual
from uncert_cli.core.memory import available_memory_bytes, format_size, peak_memory_bytes
from uncert_cli.core.vocabulary import FisherType, Method
from uncert_cli.curvature import Curvature
from uncert_cli.curvature.blocks import ensure_eigen
from uncert_cli.curvature.methods import METHODS as CURVATURE_METHODS
from uncert_cli.curvature.methods import RANKED_METHODS, BuildRequest
from uncert_cli.curvature.structured import DEFAULT_RANK
from uncert_cli.curvature.subset import frozen_parameters, select_units
from uncert_cli.data import ArrayDataset, iter_batches
from uncert_cli.data.checks import whole_number
from uncert_cli.data.dataset import inputs_to, is_token_ids
from uncert_cli.storage.factor_file import PriorSettings, write_factor_file
from uncert_cli.workflows.fit_memory import MemoryEstimate, describe, estimate_fit_memory

METHODS = Method.choices()
DEFAULT_EPOCHS = 5  # vi
DEFAULT_LR = 1e-3  # vi


@dataclass
class FitOptions:
    """How to fit; ``method`` and ``fisher_type`` take a vocabulary member or its string (checked when used)."""

    method: Method | str = Method.kfac
    fisher_type: FisherType | str = FisherType.exact
    mc_samples: int = 1
    subset: str = "all"
    batch_size: int = 256
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    max_memory: int | None = None  # bytes; refuse before allocating factors above this
    rank: int | None = None  # lowrank: K eigenpairs of the GGN; kfac-diag: L per module (default 20)
    include_frozen: bool = False  # cover parameters with requires_grad=False too
    epochs: int | None = None  # vi: passes of the ELBO's optimiser over the data (default 5)
    lr: float | None = None  # vi: Adam's initial learning rate (default 1e-3)

    @property
    def trains(self) -> bool:
        """Whether the method fits by optimisation (epochs, learning rate) rather than one curvature pass."""
        return self.method == Method.vi


@dataclass
class FitResult:
    """A fit's curvature with the numbers the factor file and the summary record."""
    curvature: Curvature
    info: dict[str, Any]  # what the factor file's /fit group records
    memory: MemoryEstimate | None = None  # the peak predicted before the fit (fit's JSON, not the file)


def validate_options(options: FitOptions) -> None:
    """Refuse option values that no model makes valid (those that depend on the model: :func:`effective_rank`)."""
    Method.parse(options.method, "method")
    FisherType.parse(options.fisher_type, "fisher_type")
    whole_number(options.mc_samples, "mc_samples", minimum=1)
    whole_number(options.batch_size, "batch_size", minimum=1)
    if options.rank is not None:
        whole_number(options.rank, "rank", minimum=1)
        if options.method not in RANKED_METHODS:
            raise UserError(
                f"{{param}} applies to {{method}} {' and '.join(RANKED_METHODS)}, not {options.method}; drop {{param}}",
                param="rank", mentions=("method",),
            )
    for name, value in (("epochs", options.epochs), ("lr", options.lr)):
        if value is not None and not options.trains:
            raise UserError(f"{{param}} applies to {{method}} vi, not {options.method}; drop {{param}}",
                            param=name, mentions=("method",))
    if options.epochs is not None:
        whole_number(options.epochs, "epochs", minimum=1)
    if options.lr is not None and not (math.isfinite(options.lr) and options.lr > 0):
        raise UserError(f"{{param}} must be a positive number, got {options.lr}", param="lr")
    if options.trains and options.fisher_type != FisherType.exact:
        raise UserError(f"{{method}} vi fits the likelihood itself (its starting variances use the exact GGN); drop "
                        f"{{param}} {options.fisher_type}", param="fisher_type", mentions=("method",))
    if options.max_memory is not None and options.max_memory <= 0:
        raise UserError(f"{{param}} must be a positive size, got {options.max_memory} bytes", param="max_memory")


def coverage_notes(model: torch.nn.Module, options: FitOptions) -> list[ParameterText]:
    """What the fit will cover differently from "every parameter, one block per module", for the user:
    frozen parameters left out (or included, naming ``include_frozen``), tied modules merged into one block.

    Returns:
        One note per such fact, in that order (empty when the fit covers every parameter, one block per module).
    """
    notes: list[ParameterText] = []
    frozen = frozen_parameters(model)
    if frozen:
        count = sum(p.numel() for n, p in model.named_parameters() if n in set(frozen))
        shown = ", ".join(frozen[:4]) + (f" and {len(frozen) - 4} more" if len(frozen) > 4 else "")
        if options.include_frozen:
            notes.append(ParameterText(f"{{param}}: the fit covers {count:,} frozen parameters ({shown}) too",
                                       param="include_frozen"))
        else:
            notes.append(ParameterText(
                f"{count:,} frozen parameters (requires_grad=False: {shown}) get no posterior; only trainable "
                "parameters are covered ({param} covers them too)", param="include_frozen"))
    for unit in select_units(model, options.subset, include_frozen=options.include_frozen):
        if unit.members:
            notes.append(ParameterText(
                f"modules {', '.join(m.name for m in unit.members)} share parameters (tied weights): one diagonal "
                f"block '{unit.name}' holds the shared tensors' exact curvature over every use"))
    return notes


def effective_rank(model: torch.nn.Module, options: FitOptions) -> int | None:
    """The rank the fit uses and the file records; refuses an explicit rank the model cannot have.

    lowrank: K eigenpairs of the joint GGN, at most its parameter count P. kfac-diag: L Kronecker
    eigenpairs per layer, at most the largest Linear/Conv layer's parameter count (smaller layers
    keep all of theirs). The default (20) shrinks to what the model has.

    Returns:
        The rank, or None for a method that takes none.

    Raises:
        UserError: the rank asked for exceeds what the model has.
    """
    builder = CURVATURE_METHODS[options.method]
    if not builder.takes_rank:
        return None
    most, what = builder.rank_limit(select_units(model, options.subset, include_frozen=options.include_frozen))
    if options.rank is None:
        return min(DEFAULT_RANK, most) if most else DEFAULT_RANK
    if options.rank > most > 0:  # 0: no layer the rank applies to (kfac-diag on norms only), nothing to cap
        raise UserError(
            f"{{param}} {options.rank} is more than the model's {most:,} {what}; choose {{param}} {most} or less",
            param="rank",
        )
    return options.rank


def factor_bytes(model: torch.nn.Module, options: FitOptions) -> int:
    """Bytes of the curvature the fit stores, in the fit's dtype (the method's own estimate)."""
    units = select_units(model, options.subset, include_frozen=options.include_frozen)
    return int(CURVATURE_METHODS[options.method].stored_bytes(model, units, options.rank, options.dtype))


def estimate_memory_use(model: torch.nn.Module, options: FitOptions, data: ArrayDataset) -> MemoryEstimate:
    """The fit's predicted peak memory (:mod:`uncert_cli.workflows.fit_memory`), before any data pass."""
    example, _ = next(iter_batches(data, 1))
    return estimate_fit_memory(
        model, method=options.method, factor_bytes=factor_bytes(model, options), example=example,
        batch_size=options.batch_size, examples=len(data), subset=options.subset, fisher_type=options.fisher_type,
        mc_samples=options.mc_samples, dtype=options.dtype, device=options.device,
        include_frozen=options.include_frozen,
    )


def memory_cap(options: FitOptions) -> int | None:
    """``max_memory``, else what the machine has available for this process (None: unknown)."""
    return options.max_memory if options.max_memory is not None else available_memory_bytes(options.device)


def check_memory(model: torch.nn.Module, options: FitOptions, data: ArrayDataset) -> MemoryEstimate:
    """Predict the fit's peak memory; refuse (before any data pass) above ``max_memory``, or above
    the memory available on this machine when no cap is given (the same rule for every method).

    Returns:
        The prediction, whose ``peak`` the CLI announces.

    Raises:
        UserError: the options are inconsistent, or the predicted peak is above the cap.
    """
    validate_options(options)
    effective_rank(model, options)
    CURVATURE_METHODS[options.method].check_size(
        select_units(model, options.subset, include_frozen=options.include_frozen), memory_cap(options)
    )
    estimate = estimate_memory_use(model, options, data)
    cap = memory_cap(options)
    if cap is not None and estimate.peak > cap:
        limit = (f"more than {{param}} {format_size(cap)}" if options.max_memory is not None
                 else f"more than the {format_size(cap)} available on this machine (set {{param}} to override)")
        ways, mentions = _ways_to_less_memory(options, data, estimate, cap)
        raise UserError(f"the {options.method} fit needs {describe(estimate)}, {limit}; {ways}",
                        param="max_memory", mentions=mentions)
    return estimate


def _ways_to_less_memory(
    options: FitOptions, data: ArrayDataset, estimate: MemoryEstimate, cap: int
) -> tuple[str, tuple[str, ...]]:
    """What would lower the fit's peak below ``cap``. Only ways that change something are offered: not
    ``diag`` to a diagonal fit, not a smaller batch when one example is the batch already, smaller images
    when the batch is what needs the memory, and a larger cap when the process holds more than it before the fit.

    Returns:
        ``(text with {batch_size}-style placeholders, the parameters it names)``.
    """
    if estimate.before >= cap:  # nothing the fit's options change: Python, torch and the data hold it already
        return (f"the process holds {format_size(estimate.before)} before the fit starts (Python, torch, the "
                "data); raise {max_memory} or read fewer examples with {limit}", ("max_memory", "limit"))
    ways: list[str] = []
    if min(options.batch_size, len(data)) > 1:
        ways.append("lower {batch_size}" + (" or {mc_samples}" if options.fisher_type == "mc" else ""))
    elif options.fisher_type == "mc" and options.mc_samples > 1:
        ways.append("lower {mc_samples}")
    if len(data.sample_shape) == 3 and not is_token_ids(data.inputs) and estimate.batch > estimate.peak // 2:
        ways.append("shrink the images with {resize}")  # one example's activations are most of the peak
    if options.method != Method.diag.value:
        ways.append("use {method} diag")
    if options.subset.strip() != "last-layer":
        ways.append("fit a part with {subset} last-layer")
    if not ways:
        ways.append("use a smaller model")
    text = ", ".join(ways[:-1]) + (", or " if len(ways) > 1 else "") + ways[-1]
    names = ("batch_size", "mc_samples", "resize", "method", "subset")
    return text, tuple(name for name in names if "{" + name + "}" in text)


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
                self.total[0] -= categorical_nll_sum(out, y).double().cpu()
                self.total[1] += (out.argmax(-1) == y).sum().cpu()
            else:
                self.total[0] -= gaussian_nll_sum(regression_residual(out, y)).cpu()
            self.total[2] += len(out)

    def result(self, ctx: DistributedContext) -> tuple[float, float | None]:
        """``(log-likelihood, accuracy or None)`` summed over every process."""
        ctx.all_reduce_sum([self.total])
        accuracy = float(self.total[1] / self.total[2]) if self.task == "classification" else None
        return float(self.total[0]), accuracy


def map_log_likelihood(
    model: torch.nn.Module, data: ArrayDataset, options: FitOptions, task: str, ctx: DistributedContext
) -> tuple[float, float | None]:
    """:class:`MapLikelihood` by a separate pass (the methods that pass over the data several times)."""
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
    memory: MemoryEstimate | None = None,
    prior: PriorSettings | None = None,
    on_status: Callable[[str], None] | None = None,
) -> FitResult:
    """Compute the curvature of ``loaded.module`` on ``data`` (already adapted to the model).

    ``memory``: the :func:`check_memory` result if the caller checked already (the CLI does, to
    refuse and announce before the fit starts); otherwise it is checked here. ``prior``: the ``N``,
    ``τ`` and noise the factor file will hold, which a method that trains (vi) fits with.
    ``on_status``: a short progress line (vi: the ELBO and its terms).

    Returns:
        The curvature, the MAP log-likelihood and accuracy, and what the factor file records.

    Raises:
        UserError: the options are inconsistent or the fit would not fit in memory.
    """
    validate_options(options)
    ctx = ctx or DistributedContext()
    rank = effective_rank(loaded.module, options)
    memory = memory or check_memory(loaded.module, options, data)
    model = loaded.module.to(device=options.device, dtype=options.dtype).eval()
    task = loaded.meta.task
    frozen = frozen_parameters(model)
    if options.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(options.device)
    generator = torch.Generator(device=options.device).manual_seed(options.seed + ctx.rank)

    def batches():
        for x, y in iter_batches(data, options.batch_size, shard=ctx.shard):
            yield inputs_to(x, options.device, options.dtype), y.to(options.device)

    start = time.perf_counter()
    builder = CURVATURE_METHODS[options.method]
    if not builder.streaming and ctx.world_size > 1:
        raise UserError(f"{{param}} {options.method} runs in one process; launch it without torchrun", param="method")
    likelihood = MapLikelihood(task)
    request = BuildRequest(
        fisher_type=options.fisher_type, task=task, mc_samples=options.mc_samples,  # type: ignore[arg-type]
        subset=options.subset, rank=rank, generator=generator, on_batch=on_batch,
        # streaming methods: sums reduced over processes, the MAP likelihood taken on the way
        reduce=ctx.all_reduce_sum if ctx.world_size > 1 else None, on_outputs=likelihood.add,
        max_bytes=memory_cap(options), include_frozen=options.include_frozen,
        **_training_settings(options, prior or PriorSettings(), loaded.meta.noise_std), on_status=on_status,
    )
    curvature = builder.build(model, batches, request)
    # Decompose now: a factor with NaN/inf is refused (naming its layer) before any file exists.
    repairs = ensure_eigen(curvature)
    seconds = time.perf_counter() - start
    if not builder.streaming:
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
        "estimated_factor_bytes": memory.factors,
        "rank": rank,
        "log_likelihood": log_likelihood,
        # Frozen (requires_grad=False) parameters get no posterior unless include_frozen.
        "include_frozen": options.include_frozen,
        "frozen_parameters": frozen,
        # {module: [what the eigensolver needed]} for the layers plain eigh failed on; absent when none
        "eigen_repairs": {module: list(r) for module, r in repairs.items()} or None,
    }
    if accuracy is not None:
        info["map_accuracy"] = accuracy
    info.update(curvature.notes)  # e.g. vi: the ELBO per epoch
    return FitResult(curvature=curvature, info=info, memory=memory)


def _training_settings(options: FitOptions, prior: PriorSettings, meta_noise: float | None) -> dict[str, Any]:
    """The :class:`BuildRequest` fields of a method that trains: the file's N, τ and noise, epochs, lr."""
    if not options.trains:
        return {}
    if not isinstance(prior.prior_precision, (int, float)):
        raise UserError("{method} vi takes one prior precision for every layer; give a number", mentions=("method",))
    return {
        "prior_precision": float(prior.prior_precision), "n_data": prior.n_data,
        "noise_std": float(prior.noise_std or meta_noise or 1.0),
        "epochs": options.epochs or DEFAULT_EPOCHS, "lr": options.lr or DEFAULT_LR,
    }


def expected_file_bytes(model: torch.nn.Module, options: FitOptions) -> int:
    """A lower bound of the factor file's size, checked against the free space before the fit starts.

    The file holds the weights and the factors (and, for Kronecker blocks, their eigenvectors too),
    gzip-compressed; float data rarely compresses below half, so half of weights + factors is a size
    the file will not undercut. The exact size is checked again before the file is written.

    Returns:
        The bound in bytes.
    """
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return (weights + factor_bytes(model, options)) // 2


def fit_to_file(
    loaded: LoadedModel,
    data: ArrayDataset,
    options: FitOptions,
    output: str | Path,
    *,
    prior: PriorSettings | None = None,
    split: str | None = "train",
    ctx: DistributedContext | None = None,
    on_batch: Callable[[int], None] | None = None,
    memory: MemoryEstimate | None = None,
    on_status: Callable[[str], None] | None = None,
) -> FitResult:
    """:func:`fit_laplace`, then write the factor file (rank 0 only; atomically)."""
    ctx = ctx or DistributedContext()
    check_output_path(output)  # also refuses an output that is one of the inputs (fit --data x.h5 -o x.h5)
    # The fit may cast the module (--dtype, --device); the file keeps the checkpoint's own weights.
    state_dict = {k: v.detach().cpu().clone() for k, v in loaded.module.state_dict().items()}
    if ctx.is_main:
        check_free_space(output, expected_file_bytes(loaded.module, options), lower_bound=True)
    result = fit_laplace(loaded, data, options, ctx=ctx, on_batch=on_batch, memory=memory, prior=prior,
                         on_status=on_status)
    result.info["split"] = split  # None: a whole file without splits (the attribute is then absent)
    if ctx.is_main:
        write_factor_file(
            output, result.curvature, state_dict=state_dict, model_meta=recorded_output(loaded.module, loaded.meta),
            fingerprint=loaded.fingerprint, checkpoint_path=str(Path(loaded.source).resolve()),
            fit={**result.info, "split": split}, prior=prior or PriorSettings(),
            # so that later commands can answer from the weights alone, without the model's class
            parameter_names=[name for name, _ in loaded.module.named_parameters()],
            module_kinds=module_kinds(loaded.module),
        )
    return result

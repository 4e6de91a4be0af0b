"""``uncert prune`` as library calls: score a factor file's weights, write a pruned checkpoint, compare criteria.

The scores, the selection and the pruned network's metrics are computed in :mod:`uncert_cli.analysis.pruning`
(numbers in, numbers out); this module adds what touches files and data: the evaluation pass over a
dataset and the pruned checkpoint, written with the fitted checkpoint's metadata;
:func:`prune_factor_file` is ``uncert prune`` in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from uncert_cli.analysis.pruning import (
    CRITERIA,
    Comparison,
    PruneEvaluation,
    PruneSelection,
    apply_masks,
    compare_to_baseline,
    evaluate_pruning,
    score_weights,
    select,
)
from uncert_cli.checkpoint import save_model
from uncert_cli.core import file_session
from uncert_cli.core.atomic import check_output_path
from uncert_cli.core.errors import UserError
from uncert_cli.core.progress import Progress, no_progress
from uncert_cli.data import ArrayDataset, ImageConversion, iter_batches
from uncert_cli.storage.factor_file import check_factor_path
from uncert_cli.storage.opening import OpenedFactors, open_posterior
from uncert_cli.workflows.inputs import load_model_data


def evaluate_criteria(
    opened: OpenedFactors,
    dataset: ArrayDataset,
    fractions: Sequence[float],
    *,
    batch_size: int = 1000,
    progress: Progress = no_progress,
) -> PruneEvaluation:
    """Prune the MAP network at each of ``fractions`` under every criterion and measure it on ``dataset``.

    Args:
        opened: the factor file with its runnable model (opened with ``runs_model=True``).
        dataset: labelled examples adapted to the model, ``N`` of them.
        fractions: shares of the candidate weights to prune, each in [0, 1].
        batch_size: examples per forward pass.
        progress: told about ``(1 + criteria × fractions) × N`` examples in all.

    Returns:
        Accuracy (classification) and NLL of the unpruned network and of every (criterion, fraction).
    """
    passes = 1 + len(CRITERIA) * len(fractions)
    with progress(passes * len(dataset), "evaluate pruning") as advance:
        return evaluate_pruning(
            opened.posterior, lambda: iter_batches(dataset, batch_size), fractions,
            dataset=dataset.name, split=dataset.split or "", examples=len(dataset),
            on_pass=lambda: advance(len(dataset)),
        )


def select_weights(
    opened: OpenedFactors,
    criterion: str,
    fraction: float,
    *,
    top: int = 20,
    output: Path | None = None,
    factors_path: str | Path = "",
) -> PruneSelection:
    """Choose the ``fraction`` of the weights that ``criterion`` ranks lowest; with ``output``, save the pruned model.

    Args:
        opened: the factor file with its model (weights alone suffice).
        criterion: one of :data:`~uncert_cli.analysis.pruning.CRITERIA`.
        fraction: share of the candidate weights to prune, in [0, 1].
        top: how many of the first candidates the selection lists.
        output: a ``.safetensors`` path for the pruned network (its metadata is the fitted checkpoint's,
            plus a ``pruned`` note of the criterion, fraction, count and ``factors_path``).
        factors_path: the factor file's path, recorded in that note.

    Returns:
        The selection: per-weight masks, counts per layer and the first ``top`` candidates.
    """
    selection = select(score_weights(opened.posterior, criterion), fraction, top=top)
    if output is not None:
        module = opened.model.module
        module.load_state_dict(apply_masks(module.state_dict(), selection.masks))
        meta = opened.model.meta
        meta.extra = {**meta.extra, "pruned": {"criterion": criterion, "fraction": fraction,
                                               "weights": selection.pruned, "factors": str(factors_path)}}
        save_model(module, meta, output)
    return selection


@dataclass
class PruneOutcome:
    """What :func:`prune_factor_file` found: the opened file, and the selection and/or the criteria's evaluation."""

    opened: OpenedFactors
    selection: PruneSelection | None = None
    evaluation: PruneEvaluation | None = None
    comparisons: list[Comparison] = field(default_factory=list)  # each criterion against the magnitude baseline


def check_prune_request(fraction: float | None, evaluate: Sequence[float] | None, output: str | Path | None) -> None:
    """Refuse a request that chooses nothing, or an ``output`` without a ``fraction`` or not ``.safetensors``.

    Raises:
        UserError: naming the parameter to give or change.
    """
    if fraction is None and evaluate is None:
        raise UserError("give {param} F (e.g. {param} 0.5) to choose weights, or {evaluate} to compare criteria",
                        param="fraction", mentions=("evaluate",))
    if output is not None:
        if fraction is None:
            raise UserError("{param} needs {fraction} F: which share of the weights to prune in the written model",
                            param="output", mentions=("fraction",))
        if Path(output).suffix.lower() != ".safetensors":
            raise UserError(f"pruned models are saved as safetensors; name the output *.safetensors, not {Path(output).name}")
        check_output_path(output)


def prune_factor_file(
    factors: str | Path, *, fraction: float | None = None, criterion: str = "snr", top: int = 20,
    output: str | Path | None = None, evaluate: Sequence[float] | None = None, data: str | None = None,
    split: str = "test", split_required_by: str | None = None, limit: int | None = None,
    root: str | Path | None = None, download: bool = False, conversion: ImageConversion | None = None,
    batch_size: int = 1000, prior_precision: float | None = None, n_data: float | None = None,
    device: torch.device | str = "cpu",
    arch: str | None = None, arch_kwargs: list[str] | None = None, progress: Progress = no_progress,
) -> PruneOutcome:
    """``uncert prune``: choose weights by posterior uncertainty, save the pruned network, compare criteria.

    Only ``evaluate`` runs the network (``arch`` names a user's class); choosing and saving need the weights
    alone. The pruned network is never written over the checkpoint the file was fitted from.

    Args:
        factors: the factor file.
        fraction: share of the candidate weights to prune (with ``criterion``, ``top`` listed); None: none.
        criterion: how weights are ranked (:data:`~uncert_cli.analysis.pruning.CRITERIA`).
        top: how many candidates the selection lists.
        output: a ``.safetensors`` path for the pruned network (needs ``fraction``).
        evaluate: fractions at which every criterion prunes and is measured on ``data``; None: no evaluation.
        data: the evaluation set (default: the set the file was fitted on), its ``split`` (with
            ``split_required_by`` as for :func:`~uncert_cli.workflows.inputs.load_model_data`), ``limit``,
            ``root``, ``download`` and ``conversion``.
        split: see ``data``.
        split_required_by: see ``data``.
        limit: see ``data``.
        root: see ``data``.
        download: see ``data``.
        conversion: see ``data``.
        batch_size: examples per forward pass of the evaluation.
        prior_precision: τ replacing the file's.
        n_data: N replacing the file's.
        device: where to compute.
        arch: the network's class for a file fitted on the user's own (only ``evaluate`` needs it).
        arch_kwargs: its KEY=VALUE arguments.
        progress: the evaluation's progress bar.

    Returns:
        The opened file with the selection, the evaluation and the criteria's comparison asked for. A
        request :func:`check_prune_request` refuses, and a file, data or class that cannot be used, are
        ``UserError`` s.
    """
    check_factor_path(factors)  # a missing file is the first thing to say
    check_prune_request(fraction, evaluate, output)
    opened = open_posterior(factors, prior_precision=prior_precision, n_data=n_data, device=device,
                            flags=("prior_precision", "n_data"), arch=arch, arch_kwargs=arch_kwargs,
                            runs_model=evaluate is not None)
    if output is not None:  # never overwrite the checkpoint the file was fitted from
        file_session.note_input(opened.factors.checkpoint_path)
        check_output_path(output)
    outcome = PruneOutcome(opened)
    if evaluate is not None:
        dataset = load_model_data(  # default: the data the factors were fitted on, as ood does
            opened.model.meta, data or opened.factors.fit.get("dataset"), split=split, limit=limit, root=root,
            download=download, split_required_by=split_required_by, conversion=conversion, model=opened.model.module,
        )
        outcome.evaluation = evaluate_criteria(opened, dataset, evaluate, batch_size=batch_size, progress=progress)
        outcome.comparisons = compare_to_baseline(outcome.evaluation)
    if fraction is not None:
        outcome.selection = select_weights(opened, criterion, fraction, top=top,
                                           output=Path(output) if output is not None else None, factors_path=factors)
    return outcome

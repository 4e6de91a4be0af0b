"""``uncert prune`` as library calls: score a factor file's weights, write a pruned checkpoint, compare criteria.

The scores, the selection and the pruned network's metrics are computed in :mod:`uncert_cli.analysis.pruning`
(numbers in, numbers out); this module adds what touches files and data: the evaluation pass over a
dataset and the pruned checkpoint, written with the fitted checkpoint's metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from uncert_cli.analysis.pruning import (
    CRITERIA,
    PruneEvaluation,
    PruneSelection,
    apply_masks,
    evaluate_pruning,
    score_weights,
    select,
)
from uncert_cli.checkpoint import save_model
from uncert_cli.core.progress import Progress, no_progress
from uncert_cli.data import ArrayDataset, iter_batches
from uncert_cli.storage.opening import OpenedFactors


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
    with progress(passes * len(dataset), "prune --evaluate") as advance:
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

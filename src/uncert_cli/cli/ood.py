"""``uncert ood``: calibration, OOD detection and own-error detection of Laplace predictives (Ritter §5.2, §5.4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from uncert_cli.analysis.ood import (
    LAPLACE_KINDS,
    Hyperparameters,
    OODReport,
    current_hyperparameters,
    evaluate_predictive,
    split_validation,
    subset_rows,
    tune_on_validation,
)
from uncert_cli.checkpoint import ModelMeta
from uncert_cli.cli import options as o
from uncert_cli.data import ArrayDataset, adapt_to_model, load_dataset, parse_normalize
from uncert_cli.errors import UserError
from uncert_cli.factors import OpenedFactors, open_posterior
from uncert_cli.inputs import load_model_data
from uncert_cli.posterior import LaplacePosterior
from uncert_cli.posterior.predictive import PREDICTIVES
from uncert_cli.render.console import log, print_json, progress_bar
from uncert_cli.render.ood import ood_document, print_ood

DEFAULT_LAPLACE = "glm"  # the linearised predictive keeps the MAP's accuracy at any prior (see docs/json.md)

Predictives = Annotated[
    Optional[str],
    typer.Option(
        "--predictive",
        help="Comma-separated predictives: map, mc, glm, probit, dropout (default: map and glm, the linearised Laplace).",
    ),
]
Samples = Annotated[int, typer.Option("--samples", min=1, help="Weight samples (mc, glm) or dropout masks per prediction.")]
Tune = Annotated[
    Optional[bool],
    typer.Option(
        "--tune/--no-tune",
        help="Tune N and τ per Laplace predictive by validation NLL on the first --val-size in-distribution test "
        "examples (evaluation uses the rest). Default: tune unless --prior-precision/--n-data is given or the file "
        "was tuned with `uncert tune`.",
    ),
]
ValSize = Annotated[int, typer.Option("--val-size", min=1, help="Held-out examples for tuning (at most half the test set).")]
TuneSamples = Annotated[int, typer.Option("--tune-samples", min=1, help="Weight samples per prediction while tuning.")]
PriorMode = Annotated[
    Optional[str],
    typer.Option("--prior-mode", help="eigen (exact N·λ+τ) or factor (Ritter eq. 9). Default: factor when tuning, else the file's."),
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the weight samples and dropout masks.")]
Png = Annotated[Optional[Path], typer.Option("--png", help="Write plots (PNG) into this folder.")]


def parse_predictives(text: str | None, allowed: tuple[str, ...] = PREDICTIVES) -> list[str]:
    """``"map,glm"`` → ``["map", "glm"]``; None → map and the default Laplace predictive."""
    if text is None:
        return ["map", DEFAULT_LAPLACE]
    kinds = [k.strip().lower() for k in text.split(",") if k.strip()]
    if not kinds:
        raise UserError("--predictive is empty; pass e.g. --predictive map,glm")
    unknown = [k for k in kinds if k not in allowed]
    if unknown:
        raise UserError(f"unknown predictive {', '.join(map(repr, unknown))}; use one of {', '.join(allowed)}")
    return list(dict.fromkeys(kinds))


def open_for_analysis(
    factors: Path, prior_precision: float | None, n_data: float | None, prior_mode: str | None
) -> OpenedFactors:
    if prior_mode is not None and prior_mode not in ("eigen", "factor"):
        raise UserError(f"unknown --prior-mode '{prior_mode}'; use eigen or factor")
    opened = open_posterior(factors, prior_precision=prior_precision, n_data=n_data, prior_mode=prior_mode)
    if opened.posterior.task != "classification":
        raise UserError(f"'{factors}' holds a regression model; ood and attack need a classifier")
    return opened


def should_tune(tune: bool | None, opened: OpenedFactors, prior_precision: float | None, n_data: float | None) -> bool:
    """Auto: tune unless the user fixed the prior or `uncert tune` already chose it."""
    if tune is not None:
        return tune
    return prior_precision is None and n_data is None and opened.factors.tuning is None


def in_distribution_data(
    meta: ModelMeta, opened: OpenedFactors, spec: str | None, *, limit: int | None, tune: bool, val_size: int,
    root: Path | None, download: bool, normalize: str | None,
) -> tuple[ArrayDataset | None, ArrayDataset]:
    """``(validation or None, evaluation)`` from the test split of ``spec`` (default: the fit's dataset)."""
    spec = spec or opened.factors.fit.get("dataset") or meta.dataset
    total = None if limit is None else limit + (val_size if tune else 0)
    data = load_model_data(meta, spec, split="test", limit=total, root=root, download=download, normalize=normalize)
    if not tune:
        return None, data
    val, evaluation = split_validation(data, val_size)
    if limit is not None and len(evaluation) > limit:  # a small set gave fewer held-out examples than asked
        evaluation = subset_rows(evaluation, 0, limit)
    return val, evaluation


def ood_data(
    meta: ModelMeta, spec: str, *, limit: int | None, root: Path | None, download: bool, normalize: str | None
) -> ArrayDataset:
    """An OOD set shaped and normalised like the model's inputs; its labels are ignored."""
    try:
        raw = load_dataset(spec, split="test", root=root, limit=limit, download=download)
        if normalize:
            norm = parse_normalize(normalize)
        elif meta.normalize_mean is not None and meta.normalize_std is not None:
            norm = (list(meta.normalize_mean), list(meta.normalize_std))
        else:
            norm = None
        return adapt_to_model(raw, meta.input_shape, normalize=norm)
    except UserError as exc:
        raise UserError(f"--against {spec}: {exc}") from None


def resolve_posteriors(
    opened: OpenedFactors, kinds: list[str], *, tune: bool, val: ArrayDataset | None, prior_mode: str | None,
    tune_samples: int, batch_size: int, seed: int, overridden: bool, quiet: bool,
) -> dict[str, tuple[LaplacePosterior, Hyperparameters | None]]:
    """The posterior (with its hyperparameters) each predictive is evaluated with."""
    out: dict[str, tuple[LaplacePosterior, Hyperparameters | None]] = {}
    base = opened.posterior
    for kind in kinds:
        if kind not in LAPLACE_KINDS:
            out[kind] = (base, None)
        elif tune and val is not None:
            log(f"tuning N and τ of the {kind} predictive on {len(val):,} held-out examples ...", quiet=quiet)
            out[kind] = tune_on_validation(
                base, val, kind, samples=tune_samples, batch_size=batch_size, seed=seed, prior_mode=prior_mode or "factor"
            )
        else:
            out[kind] = (base, current_hyperparameters(base, "override" if overridden else "file"))
    return out


def _warn_collapse(results: dict, *, quiet: bool) -> None:
    """Flag a Laplace predictive that lost the MAP's accuracy: its posterior is too broad (prior too weak)."""
    if "map" not in results:
        return
    reference = results["map"].in_distribution.accuracy
    for kind, r in results.items():
        acc = r.in_distribution.accuracy
        if kind in LAPLACE_KINDS and acc < reference - 0.05:
            log(
                f"[yellow]warning:[/] the {kind} predictive's accuracy {acc:.1%} is far below the MAP's "
                f"{reference:.1%}: the posterior is too broad; use --tune or a larger --prior-precision/--n-data",
                quiet=quiet,
            )


def ood(
    factors: Annotated[Path, typer.Argument(help="Factor file written by `uncert fit`.")],
    against: Annotated[
        Optional[list[str]],
        typer.Option("--against", help="OOD dataset spec (repeatable): notmnist, fashionmnist, kmnist, a file ..."),
    ] = None,
    data: o.DataSpec = None,
    predictive: Predictives = None,
    prior_precision: o.PriorPrecision = None,
    n_data: o.NData = None,
    prior_mode: PriorMode = None,
    tune: Tune = None,
    val_size: ValSize = 1000,
    tune_samples: TuneSamples = 20,
    samples: Samples = 100,
    limit: o.Limit = None,
    batch_size: o.BatchSize = 500,
    seed: Seed = 0,
    png: Png = None,
    data_root: o.DataRoot = None,
    download: o.Download = False,
    normalize: o.Normalize = None,
    json_output: o.Json = False,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
) -> None:
    """Compare predictives in and out of distribution: accuracy, NLL, Brier, ECE, entropy AUROC/AUPR/FPR@95."""
    kinds = parse_predictives(predictive)
    against = list(against or [])
    if len(set(against)) != len(against):
        raise UserError("the same --against set is given twice; pass each OOD set once")
    opened = open_for_analysis(factors, prior_precision, n_data, prior_mode)
    meta = opened.model.meta
    tuning = should_tune(tune, opened, prior_precision, n_data) and any(k in LAPLACE_KINDS for k in kinds)
    val, evaluation = in_distribution_data(
        meta, opened, data, limit=limit, tune=tuning, val_size=val_size, root=data_root, download=download,
        normalize=normalize,
    )
    ood_sets = {spec: ood_data(meta, spec, limit=limit, root=data_root, download=download, normalize=normalize) for spec in against}
    quiet_all = quiet or json_output
    posteriors = resolve_posteriors(
        opened, kinds, tune=tuning, val=val, prior_mode=prior_mode, tune_samples=tune_samples, batch_size=batch_size,
        seed=seed, overridden=prior_precision is not None or n_data is not None, quiet=quiet_all,
    )
    total = len(evaluation) + sum(len(d) for d in ood_sets.values())
    results = {}
    for kind in kinds:
        post, hp = posteriors[kind]
        with progress_bar(total, f"ood {kind}", quiet=quiet_all) as advance:
            results[kind] = evaluate_predictive(
                post, kind, evaluation, ood_sets, samples=samples, batch_size=batch_size, seed=seed,
                hyperparameters=hp, on_batch=advance,
            )
    _warn_collapse(results, quiet=quiet_all)
    report = OODReport(
        in_name=evaluation.name, n_eval=len(evaluation), n_validation=len(val) if val is not None else 0,
        ood_names=against, results=results,
        settings={"factors": str(factors), "method": opened.factors.curvature.method, "seed": seed,
                  "num_classes": meta.num_outputs},
    )
    doc = ood_document(report)
    doc["pngs"] = []
    if png is not None:
        from uncert_cli.render.plots_ood import write_ood_plots  # matplotlib only when asked for

        doc["pngs"] = [str(p) for p in write_ood_plots(report, png)]
    if json_output:
        print_json(doc)
    else:  # --quiet silences progress and logs, not the result
        print_ood(doc)


def register(app: typer.Typer) -> None:
    app.command("ood")(ood)

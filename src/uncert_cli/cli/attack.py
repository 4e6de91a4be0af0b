"""``uncert attack``: fast-gradient-sign attacks against each predictive (Ritter et al. 2018, §5.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from uncert_cli.analysis.attack import (
    ATTACK_KINDS,
    UNTARGETED_STEP_SIZES,
    AttackedPredictive,
    AttackReport,
    targeted_attack,
    untargeted_attack,
)
from uncert_cli.cli import options as o
from uncert_cli.cli.ood import (
    Png,
    PriorMode,
    Seed,
    Tune,
    TuneSamples,
    ValSize,
    in_distribution_data,
    open_for_analysis,
    parse_predictives,
    resolve_posteriors,
    should_tune,
)
from uncert_cli.errors import UserError
from uncert_cli.render.console import print_json, progress_bar
from uncert_cli.render.ood import attack_document, print_attack


def _step_sizes(text: str | None) -> tuple[float, ...]:
    if text is None:
        return UNTARGETED_STEP_SIZES
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"--step-sizes must be comma-separated numbers, got '{text}'; e.g. --step-sizes 0,0.1,0.2") from None
    if not values or any(v < 0 or v != v for v in values):
        raise UserError(f"--step-sizes needs non-negative numbers, got '{text}'")
    return values


def attack(
    factors: Annotated[Path, typer.Argument(help="Factor file written by `uncert fit`.")],
    data: o.DataSpec = None,
    predictive: Annotated[
        Optional[str], typer.Option("--predictive", help="Comma-separated: map, mc, glm, dropout (default: map,glm).")
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="untargeted, targeted or both.")] = "both",
    step_sizes: Annotated[
        Optional[str], typer.Option("--step-sizes", help="Untargeted step sizes η (× per-dimension data range), comma-separated.")
    ] = None,
    target: Annotated[int, typer.Option("--target", min=0, help="Class the targeted attack pushes towards.")] = 0,
    step_size: Annotated[float, typer.Option("--step-size", min=0.0, help="Targeted step size η (× data range).")] = 0.01,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Targeted attack steps.")] = 50,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Weight samples (mc, glm) or dropout masks.")] = 30,
    prior_precision: o.PriorPrecision = None,
    n_data: o.NData = None,
    prior_mode: PriorMode = None,
    tune: Tune = None,
    val_size: ValSize = 1000,
    tune_samples: TuneSamples = 20,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Attack the first N evaluation examples.")] = 500,
    batch_size: o.BatchSize = 250,
    seed: Seed = 0,
    png: Png = None,
    data_root: o.DataRoot = None,
    download: o.Download = False,
    normalize: o.Normalize = None,
    json_output: o.Json = False,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
) -> None:
    """Untargeted (per step size) and targeted (per step) FGSM: accuracy, target hits, mean entropy."""
    if mode not in ("untargeted", "targeted", "both"):
        raise UserError(f"unknown --mode '{mode}'; use untargeted, targeted or both")
    kinds = parse_predictives(predictive, ATTACK_KINDS)
    etas = _step_sizes(step_sizes)
    opened = open_for_analysis(factors, prior_precision, n_data, prior_mode)
    meta = opened.model.meta
    if meta.num_outputs is not None and target >= meta.num_outputs:
        raise UserError(f"--target {target} is not a class of this model (it has {meta.num_outputs}); pick 0..{meta.num_outputs - 1}")
    tuning = should_tune(tune, opened, prior_precision, n_data) and any(k in ("mc", "glm") for k in kinds)
    val, evaluation = in_distribution_data(
        meta, opened, data, limit=limit, tune=tuning, val_size=val_size, root=data_root, download=download,
        normalize=normalize,
    )
    quiet_all = quiet or json_output
    posteriors = resolve_posteriors(
        opened, kinds, tune=tuning, val=val, prior_mode=prior_mode, tune_samples=tune_samples, batch_size=batch_size,
        seed=seed, overridden=prior_precision is not None or n_data is not None, quiet=quiet_all,
    )
    report = AttackReport(
        settings={
            "factors": str(factors), "data": evaluation.name, "n": len(evaluation), "samples": samples, "seed": seed,
            "target_class": target, "targeted_step_size": step_size, "n_validation": len(val) if val is not None else 0,
        },
        hyperparameters={k: hp for k, (_, hp) in posteriors.items()},
    )
    for kind in kinds:
        pred = AttackedPredictive(posteriors[kind][0], kind, samples=samples, seed=seed)
        if mode in ("untargeted", "both"):
            with progress_bar(len(evaluation), f"untargeted {kind}", quiet=quiet_all) as advance:
                report.untargeted[kind] = untargeted_attack(pred, evaluation, etas, batch_size=batch_size, on_batch=advance)
        if mode in ("targeted", "both"):
            with progress_bar(len(evaluation), f"targeted {kind}", quiet=quiet_all) as advance:
                report.targeted[kind] = targeted_attack(
                    pred, evaluation, target=target, step_size=step_size, steps=steps, batch_size=batch_size,
                    on_batch=advance,
                )
    doc = attack_document(report)
    doc["pngs"] = []
    if png is not None:
        from uncert_cli.render.plots_ood import write_attack_plots  # matplotlib only when asked for

        doc["pngs"] = [str(p) for p in write_attack_plots(report, png)]
    if json_output:
        print_json(doc)
    else:  # --quiet silences progress and logs, not the result
        print_attack(doc)


def register(app: typer.Typer) -> None:
    app.command("attack")(attack)

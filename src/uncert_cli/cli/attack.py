"""``uncert attack``: fast-gradient-sign attacks against each predictive (Ritter et al. 2018, §5.3)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.analysis.attack import ATTACK_KINDS, ATTACK_SAMPLES, UNTARGETED_STEP_SIZES
from uncert_cli.cli import options as o
from uncert_cli.cli.html_output import Html, figure_folder, finish_html
from uncert_cli.core.device import resolve_device
from uncert_cli.core.errors import UserError
from uncert_cli.core.vocabulary import HeldOutObjective
from uncert_cli.posterior.widest import DEFAULT_NLL_TOLERANCE
from uncert_cli.render.console import log, print_json, progress_bar
from uncert_cli.render.html import attack_page, check_html_path
from uncert_cli.render.ood import attack_document, print_attack
from uncert_cli.storage.factor_file import read_provenance
from uncert_cli.workflows.evaluate import AnalysisSettings, AttackSettings, parse_predictives, run_attack


def _step_sizes(text: str | None) -> tuple[float, ...]:
    if text is None:
        return UNTARGETED_STEP_SIZES
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"--step-sizes must be comma-separated numbers, got '{text}'; e.g. --step-sizes 0,0.1,0.2") from None
    if not values or any(not (0 <= v < math.inf) for v in values):  # 0: the clean baseline; NaN fails too
        raise UserError(f"--step-sizes needs finite non-negative numbers, got '{text}'; e.g. --step-sizes 0,0.1,0.2")
    return values


def _positive_finite(value: float) -> float:
    """Option callback: a step size must be a finite number > 0 (inf or NaN would make every input NaN)."""
    if not (0 < value < math.inf):
        raise typer.BadParameter(f"must be a finite positive number, got {value}")
    return value


def attack(
    factors: Annotated[Path, typer.Argument(help="Factor file written by `uncert fit`.")],
    data: o.DataSpec = None,
    predictive: Annotated[
        str | None, typer.Option("--predictive", help="Comma-separated: map, mc, glm, dropout (default: map,glm).")
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="untargeted, targeted or both.")] = "both",
    step_sizes: Annotated[
        str | None, typer.Option("--step-sizes", help="Untargeted step sizes η (× per-dimension data range), comma-separated.")
    ] = None,
    target: Annotated[int, typer.Option("--target", min=0, help="Class the targeted attack pushes towards.")] = 0,
    step_size: Annotated[float, typer.Option("--step-size", callback=_positive_finite, help=(
        "Targeted step size η (× data range)."
    ))] = 0.01,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Targeted attack steps.")] = 50,
    samples: Annotated[int, typer.Option("--samples", min=1, help=(
        "Weight samples (mc, glm) or dropout masks, fixed for the whole attack; the cost grows linearly with it."
    ))] = ATTACK_SAMPLES,
    prior_precision: o.PriorPrecision = None,
    n_data: o.NData = None,
    prior_mode: o.AnalysisPriorMode = None,
    tune: o.Tune = None,
    objective: Annotated[
        HeldOutObjective,
        typer.Option("--objective", help="How --tune chooses N and τ: widest (the widest posterior whose held-out NLL is "
                     "within --nll-tolerance of the best) or val-nll (the lowest held-out NLL)."),
    ] = HeldOutObjective.widest,
    nll_tolerance: o.NllTolerance = DEFAULT_NLL_TOLERANCE,
    val_from: o.ValFrom = None,
    val_size: o.ValSize = 1000,
    tune_samples: o.TuneSamples = 20,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Attack the first N evaluation examples.")] = 500,
    batch_size: o.BatchSize = 250,
    seed: o.Seed = 0,
    png: o.Png = None,
    html: Html = None,
    data_root: o.DataRoot = None,
    download: o.Download = False,
    normalize: o.Normalize = None,
    grayscale: o.Grayscale = False,
    channels: o.Channels = None,
    resize: o.Resize = None,
    arch: o.FactorArch = None,
    arch_kwargs: o.FactorArchKwargs = None,
    device: o.Device = o.DeviceChoice.auto,
    json_output: o.Json = False,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
) -> None:
    """Untargeted (per step size) and targeted (per step) FGSM: accuracy, target hits, mean entropy."""
    quiet_all = quiet or json_output
    if html is not None:
        check_html_path(html)  # before any work
    conversion = o.image_conversion(grayscale, channels, resize)
    settings = AnalysisSettings(
        data=data, limit=limit, prior_precision=prior_precision, n_data=n_data, prior_mode=prior_mode, tune=tune,
        val_size=val_size, tune_samples=tune_samples, batch_size=batch_size, seed=seed, root=data_root,
        download=download, normalize=normalize, device=resolve_device(device.value).type,
        objective=objective.value, nll_tolerance=nll_tolerance, val_from=val_from, arch=arch, arch_kwargs=arch_kwargs,
        grayscale=grayscale, channels=conversion.channels, resize=conversion.size,
    )
    plan = AttackSettings(
        mode=mode, step_sizes=_step_sizes(step_sizes), target=target, step_size=step_size, steps=steps, samples=samples
    )
    report = run_attack(
        factors, parse_predictives(predictive, ATTACK_KINDS), settings, plan,
        progress=lambda total, what: progress_bar(total, what, quiet=quiet_all),
        announce=lambda text: log(text, quiet=quiet_all),
        warn=lambda text: log(text, quiet=quiet),  # stderr even with --json
    )
    doc = attack_document(report)
    doc["pngs"] = []
    with figure_folder(png, html) as figures:
        if figures is not None:
            from uncert_cli.render.plots_ood import write_attack_plots  # matplotlib only when asked for

            doc["pngs"] = [str(p) for p in write_attack_plots(report, figures)]
        finish_html(html, png, doc, lambda d: attack_page(d, read_provenance(factors)), quiet_all)
    if json_output:
        print_json(doc)
    else:  # --quiet silences progress and logs, not the result
        print_attack(doc)


def register(app: typer.Typer) -> None:
    app.command("attack")(attack)

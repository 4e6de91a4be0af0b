"""``uncert ood``: calibration, OOD detection and own-error detection of Laplace predictives (Ritter §5.2, §5.4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.cli import options as o
from uncert_cli.cli.html_output import Html, figure_folder, finish_html
from uncert_cli.core.device import resolve_device
from uncert_cli.core.vocabulary import HeldOutObjective
from uncert_cli.posterior.widest import DEFAULT_NLL_TOLERANCE
from uncert_cli.render.console import log, print_json, progress_bar
from uncert_cli.render.html import check_html_path, ood_page
from uncert_cli.render.ood import ood_document, print_ood
from uncert_cli.storage.factor_file import read_provenance
from uncert_cli.workflows.evaluate import AnalysisSettings, parse_predictives, run_ood

Predictives = Annotated[
    str | None,
    typer.Option(
        "--predictive",
        help=(
            "Comma-separated predictives: map, mc, glm, probit, dropout (default: map and probit, the linearised Laplace in "
            "closed form; glm where a block is not Linear/Conv)."
        ),
    ),
]
Samples = Annotated[int, typer.Option("--samples", min=1, help="Weight samples (mc, glm) or dropout masks per prediction.")]
def ood(
    factors: Annotated[Path, typer.Argument(help="Factor file written by `uncert fit`.")],
    against: Annotated[
        list[str] | None,
        typer.Option("--against", help="OOD dataset spec (repeatable): notmnist, fashionmnist, kmnist, a file ..."),
    ] = None,
    data: o.DataSpec = None,
    resize: o.Resize = None,
    grayscale: o.Grayscale = False,
    channels: o.Channels = None,
    predictive: Predictives = None,
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
    samples: Samples = 100,
    limit: o.Limit = None,
    batch_size: o.BatchSize = 500,
    seed: o.Seed = 0,
    png: o.Png = None,
    html: Html = None,
    data_root: o.DataRoot = None,
    download: o.Download = False,
    normalize: o.Normalize = None,
    arch: o.FactorArch = None,
    arch_kwargs: o.FactorArchKwargs = None,
    device: o.Device = o.DeviceChoice.auto,
    json_output: o.Json = False,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
) -> None:
    """Compare predictives in and out of distribution: accuracy, NLL, Brier, ECE, entropy AUROC/AUPR/FPR@95."""
    quiet_all = quiet or json_output
    if html is not None:
        check_html_path(html)  # before any work
    conversion = o.image_conversion(grayscale, channels, resize)
    settings = AnalysisSettings(
        data=data, limit=limit, prior_precision=prior_precision, n_data=n_data, prior_mode=prior_mode, tune=tune,
        val_size=val_size, tune_samples=tune_samples, batch_size=batch_size, seed=seed, root=data_root,
        download=download, normalize=normalize, device=resolve_device(device.value).type,
        objective=objective.value, nll_tolerance=nll_tolerance, val_from=val_from, arch=arch, arch_kwargs=arch_kwargs,
        resize=conversion.size, grayscale=grayscale, channels=conversion.channels,
    )
    report = run_ood(
        factors, list(against or []), parse_predictives(predictive), settings, samples=samples,
        progress=lambda total, what: progress_bar(total, what, quiet=quiet_all),
        announce=lambda text: log(text, quiet=quiet_all),
        warn=lambda text: log(text, quiet=quiet),  # stderr even with --json
    )
    doc = ood_document(report)
    doc["pngs"] = []
    with figure_folder(png, html) as figures:
        if figures is not None:
            from uncert_cli.render.plots_ood import write_ood_plots  # matplotlib only when asked for

            doc["pngs"] = [str(p) for p in write_ood_plots(report, figures)]
        finish_html(html, png, doc, lambda d: ood_page(d, read_provenance(factors)), quiet_all)
    if json_output:
        print_json(doc)
    else:  # --quiet silences progress and logs, not the result
        print_ood(doc)


def register(app: typer.Typer) -> None:
    app.command("ood")(ood)

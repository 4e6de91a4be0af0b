"""``uncert report``: where the posterior uncertainty of a fitted network lives, layer by layer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.analysis import analyse_posterior
from uncert_cli.cli import options as o
from uncert_cli.cli.html_output import Html, figure_folder, finish_html
from uncert_cli.cli.option_groups import Output, with_groups
from uncert_cli.core.device import resolve_device
from uncert_cli.render.html import check_html_path, report_page
from uncert_cli.render.plots_report import png_directory, write_report_pngs
from uncert_cli.render.report import fit_section, model_section, print_report, prior_section, report_document
from uncert_cli.storage.factor_file import read_provenance
from uncert_cli.storage.opening import open_posterior

PngDir = Annotated[Path | None, typer.Option("--png", help="Write the report's figures (PNG) into this directory.")]


@with_groups(out=Output)
def report(
    factors: Annotated[Path, typer.Argument(help="Factor file written by 'uncert fit' (.h5).")],
    *,
    prior_precision: o.PriorPrecision = None,
    n_data: o.NData = None,
    png: PngDir = None,
    html: Html = None,
    device: o.Device = o.DeviceChoice.auto,
    out: Output,
) -> None:
    """Per-layer posterior std, variance share, variance ratio, effective parameters and a verdict."""
    directory = png_directory(png) if png is not None else None  # fail before any work
    if html is not None:
        check_html_path(html)
    # A report is arithmetic on the stored factors and weights: a user's class is never imported for it.
    opened = open_posterior(factors, prior_precision=prior_precision, n_data=n_data, device=resolve_device(device.value),
                           flags=("prior_precision", "n_data"), runs_model=False)
    posterior = opened.posterior
    result = analyse_posterior(posterior, opened.model.meta.input_shape)
    title = f"{Path(factors).name} ({posterior.curvature.method}, τ={_tau_text(posterior.prior_precision)})"
    with figure_folder(directory, html) as figures:
        pngs = write_report_pngs(result, figures, title) if figures is not None else []
        total = sum(p.numel() for p in opened.model.module.parameters())
        doc = report_document(
            result,
            model=model_section(opened.factors, total, result.covered_params),
            fit=fit_section(opened.factors),
            prior=prior_section(posterior.prior_precision, posterior.n_data, posterior.prior_mode),
            pngs=pngs,
        )
        finish_html(html, png, doc, lambda d: report_page(d, read_provenance(factors)), out.silent)
    out.show(doc, print_report)


def _tau_text(taus: dict[str, float]) -> str:
    values = set(taus.values())
    return f"{next(iter(values)):g}" if len(values) == 1 else "per layer"


def register(app: typer.Typer) -> None:
    app.command("report")(report)

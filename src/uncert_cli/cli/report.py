"""``uncert report``: where the posterior uncertainty of a fitted network lives, layer by layer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.cli import options as o
from uncert_cli.cli.html_output import Html, figure_folder, finish_html
from uncert_cli.cli.option_groups import Output, with_groups
from uncert_cli.core.device import resolve_device
from uncert_cli.render.html import check_html_path, report_page
from uncert_cli.render.plots_report import png_directory, write_report_pngs
from uncert_cli.render.report import factor_file_report_document, print_report, report_title
from uncert_cli.storage.factor_file import read_provenance
from uncert_cli.workflows.report import report_factor_file

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
    report_of_file = report_factor_file(factors, prior_precision=prior_precision, n_data=n_data,
                                        device=resolve_device(device.value))
    with figure_folder(directory, html) as figures:
        pngs = write_report_pngs(report_of_file.layers, figures, report_title(report_of_file)) if figures is not None else []
        doc = factor_file_report_document(report_of_file, pngs)
        finish_html(html, png, doc, lambda d: report_page(d, read_provenance(factors)), out.silent)
    out.show(doc, print_report)


def register(app: typer.Typer) -> None:
    app.command("report")(report)

"""``uncert prune``: which weights the posterior says can go, a pruned checkpoint, and what pruning costs."""

from __future__ import annotations

import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.cli import options as o
from uncert_cli.cli.html_output import Html
from uncert_cli.cli.option_groups import Conversion, DataFiles, FactorModel, Output, with_groups
from uncert_cli.core.device import resolve_device
from uncert_cli.core.errors import UserError
from uncert_cli.render.console import log, print_json, progress_bar
from uncert_cli.render.html import check_html_path, prune_page, write_html
from uncert_cli.render.plots_report import png_directory, write_prune_png
from uncert_cli.render.prune import (
    evaluation_section,
    print_evaluation,
    print_selection,
    prune_document,
    selection_section,
)
from uncert_cli.render.report import prior_section
from uncert_cli.storage.factor_file import check_factor_path, read_provenance
from uncert_cli.workflows.prune import check_prune_request, prune_factor_file

DEFAULT_FRACTIONS = "0.1,0.3,0.5,0.7,0.9"


class CriterionChoice(str, Enum):
    snr = "snr"
    variance_ratio = "variance-ratio"
    obd = "obd"
    magnitude = "magnitude"


def parse_fractions(text: str) -> list[float]:
    """``"0.1,0.5"`` -> ``[0.1, 0.5]``; each in [0, 1]."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--fractions must be comma-separated numbers such as {DEFAULT_FRACTIONS}, got '{text}'") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise UserError(f"--fractions must be numbers between 0 and 1 such as {DEFAULT_FRACTIONS}, got '{text}'")
    return sorted(set(values))


@with_groups(out=Output, images=Conversion, files=DataFiles, factor_model=FactorModel)
def prune(
    factors: Annotated[Path, typer.Argument(help="Factor file written by 'uncert fit' (.h5).")],
    *,
    fraction: Annotated[
        float | None, typer.Option("--fraction", min=0.0, max=1.0, help="Share of the candidate weights to prune.")
    ] = None,
    criterion: Annotated[
        CriterionChoice, typer.Option("--criterion", help="snr |μ|/σ, variance-ratio σ²/σ²_prior, obd μ²H_ii/2, magnitude |μ|.")
    ] = CriterionChoice.snr,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the pruned model here (.safetensors).")
    ] = None,
    top: Annotated[int, typer.Option("--top", min=0, help="How many candidates to list (table and JSON).")] = 20,
    evaluate: Annotated[
        bool, typer.Option("--evaluate", help="Prune at --fractions with every criterion and measure accuracy and NLL.")
    ] = False,
    fractions: Annotated[str, typer.Option("--fractions", help="Fractions for --evaluate.")] = DEFAULT_FRACTIONS,
    data: o.DataSpec = None,
    split: Annotated[o.SplitChoice | None, typer.Option("--split", help=(
        "Split for --evaluate (default test; a data file without splits is used whole)."
    ))] = None,
    limit: o.Limit = None,
    batch_size: o.BatchSize = 1000,
    files: DataFiles,
    images: Conversion,
    png: Annotated[Path | None, typer.Option("--png", help="Write the --evaluate curve (PNG) into this directory.")] = None,
    html: Html = None,
    prior_precision: o.PriorPrecision = None,
    n_data: o.NData = None,
    factor_model: FactorModel,
    device: o.Device = o.DeviceChoice.auto,
    out: Output,
) -> None:
    """List the weights to prune by posterior uncertainty, write a pruned checkpoint, or compare criteria."""
    check_factor_path(factors)  # a missing file is the first thing to say
    fraction_list = parse_fractions(fractions) if evaluate else None
    check_prune_request(fraction, fraction_list, output)
    conversion = images.image_conversion()
    directory = png_directory(png) if png is not None and evaluate else None
    page_only = None  # with --html but no --png, the --evaluate figure is drawn for the page alone
    if html is not None:
        check_html_path(html)  # before any work
        if evaluate and directory is None:
            page_only = tempfile.TemporaryDirectory(prefix="uncert-html-")  # removed when collected, even on errors
            directory = Path(page_only.name)

    split_name, split_asked = o.split_choice(split, "test")
    outcome = prune_factor_file(
        factors, fraction=fraction, criterion=criterion.value, top=top, output=output, evaluate=fraction_list,
        data=data, split=split_name, split_required_by=split_asked, limit=limit, root=files.data_root,
        download=files.download, conversion=conversion, batch_size=batch_size, prior_precision=prior_precision,
        n_data=n_data, device=resolve_device(device.value), arch=factor_model.arch, arch_kwargs=factor_model.arch_kwargs,
        progress=lambda total, what: progress_bar(total, what, quiet=out.silent),
    )
    posterior = outcome.opened.posterior
    prior = prior_section(posterior.prior_precision, posterior.n_data, posterior.prior_mode)
    evaluation_doc = None
    if outcome.evaluation is not None:
        png_path = write_prune_png(outcome.evaluation, directory / "prune_evaluation.png") if directory is not None else None
        evaluation_doc = evaluation_section(outcome.evaluation, outcome.comparisons, png_path)
    selection_doc = selection_section(outcome.selection, output) if outcome.selection is not None else None

    doc = prune_document(factors, prior, selection_doc, evaluation_doc)
    if html is not None:
        write_html(prune_page(doc, read_provenance(factors)), html)
        log(f"wrote {html}", quiet=out.silent)
    if page_only is not None:
        page_only.cleanup()
        doc["evaluation"]["png"] = None
    if out.json_output:
        print_json(doc)
        return
    if selection_doc is not None:
        print_selection(selection_doc)
    if evaluation_doc is not None:
        print_evaluation(evaluation_doc)


def register(app: typer.Typer) -> None:
    app.command("prune")(prune)

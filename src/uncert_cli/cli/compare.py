"""``uncert compare``: two or more posteriors of one checkpoint side by side, layer by layer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.analysis.compare import DEFAULT_FRACTION
from uncert_cli.cli import options as o
from uncert_cli.cli.option_groups import Output, with_groups
from uncert_cli.cli.prune import CriterionChoice
from uncert_cli.core.device import resolve_device
from uncert_cli.render.compare import compare_document, file_section, print_compare, write_compare_pngs
from uncert_cli.render.plots_report import png_directory
from uncert_cli.storage.factor_file import read_provenance
from uncert_cli.workflows.compare import compare_factor_files


@with_groups(out=Output)
def compare(
    factors: Annotated[list[Path], typer.Argument(help=(
        "Two or more factor files of the same checkpoint; the first is the reference."
    ))],
    *,
    criterion: Annotated[
        CriterionChoice, typer.Option("--criterion", help=(
            "Pruning score whose top candidates are compared (as in 'uncert prune')."
        ))
    ] = CriterionChoice.snr,
    fraction: Annotated[
        float, typer.Option("--fraction", min=0.0, max=1.0, help=(
            "Share of each layer's weights in the compared pruning candidates."
        ))
    ] = DEFAULT_FRACTION,
    png: o.Png = None,
    device: o.Device = o.DeviceChoice.auto,
    out: Output,
) -> None:
    """Compare two or more posteriors of one checkpoint, layer by layer.

    Per file: variance share, mean σ, σ²/σ²_prior; the first file against each other one: rank correlation
    of σ, shared pruning candidates and the KL divergence of the marginals.
    """
    directory = png_directory(png) if png is not None else None  # fail before any work
    compared = compare_factor_files(factors, criterion=criterion.value, fraction=fraction,
                                    device=resolve_device(device.value))
    pngs = write_compare_pngs(compared.comparison, directory, [str(p) for p in factors]) if directory is not None else []
    files = [file_section(read_provenance(p), opened.posterior.num_params) for p, opened in zip(factors, compared.opened)]
    first = compared.opened[0].factors
    doc = compare_document(compared.comparison, files, first.fingerprint, first.checkpoint_path, pngs)
    out.show(doc, print_compare)


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)

"""``uncert track``: how each layer's uncertainty changes over the checkpoints of one training run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.cli import options as o
from uncert_cli.cli.html_output import Html, figure_folder, finish_html
from uncert_cli.cli.option_groups import CheckpointSource, Conversion, DataFiles, Output, with_groups
from uncert_cli.core.device import resolve_device
from uncert_cli.core.vocabulary import Method
from uncert_cli.render.console import log, print_json, progress_bar
from uncert_cli.render.html import check_html_path, track_page
from uncert_cli.render.plots_report import png_directory, write_track_png
from uncert_cli.render.report import print_track, track_document
from uncert_cli.workflows.fit import FitOptions
from uncert_cli.workflows.fit_checkpoints import CheckpointLoading, FitData
from uncert_cli.workflows.track import track_checkpoints


@with_groups(source=CheckpointSource, out=Output, images=Conversion, files=DataFiles)
def track(
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoints of one training run (e.g. run/epoch*.safetensors).")],
    *,
    data: o.DataSpec = None,
    method: Annotated[Method, typer.Option("--method", help="Curvature structure for every fit.")] = Method.kfac,
    prior_precision: Annotated[float, typer.Option("--prior-precision", callback=o.positive, help=(
        "Prior precision τ for every fit."
    ))] = 1.0,
    split: o.Split = None,
    limit: o.Limit = None,
    batch_size: o.BatchSize = 256,
    files: DataFiles,
    images: Conversion,
    source: CheckpointSource,
    model_output: o.ModelOutput = None,
    device: o.Device = o.DeviceChoice.auto,
    png: Annotated[Path | None, typer.Option("--png", help="Write the over-training figure (PNG) into this directory.")] = None,
    html: Html = None,
    out: Output,
) -> None:
    """Fit every checkpoint with the same method and data; plot σ, variance ratio and γ per layer over training."""
    conversion = images.image_conversion()
    directory = png_directory(png) if png is not None else None
    if html is not None:
        check_html_path(html)  # before any work
    split_name, split_asked = o.split_choice(split, "train")
    result = track_checkpoints(
        checkpoints, FitOptions(method=method.value, batch_size=batch_size, device=resolve_device(device.value)),
        prior_precision,
        data=FitData(spec=data, split=split_name, split_required_by=split_asked, limit=limit, root=files.data_root,
                     download=files.download, conversion=conversion),
        loading=CheckpointLoading(**source.load_options(), model_output=model_output),
        progress=lambda total, what: progress_bar(total, what, quiet=out.silent),
    )
    points = result.points
    with figure_folder(directory, html) as figures:
        pngs = [write_track_png(result, figures / "track.png")] if figures is not None else []
        doc = track_document(result, pngs)
        base = {"checkpoints": len(points), "method": result.method, "n_data": result.n_data,
                "prior_precision": prior_precision}
        finish_html(html, png, doc, lambda d: track_page(d, base), out.silent)
    if out.json_output:
        print_json(doc)
    else:
        log(f"fitted {len(points)} checkpoints", quiet=out.quiet)
        print_track(doc)


def register(app: typer.Typer) -> None:
    app.command("track")(track)

"""``uncert track``: how each layer's uncertainty changes over the checkpoints of one training run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.cli import options as o
from uncert_cli.cli.html_output import Html, figure_folder, finish_html
from uncert_cli.cli.option_groups import CheckpointSource, Conversion, DataFiles, Output, with_groups
from uncert_cli.core.device import resolve_device
from uncert_cli.core.errors import UserError
from uncert_cli.core.vocabulary import Method
from uncert_cli.curvature.methods import METHODS as CURVATURE_METHODS
from uncert_cli.render.console import log, print_json, progress_bar
from uncert_cli.render.html import check_html_path, track_page
from uncert_cli.render.plots_report import png_directory, write_track_png
from uncert_cli.render.report import print_track, track_document
from uncert_cli.workflows.fit import DEFAULT_EPOCHS, FitOptions
from uncert_cli.workflows.inputs import load_checkpoint_model, load_model_data
from uncert_cli.workflows.track import (
    TrackResult,
    check_same_architecture,
    check_same_layers,
    order_checkpoints,
    track_point,
)


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
    if prior_precision <= 0:
        raise UserError("--prior-precision must be positive, e.g. --prior-precision 1")
    missing = [str(p) for p in checkpoints if not p.exists()]
    if missing:
        raise UserError(f"no such checkpoint: {', '.join(missing)}; pass the files of one training run")
    conversion = images.image_conversion()
    directory = png_directory(png) if png is not None else None
    if html is not None:
        check_html_path(html)  # before any work
    ordered = order_checkpoints(checkpoints)
    options = FitOptions(method=method.value, batch_size=batch_size, device=resolve_device(device.value))
    show = not out.silent
    points = []

    def load(path: Path):
        return load_checkpoint_model(path, **source.load_options(), model_output=model_output)

    # Every checkpoint is checked against the first before anything is fitted (loading is cheap).
    first = load(ordered[0])
    for path in ordered[1:]:
        check_same_architecture(first, load(path), ordered[0], path)
    # One dataset for the whole run, shaped for its first checkpoint.
    split_name, split_asked = o.split_choice(split, "train")
    dataset = load_model_data(
        first.meta, data, split=split_name, limit=limit, root=files.data_root, download=files.download,
        split_required_by=split_asked, conversion=conversion, model=first.module,
    )
    for path in ordered:
        loaded = first if path == ordered[0] else load(path)
        passes = CURVATURE_METHODS[options.method].data_passes(options.epochs or DEFAULT_EPOCHS)  # vi: 1 + epochs
        with progress_bar(len(dataset) * passes, f"fit {path.name}", quiet=not show) as advance:
            points.append(track_point(path, loaded, dataset, options, prior_precision, on_batch=advance))
    names = check_same_layers(points)
    result = TrackResult(method.value, dataset.name, len(dataset), prior_precision, names, points)
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

"""``uncert info``: what a checkpoint (or a factor file) holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.checkpoint import describe_layers
from uncert_cli.cli import options as o
from uncert_cli.cli.option_groups import CheckpointSource, Output, with_groups
from uncert_cli.render.info import model_summary, print_model_summary
from uncert_cli.workflows.inputs import load_model_file


@with_groups(source=CheckpointSource, out=Output)
def info(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.safetensors, .pt, .pth) or factor file (.h5).")],
    *,
    source: CheckpointSource,
    trust_remote_code: o.TrustRemoteCode = False,
    out: Output,
) -> None:
    """Show the layers, parameter counts, input shape and curvature structure of a model."""
    loaded = load_model_file(checkpoint, **source.load_options(), trust_remote_code=trust_remote_code)
    summary = model_summary(loaded, describe_layers(loaded.module))
    out.show(summary, print_model_summary)


def register(app: typer.Typer) -> None:
    app.command("info")(info)

"""``uncert info``: what a checkpoint (or a factor file) holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import h5py
import typer

from uncert_cli.checkpoint import describe_layers
from uncert_cli.cli import options as o
from uncert_cli.cli.option_groups import CheckpointSource, Output, with_groups
from uncert_cli.render.info import model_summary, print_model_summary
from uncert_cli.workflows.inputs import load_checkpoint_model


@with_groups(source=CheckpointSource, out=Output)
def info(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.safetensors, .pt, .pth) or factor file (.h5).")],
    *,
    source: CheckpointSource,
    trust_remote_code: o.TrustRemoteCode = False,
    out: Output,
) -> None:
    """Show the layers, parameter counts, input shape and curvature structure of a model."""
    if checkpoint.exists() and h5py.is_hdf5(checkpoint):
        from uncert_cli.storage.opening import open_factor_model

        loaded = open_factor_model(checkpoint, arch=source.arch, arch_kwargs=source.arch_kwargs)
    else:
        loaded = load_checkpoint_model(checkpoint, **source.load_options(), trust_remote_code=trust_remote_code)
    summary = model_summary(loaded, describe_layers(loaded.module))
    out.show(summary, print_model_summary)


def register(app: typer.Typer) -> None:
    app.command("info")(info)

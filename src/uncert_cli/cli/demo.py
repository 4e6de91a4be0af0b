"""``uncert demo``: the whole pipeline on the embedded default (digits MLP + scikit-learn digits)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.cli import options as o
from uncert_cli.demo import run_demo
from uncert_cli.render.console import log, print_json


def demo(
    out: Annotated[Path, typer.Option("--out", help="Directory for the demo's outputs.")] = Path("uncert-demo"),
    json_output: o.Json = False,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
) -> None:
    """Fit, report and test OOD detection on a shipped model, offline, in seconds."""
    announce = (lambda text: log(f"\n[bold cyan]{text}[/bold cyan]", quiet=False)) if not (quiet or json_output) else (lambda t: None)
    documents = run_demo(out, json_output=json_output, announce=announce)
    if json_output:
        print_json(documents)
    elif not quiet:
        log(f"\n[bold]done[/bold]: factor file, report PNGs and OOD plots are in {out.resolve()}", quiet=False)
        for page in documents["html"]:
            log(f"open in a browser: {page}", quiet=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

"""``uncert demo``: the embedded default end to end (the shipped digits MLP + scikit-learn digits), offline.

The demo is literally a short sequence of ``uncert`` commands (printed as it goes) run through the real
CLI entry point, so what it shows is what a user types next.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from uncert_cli.cli.option_groups import Output, with_groups
from uncert_cli.core.atomic import make_output_directory
from uncert_cli.core.errors import UserError
from uncert_cli.render.console import log, print_json
from uncert_cli.samples import sample_path

#: The self-contained pages the demo writes (``--html``), in the order they are written.
HTML_PAGES = ("report.html", "ood.html")


def demo_commands(out_dir: Path) -> list[tuple[str, list[str]]]:
    """``(step name, argv)`` for every stage of the demo."""
    checkpoint = str(sample_path("digits_mlp.safetensors"))
    factors = str(out_dir / "digits_kfac.h5")
    return [
        ("info", ["info", checkpoint]),
        ("fit", ["fit", checkpoint, "--data", "digits", "--method", "kfac", "-o", factors]),
        ("report", ["report", factors, "--png", str(out_dir / "report"), "--html", str(out_dir / "report.html")]),
        ("ood", ["ood", factors, "--against", "photo-patches", "--predictive", "map,probit,glm,mc",
                 "--val-size", "150", "--png", str(out_dir / "ood"), "--html", str(out_dir / "ood.html")]),
    ]


def run_demo(
    out_dir: Path, *, json_output: bool = False, announce: Callable[[str], None] = lambda s: None
) -> dict[str, Any]:
    """Run every step through the real CLI; with ``json_output`` collect each step's JSON document."""
    from uncert_cli.cli.main import main  # imported here: cli.main imports this module to register it

    make_output_directory(out_dir, param="out")
    documents: dict[str, Any] = {
        "outputs": str(out_dir.resolve()),
        "html": [str((out_dir / name).resolve()) for name in HTML_PAGES],
    }
    for name, argv in demo_commands(out_dir):
        announce(f"$ uncert {' '.join(argv)}")
        if json_output:
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                code = main([*argv, "--json"])
            documents[name] = json.loads(buffer.getvalue()) if code == 0 else None
        else:
            code = main(argv)
        if code == 130:  # the step was interrupted (Ctrl-C): stop the demo as an interrupt, not an error
            raise KeyboardInterrupt
        if code != 0:
            raise UserError(f"demo step '{name}' failed (exit code {code}); rerun it with --debug: uncert {' '.join(argv)}")
    return documents


@with_groups(output=Output)
def demo(
    *,
    out: Annotated[Path, typer.Option("--out", help="Directory for the demo's outputs.")] = Path("uncert-demo"),
    output: Output,
) -> None:
    """Fit, report and test OOD detection on a shipped model, offline, in seconds."""
    def announce(text: str) -> None:
        if not output.silent:
            log(Text.assemble("\n", (text, "bold cyan")), quiet=False)

    documents = run_demo(out, json_output=output.json_output, announce=announce)
    if output.json_output:
        print_json(documents)
    elif not output.quiet:
        log(Text.assemble("\n", ("done", "bold"), f": factor file, report PNGs and OOD plots are in {out.resolve()}"),
            quiet=False)
        for page in documents["html"]:
            log(f"open in a browser: {page}", quiet=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

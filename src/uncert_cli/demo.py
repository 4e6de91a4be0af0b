"""The embedded default, end to end: the shipped digits MLP through fit → report → ood, offline.

The demo is literally a short sequence of ``uncert`` commands (printed as it goes), so what it
shows is what a user types next.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uncert_cli.atomic import make_output_directory
from uncert_cli.errors import UserError
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
    from uncert_cli.cli.main import main  # the CLI layer is the demo's subject, not its dependency

    make_output_directory(out_dir, "--out")
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

"""``--html FILE``: the figures a page needs, and writing the page, shared by every analysis command."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from uncert_cli.render.console import log

Html = Annotated[
    Path | None,
    typer.Option("--html", help="Also write one self-contained HTML page (tables and figures, opens offline)."),
]


@contextlib.contextmanager
def figure_folder(png: Path | None, html: Path | None) -> Iterator[Path | None]:
    """The folder for PNGs: the user's ``--png``, else a temporary one when only the page needs them.

    ``html`` must already have been checked with :func:`uncert_cli.render.html.check_html_path`.
    """
    if png is not None or html is None:
        yield png
        return
    with tempfile.TemporaryDirectory(prefix="uncert-html-") as folder:
        yield Path(folder)


def finish_html(
    html: Path | None, png: Path | None, doc: dict[str, Any], build: Callable[[dict[str, Any]], Any], quiet: bool
) -> None:
    """Write the page for ``doc`` (built by ``build``) when ``--html`` was given.

    Figures written only for the page (no ``--png``) are embedded, then left out of ``doc['pngs']``:
    they lived in a temporary folder and the JSON must not name files that no longer exist.
    """
    if html is None:
        return
    from uncert_cli.render.html import write_html

    write_html(build(doc), html)
    if png is None and "pngs" in doc:
        doc["pngs"] = []
    log(f"wrote {html}", quiet=quiet)


def write_figures_and_page(
    doc: dict[str, Any],
    png: Path | None,
    html: Path | None,
    draw: Callable[[Path], list[Path]],
    build: Callable[[dict[str, Any]], Any],
    quiet: bool,
) -> None:
    """Fill ``doc['pngs']`` with the figures ``draw(folder)`` writes, when ``--png`` or ``--html`` asks for them,
    and write the page (:func:`finish_html`).
    """
    doc["pngs"] = []
    with figure_folder(png, html) as figures:
        if figures is not None:
            doc["pngs"] = [str(p) for p in draw(figures)]
        finish_html(html, png, doc, build, quiet)

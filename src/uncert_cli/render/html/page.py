"""A self-contained HTML page: provenance, sections of tables and figures, one inline script.

The page has no external resource of any kind (no scripts, fonts or stylesheets from elsewhere):
figures are embedded as base64 PNG ``data:`` URIs, the stylesheet and the table-sorting script are
inline, so the file opens offline in any browser and can be mailed as one attachment.

Pure presentation: everything shown is handed in already computed.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Cell", "Figure", "Table", "Section", "Page", "render_page"]


@dataclass
class Cell:
    """One table cell: ``text`` is shown, ``sort_key`` (a number) orders the column when clicked."""

    text: str
    sort_key: float | None = None
    figure: Figure | None = None  # a thumbnail shown in the cell (a per-row plot)


@dataclass
class Figure:
    """A PNG shown on the page; ``alt`` is read to people who cannot see it."""

    path: Path
    alt: str
    caption: str = ""
    anchor: str = ""  # an id, so that a thumbnail elsewhere on the page can link to the full figure


@dataclass
class Table:
    """A real ``<table>``; a column is sortable when its header is clicked."""

    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""


@dataclass
class Section:
    """A heading, a sentence on how to read what follows, then tables and figures."""

    title: str
    how_to_read: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)


@dataclass
class Page:
    title: str
    provenance: dict[str, Any]
    sections: list[Section]


def fmt(value: Any, digits: int = 4) -> Cell:
    """A cell for a JSON value: numbers to ``digits`` significant digits, sortable by their value."""
    if value is None:
        return Cell("–", None)
    if isinstance(value, bool):
        return Cell("yes" if value else "no", float(value))
    if isinstance(value, int):
        return Cell(f"{value:,}", float(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            return Cell(str(value), None)
        text = f"{value:.{digits}g}"
        return Cell(text, value)
    if isinstance(value, dict):
        return Cell(", ".join(f"{k}: {fmt(v).text}" for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return Cell(", ".join(fmt(v).text for v in value))
    return Cell(str(value))


_STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 75rem;
       padding: 0 1rem; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem;
     border-bottom: 2px solid #0072B2; padding-bottom: .2rem; }
.how { color: #333; background: #f3f6f9; border-left: 4px solid #0072B2; padding: .5rem .8rem; margin: .6rem 0 1rem; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-variant-numeric: tabular-nums; font-size: .92rem; }
caption { text-align: left; font-weight: 600; padding-bottom: .3rem; }
th, td { border: 1px solid #c8c8c8; padding: .25rem .55rem; text-align: right; vertical-align: middle; }
th { background: #e9eef3; cursor: pointer; user-select: none; white-space: nowrap; }
th[aria-sort="ascending"]::after { content: " ▲"; } th[aria-sort="descending"]::after { content: " ▼"; }
td:first-child, th:first-child, td.text { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
dl.prov { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; font-size: .92rem; }
dl.prov dt { font-weight: 600; } dl.prov dd { margin: 0; font-family: ui-monospace, monospace; word-break: break-all; }
figure { display: inline-block; margin: .5rem 1rem 1rem 0; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: .85rem; color: #333; max-width: 40rem; }
td img.thumb { max-width: 180px; max-height: 110px; width: auto; height: auto; display: block; }
.scroll { overflow-x: auto; }
p.para { max-width: 60rem; }
@media print { th { cursor: auto; } h2 { break-after: avoid; } figure { break-inside: avoid; } }
"""

# Click a header to sort by it; click again to reverse.  Cells carry data-sort when numeric.
_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.setAttribute("tabindex", "0");
    function sort() {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach(function (o) { o.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col], y = b.cells[col];
        var xs = x.getAttribute("data-sort"), ys = y.getAttribute("data-sort");
        var r;
        if (xs !== null && ys !== null) { r = parseFloat(xs) - parseFloat(ys); }
        else if (xs !== null) { r = -1; } else if (ys !== null) { r = 1; }
        else { r = x.textContent.localeCompare(y.textContent); }
        return asc ? r : -r;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); } });
  });
});
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _figure(figure: Figure) -> str:
    caption = f"<figcaption>{html.escape(figure.caption)}</figcaption>" if figure.caption else ""
    anchor = f' id="{html.escape(figure.anchor, quote=True)}"' if figure.anchor else ""
    return (f'<figure{anchor}><img src="{_data_uri(figure.path)}" alt="{html.escape(figure.alt, quote=True)}">'
            f"{caption}</figure>")


def _cell(cell: Cell) -> str:
    sort = f' data-sort="{cell.sort_key!r}"' if cell.sort_key is not None else ""
    if cell.figure is not None:
        img = (f'<img class="thumb" src="{_data_uri(cell.figure.path)}" '
               f'alt="{html.escape(cell.figure.alt, quote=True)}">')
        if cell.figure.anchor:
            img = f'<a href="#{html.escape(cell.figure.anchor, quote=True)}" title="full size below">{img}</a>'
        return f"<td{sort}>{img}</td>"
    align = "" if cell.sort_key is not None else ' class="text"'
    return f"<td{sort}{align}>{html.escape(cell.text)}</td>"


def _table(table: Table) -> str:
    head = "".join(f'<th scope="col">{html.escape(c)}</th>' for c in table.columns)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table.rows)
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return (f'<div class="scroll"><table class="sortable">{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _section(section: Section) -> str:
    parts = [f"<section><h2>{html.escape(section.title)}</h2>"]
    if section.how_to_read:
        parts.append(f'<p class="how">{html.escape(section.how_to_read)}</p>')
    parts += [f'<p class="para">{html.escape(p)}</p>' for p in section.paragraphs]
    parts += [_table(t) for t in section.tables]
    parts += [_figure(f) for f in section.figures]
    parts.append("</section>")
    return "".join(parts)


def _provenance(values: dict[str, Any]) -> str:
    items = "".join(
        f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(fmt(v, 6).text)}</dd>" for k, v in values.items()
    )
    return f'<section><h2>Provenance</h2><dl class="prov">{items}</dl></section>'


def render_page(page: Page) -> str:
    """The whole page as one HTML string (UTF-8, no external references)."""
    body = _provenance(page.provenance) + "".join(_section(s) for s in page.sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(page.title)}</title><style>{_STYLE}</style></head>"
        f"<body><header><h1>{html.escape(page.title)}</h1></header><main>{body}</main>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


def table_from_records(records: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], caption: str = "") -> Table:
    """A table with one row per record and ``columns`` as ``(key, header)`` pairs."""
    return Table([h for _, h in columns], [[fmt(r.get(k)) for k, _ in columns] for r in records], caption)

"""Self-contained HTML reports (``--html FILE``): one offline page per analysis."""

from __future__ import annotations

import os
from pathlib import Path

from uncert_cli.core.atomic import check_output_path, write_bytes
from uncert_cli.core.errors import UserError
from uncert_cli.render.html.page import Page, render_page
from uncert_cli.render.html.pages import attack_page, ood_page, provenance, prune_page, report_page, track_page

__all__ = ["check_html_path", "write_html", "Page", "report_page", "ood_page", "attack_page", "prune_page",
           "track_page", "provenance"]


def check_html_path(path: str | os.PathLike) -> Path:
    """Refuse, before any work, an ``--html`` target that is a folder or lies in a missing/unwritable one."""
    target = Path(path)
    if target.is_dir():
        raise UserError(f"{{param}} {target} is a directory; give a file name such as {target / 'report.html'}", param="html")
    return check_output_path(target)


def write_html(page: Page, path: str | os.PathLike) -> Path:
    """Write ``page`` to ``path`` atomically (temporary file, then rename)."""
    text = render_page(page)
    return write_bytes(path, text.encode("utf-8"))  # the one write path: free space, errors, temporaries

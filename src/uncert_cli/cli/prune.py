"""``uncert prune``: not built yet (see the project's issues)."""

from __future__ import annotations

import typer

from uncert_cli.errors import UserError


def prune() -> None:
    """(coming) see the README."""
    raise UserError("'uncert prune' is not available in this version yet")


def register(app: typer.Typer) -> None:
    app.command("prune")(prune)

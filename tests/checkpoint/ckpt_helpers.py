"""Constants shared by the checkpoint tests (a uniquely named module: ``conftest`` is ambiguous
when several test folders have one)."""

from __future__ import annotations

MLP_KWARGS = {"in_features": 12, "hidden": [8, 6], "out_features": 3}
MLP_ARCH = "uncert_cli.models:MLP"

"""Presentation of ``uncert toy``: its JSON document (written to ``--json-out``, printed by ``--json``) and log lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from uncert_cli.core.atomic import write_bytes
from uncert_cli.render.console import log
from uncert_cli.workflows.toy import ToyResult

# The curves' grid and the noiseless function are in the file, not on the screen.
FILE_ONLY_KEYS = ("x", "truth")


def toy_document(result: ToyResult, png: Path) -> dict[str, Any]:
    """The JSON document of the toy's curves (written whole to the ``--json-out`` file)."""
    return {"command": "toy", "png": str(png), **result.to_json()}


def write_toy_document(document: dict[str, Any], path: Path) -> None:
    """Write ``document`` to ``path`` (atomically)."""
    write_bytes(path, json.dumps(document, indent=1).encode())


def printed_toy_document(document: dict[str, Any]) -> dict[str, Any]:
    """What ``--json`` prints: the document without the grid (:data:`FILE_ONLY_KEYS`)."""
    return {k: v for k, v in document.items() if k not in FILE_ONLY_KEYS}


def log_toy_curves(result: ToyResult, written: tuple[Path, ...]) -> None:
    """One stderr line per curve (N, τ, validation NLL), the HMC note, and the files written."""
    for c in result.curves:
        nll = f", val NLL {c.val_nll:.3f}" if c.val_nll is not None else ""
        log(f"{c.label}: N={c.n_data:g}, τ={c.prior_precision:g}{nll}", quiet=False)
    log(result.reference_note or "", quiet=False)
    log(f"wrote {' and '.join(str(p) for p in written)}", quiet=False)

"""``uncert tune``: choose the prior precision (and N or σ) and record it in the factor file."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from uncert_cli.cli import options as o
from uncert_cli.device import resolve_device
from uncert_cli.inputs import load_model_data
from uncert_cli.render.console import log, print_json, stdout
from uncert_cli.store import read_factor_file
from uncert_cli.tuning import tune_factor_file


class ObjectiveChoice(str, Enum):
    marglik = "marglik"
    val_nll = "val-nll"


class StructureChoice(str, Enum):
    scalar = "scalar"
    layer = "layer"


class TunePredictive(str, Enum):
    glm = "glm"
    probit = "probit"
    mc = "mc"


def tune(
    factors: Annotated[Path, typer.Argument(help="Factor file written by 'uncert fit'.")],
    objective: Annotated[ObjectiveChoice, typer.Option("--objective", help="marglik: Laplace evidence; val-nll: held-out NLL grid search.")] = ObjectiveChoice.marglik,
    prior_structure: Annotated[StructureChoice, typer.Option("--prior-structure", help="One τ, or one per layer (marglik).")] = StructureChoice.scalar,
    data: o.DataSpec = None,
    split: o.Split = o.SplitChoice.test,
    limit: o.Limit = None,
    data_root: o.DataRoot = None,
    predictive: Annotated[TunePredictive, typer.Option("--predictive", help="Predictive scored by val-nll.")] = TunePredictive.glm,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Samples for mc/glm predictives.")] = 100,
    batch_size: o.BatchSize = 256,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the result without writing it into the file.")] = False,
    device: o.Device = o.DeviceChoice.auto,
    json_output: o.Json = False,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
) -> None:
    """Tune τ (and N for val-nll, σ for regression) and write them into the factor file."""
    val = None
    if objective is ObjectiveChoice.val_nll:
        meta = read_factor_file(factors).model_meta
        val = load_model_data(meta, data, split=split.value, limit=limit, root=data_root)
    outcome = tune_factor_file(
        factors, objective=objective.value, structure=prior_structure.value, val_data=val,
        predictive=predictive.value, samples=samples, batch_size=batch_size, write=not dry_run,
        device=resolve_device(device.value).type,
    )
    document = {"factors": str(factors), "written": not dry_run, **outcome.to_dict()}
    edges = outcome.at_grid_edge
    if edges:  # stderr, so --json stays pure
        log(f"warning: the best {' and '.join(edges)} lie on the edge of the searched grid; the optimum may be "
            "beyond it (set them by hand with --prior-precision / --n-data in later commands)", quiet=quiet)
    if json_output:
        print_json(document)
        return
    # --quiet silences logs, not the result (as in every command)
    table = Table(title=f"tuned by {outcome.objective}")
    table.add_column("")
    table.add_column("before")
    table.add_column("after")
    for key in ("prior_precision", "n_data", "noise_std"):
        table.add_row(key, _fmt(document["previous"][key]), _fmt(document[key]))
    stdout.print(table)
    stdout.print("written into the file" if not dry_run else "dry run: the file is unchanged")


def _fmt(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v:.3g}" for k, v in value.items())
    if value is None:
        return "(default)"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)

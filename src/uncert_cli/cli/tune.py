"""``uncert tune``: choose the prior precision (and N or σ) and record it in the factor file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from uncert_cli.cli import options as o
from uncert_cli.cli.flags import render_for_command
from uncert_cli.cli.option_groups import Conversion, DataFiles, FactorModel, Output, with_groups
from uncert_cli.core.device import resolve_device
from uncert_cli.core.vocabulary import Objective, PriorStructure, TunePredictive
from uncert_cli.posterior.widest import DEFAULT_NLL_TOLERANCE
from uncert_cli.render.console import log, print_json, progress_bar, stdout
from uncert_cli.workflows.tune import HeldOutRequest, tune_factor_file
from uncert_cli.workflows.validation import grid_edge_warning


@with_groups(out=Output, images=Conversion, factor_model=FactorModel, files=DataFiles)
def tune(
    factors: Annotated[Path, typer.Argument(help="Factor file written by 'uncert fit'.")],
    *,
    objective: Annotated[Objective | None, typer.Option("--objective", help=(
        "widest: the widest posterior whose held-out NLL is within --nll-tolerance of the best (default; marglik with "
        "--prior-structure layer); val-nll: the lowest held-out NLL; marglik: Laplace evidence."
    ))] = None,
    prior_structure: Annotated[PriorStructure, typer.Option("--prior-structure", help=(
        "One τ, or one per layer (marglik)."
    ))] = PriorStructure.scalar,
    data: o.DataSpec = None,
    split: Annotated[o.SplitChoice | None, typer.Option("--split", help=(
        "Held-out examples from this whole split of --data (with --limit) instead of --val-from."
    ))] = None,
    limit: o.Limit = None,
    val_from: o.ValFrom = None,
    val_size: o.ValSize = 1000,
    nll_tolerance: o.NllTolerance = DEFAULT_NLL_TOLERANCE,
    files: DataFiles,
    images: Conversion,
    predictive: Annotated[TunePredictive | None, typer.Option("--predictive", help=(
        "Predictive scored on the held-out examples (default: probit, glm where probit does not apply)."
    ))] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Samples for mc/glm predictives.")] = 100,
    batch_size: o.BatchSize = 256,
    factor_model: FactorModel,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the result without writing it into the file.")] = False,
    device: o.Device = o.DeviceChoice.auto,
    out: Output,
    context: typer.Context,  # the command, whose flags a library note's parameters are shown as
) -> None:
    """Tune τ (and N for val-nll, σ for regression) and write them into the factor file."""
    if objective is None:  # a per-layer prior exists only for the evidence
        objective = Objective.marglik if prior_structure is PriorStructure.layer else Objective.widest
    held_out = HeldOutRequest(data=data, split=split.value if split else None, limit=limit, val_from=val_from,
                              val_size=val_size, root=files.data_root, download=files.download,
                              conversion=images.image_conversion())
    outcome = tune_factor_file(
        factors, objective=objective.value, structure=prior_structure.value,
        held_out=held_out,
        predictive=predictive.value if predictive else None, samples=samples, batch_size=batch_size,
        nll_tolerance=nll_tolerance, write=not dry_run, device=resolve_device(device.value).type,
        arch=factor_model.arch, arch_kwargs=factor_model.arch_kwargs,
        # the evidence needs no forward; held-out data asked for by a flag does
        runs_model=objective is not Objective.marglik or held_out.asks_for_data,
        progress=lambda total, what: progress_bar(total, what, quiet=out.silent),
    )
    document = {"factors": str(factors), "written": not dry_run, **outcome.to_dict()}
    edges = outcome.at_grid_edge
    if edges:  # stderr, so --json stays pure
        log(render_for_command(grid_edge_warning(edges), context.command), quiet=out.quiet)
    if outcome.unchecked:
        log(f"note: {render_for_command(outcome.unchecked, context.command)}", quiet=out.quiet)
    held = outcome.held_out
    if held and outcome.worse_than_map:
        log(f"warning: at the chosen values the {held['predictive']} predictive's NLL on {held['n']:,} held-out examples "
            f"({held['examples']}) is {held['nll']:.4f}, {held['nll_ratio']:.2f}× the MAP's {held['map_nll']:.4f}; "
            f"`uncert tune {factors}` (widest objective) keeps it within 1% of the best", quiet=out.quiet)
    if out.json_output:
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
    if held:
        stdout.print(f"held-out NLL ({held['predictive']}, {held['n']:,} examples, {held['examples']}): "
                     f"{held['nll']:.4f} (MAP {held['map_nll']:.4f})")
    stdout.print("written into the file" if not dry_run else "dry run: the file is unchanged")


def _fmt(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v:.3g}" for k, v in value.items())
    if value is None:
        return "(default)"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)

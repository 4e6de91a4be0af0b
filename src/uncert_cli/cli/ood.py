"""``uncert ood``: calibration, OOD detection and own-error detection of Laplace predictives (Ritter §5.2, §5.4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.cli import options as o
from uncert_cli.cli.option_groups import Conversion, Evaluation, HeldOut, Output, analysis_settings, deliver, with_groups
from uncert_cli.render.html import ood_page
from uncert_cli.render.ood import ood_document, print_ood
from uncert_cli.workflows.evaluate import parse_predictives, run_ood

Predictives = Annotated[
    str | None,
    typer.Option(
        "--predictive",
        help=(
            "Comma-separated predictives: map, mc, glm, probit, dropout (default: map and probit, the linearised Laplace in "
            "closed form; glm where a block is not Linear/Conv)."
        ),
    ),
]
Samples = Annotated[int, typer.Option("--samples", min=1, help="Weight samples (mc, glm) or dropout masks per prediction.")]
@with_groups(evaluation=Evaluation, conversion=Conversion, held_out=HeldOut, out=Output)
def ood(
    factors: Annotated[list[Path], typer.Argument(help=(
        "Factor file written by `uncert fit`; several files (checkpoints of one architecture) add the deep ensemble "
        "and the mixture of Laplace."
    ))],
    *,
    context: typer.Context,  # the command, whose flags a library warning's parameters are shown as
    against: Annotated[
        list[str] | None,
        typer.Option("--against", help="OOD dataset spec (repeatable): notmnist, fashionmnist, kmnist, a file ..."),
    ] = None,
    data: o.DataSpec = None,
    conversion: Conversion,
    predictive: Predictives = None,
    held_out: HeldOut,
    samples: Samples = 100,
    limit: o.Limit = None,
    batch_size: o.BatchSize = 500,
    evaluation: Evaluation,
    out: Output,
) -> None:
    """Compare predictives in and out of distribution: accuracy, NLL, Brier, ECE, entropy AUROC/AUPR/FPR@95."""
    settings = analysis_settings(held_out, conversion, evaluation, data=data, limit=limit, batch_size=batch_size)
    # one file: that posterior; several (checkpoints of one architecture): the members, ensemble and mixture
    report = run_ood(
        factors, list(against or []), parse_predictives(predictive), settings, samples=samples,
        **out.reporters(context.command),
    )
    deliver(ood_document(report), report, factors[0], evaluation, out, page=ood_page, show=print_ood,
            plots="write_ood_plots")



def register(app: typer.Typer) -> None:
    app.command("ood")(ood)

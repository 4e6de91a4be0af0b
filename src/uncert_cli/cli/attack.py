"""``uncert attack``: fast-gradient-sign attacks against each predictive (Ritter et al. 2018, §5.3)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.analysis.attack import ATTACK_KINDS, ATTACK_SAMPLES, UNTARGETED_STEP_SIZES
from uncert_cli.cli import options as o
from uncert_cli.cli.option_groups import Conversion, Evaluation, HeldOut, Output, analysis_settings, deliver, with_groups
from uncert_cli.core.errors import UserError
from uncert_cli.render.html import attack_page
from uncert_cli.render.ood import attack_document, print_attack
from uncert_cli.workflows.evaluate import AttackSettings, parse_predictives, run_attack


def _step_sizes(text: str | None) -> tuple[float, ...]:
    if text is None:
        return UNTARGETED_STEP_SIZES
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"--step-sizes must be comma-separated numbers, got '{text}'; e.g. --step-sizes 0,0.1,0.2") from None
    if not values or any(not (0 <= v < math.inf) for v in values):  # 0: the clean baseline; NaN fails too
        raise UserError(f"--step-sizes needs finite non-negative numbers, got '{text}'; e.g. --step-sizes 0,0.1,0.2")
    return values


def _positive_finite(value: float) -> float:
    """Option callback: a step size must be a finite number > 0 (inf or NaN would make every input NaN)."""
    if not (0 < value < math.inf):
        raise typer.BadParameter(f"must be a finite positive number, got {value}")
    return value


@with_groups(evaluation=Evaluation, held_out=HeldOut, conversion=Conversion, out=Output)
def attack(
    factors: Annotated[list[Path], typer.Argument(help=(
        "Factor file written by `uncert fit`; several files (checkpoints of one architecture) add the deep ensemble "
        "and the mixture of Laplace."
    ))],
    *,
    context: typer.Context,  # the command, whose flags a library warning's parameters are shown as
    data: o.DataSpec = None,
    predictive: Annotated[
        str | None, typer.Option("--predictive", help="Comma-separated: map, mc, glm, dropout (default: map,glm).")
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="untargeted, targeted or both.")] = "both",
    step_sizes: Annotated[
        str | None, typer.Option("--step-sizes", help="Untargeted step sizes η (× per-dimension data range), comma-separated.")
    ] = None,
    target: Annotated[int, typer.Option("--target", min=0, help="Class the targeted attack pushes towards.")] = 0,
    step_size: Annotated[float, typer.Option("--step-size", callback=_positive_finite, help=(
        "Targeted step size η (× data range)."
    ))] = 0.01,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Targeted attack steps.")] = 50,
    samples: Annotated[int, typer.Option("--samples", min=1, help=(
        "Weight samples (mc, glm) or dropout masks, fixed for the whole attack; the cost grows linearly with it."
    ))] = ATTACK_SAMPLES,
    held_out: HeldOut,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Attack the first N evaluation examples.")] = 500,
    batch_size: o.BatchSize = 250,
    evaluation: Evaluation,
    conversion: Conversion,
    out: Output,
) -> None:
    """Untargeted (per step size) and targeted (per step) FGSM: accuracy, target hits, mean entropy."""
    settings = analysis_settings(held_out, conversion, evaluation, data=data, limit=limit, batch_size=batch_size)
    plan = AttackSettings(
        mode=mode, step_sizes=_step_sizes(step_sizes), target=target, step_size=step_size, steps=steps, samples=samples
    )
    # one file: that posterior; several (checkpoints of one architecture): the members, ensemble and mixture
    report = run_attack(
        factors, parse_predictives(predictive, ATTACK_KINDS), settings, plan,
        **out.reporters(context.command),
    )
    deliver(attack_document(report), report, factors[0], evaluation, out, page=attack_page, show=print_attack,
            plots="write_attack_plots")



def register(app: typer.Typer) -> None:
    app.command("attack")(attack)

"""``uncert toy``: Ritter et al. (2018) Fig. 1 on the 1-D toy regression (PNG + JSON of the curves)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.cli.option_groups import Output, with_groups
from uncert_cli.render.console import print_json
from uncert_cli.render.plots_toy import toy_figure
from uncert_cli.render.toy import log_toy_curves, printed_toy_document, toy_document, write_toy_document
from uncert_cli.workflows.toy import DEFAULT_CHECKPOINT, DEFAULT_METHODS, toy_from_checkpoint

__all__ = ["DEFAULT_CHECKPOINT", "register", "toy"]


@with_groups(out=Output)
def toy(
    checkpoint: Annotated[Path, typer.Argument(help="1-D regression checkpoint.")] = DEFAULT_CHECKPOINT,
    *,
    png: Annotated[Path, typer.Option("--png", help="Figure to write.")] = Path("toy.png"),
    json_path: Annotated[Path, typer.Option("--json-out", help="Curves as JSON.")] = Path("toy.json"),
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated structures.")] = ",".join(DEFAULT_METHODS),
    predictive: Annotated[str, typer.Option("--predictive", help="mc (weight samples, as Ritter) or glm.")] = "mc",
    samples: Annotated[int, typer.Option("--samples", min=1, help="Posterior samples per predictive.")] = 500,
    tune: Annotated[bool, typer.Option("--tune/--no-tune", help="Also tune (N, τ) on the val points.")] = True,
    hmc_samples: Annotated[int, typer.Option("--hmc-samples", min=1, help="NUTS samples (needs pyro-ppl).")] = 500,
    seed: Annotated[int, typer.Option("--seed", help="Seed for posterior samples.")] = 0,
    out: Output,
) -> None:
    """Predictive bands of KFAC / diag / full Laplace on the toy problem, with and without tuning."""
    result = toy_from_checkpoint(checkpoint, outputs=(png, json_path), methods=methods, predictive=predictive,
                                 samples=samples, tune=tune, hmc_samples=hmc_samples, seed=seed)
    toy_figure(result, png)
    document = toy_document(result, png)
    write_toy_document(document, json_path)
    if out.json_output:
        print_json(printed_toy_document(document))
    elif not out.quiet:
        log_toy_curves(result, (png, json_path))


def register(app: typer.Typer) -> None:
    app.command("toy")(toy)

"""``uncert toy``: Ritter et al. (2018) Fig. 1 on the 1-D toy regression (PNG + JSON of the curves)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.cli.option_groups import Output, with_groups
from uncert_cli.core.atomic import check_output_path, write_bytes
from uncert_cli.core.errors import UserError
from uncert_cli.render.console import log, print_json
from uncert_cli.render.plots_toy import toy_figure
from uncert_cli.samples import sample_path
from uncert_cli.workflows.fit import METHODS
from uncert_cli.workflows.inputs import load_checkpoint_model
from uncert_cli.workflows.toy import DEFAULT_METHODS, run_toy

# The toy network ships inside the package (1 KiB), so `uncert toy` works from any folder; it is the
# same file as sample_models/toy_regression_mlp.safetensors (sample_models/train.py writes both).
DEFAULT_CHECKPOINT = sample_path("toy_regression_mlp.safetensors")


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
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    bad = [m for m in chosen if m not in METHODS]
    if bad or not chosen:
        raise UserError(f"unknown method(s) {', '.join(bad) or methods!r} in --methods; use {', '.join(METHODS)}")
    if not checkpoint.exists():
        raise UserError(f"no such checkpoint: {checkpoint}; pass the toy model, e.g. {DEFAULT_CHECKPOINT}")
    loaded = load_checkpoint_model(checkpoint)
    for output in (png, json_path):  # before the minutes of fitting: a bad path, or the checkpoint itself
        check_output_path(output)
    result = run_toy(loaded, methods=chosen, predictive=predictive, samples=samples, tune=tune,
                     hmc_samples=hmc_samples, seed=seed)
    toy_figure(result, png)
    document = {"command": "toy", "png": str(png), **result.to_json()}
    import json

    write_bytes(json_path, json.dumps(document, indent=1).encode())
    if out.json_output:
        print_json({k: v for k, v in document.items() if k not in ("x", "truth")})
    elif not out.quiet:
        for c in result.curves:
            nll = f", val NLL {c.val_nll:.3f}" if c.val_nll is not None else ""
            log(f"{c.label}: N={c.n_data:g}, τ={c.prior_precision:g}{nll}", quiet=False)
        log(result.reference_note or "", quiet=False)
        log(f"wrote {png} and {json_path}", quiet=False)


def register(app: typer.Typer) -> None:
    app.command("toy")(toy)

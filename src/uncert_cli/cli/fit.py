"""``uncert fit``: fit a Laplace approximation and save its factors to HDF5."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.cli import options as o
from uncert_cli.cli.flags import render_for_command
from uncert_cli.cli.option_groups import CheckpointSource, Conversion, DataFiles, Output, with_groups
from uncert_cli.core.device import resolve_device, resolve_dtype
from uncert_cli.core.distributed import init_from_environment, shutdown
from uncert_cli.core.errors import ParameterText, UserError
from uncert_cli.core.memory import parse_size
from uncert_cli.core.vocabulary import FisherType, Method, PriorMode, Task
from uncert_cli.curvature.methods import METHODS as CURVATURE_METHODS
from uncert_cli.curvature.plain_kernels import needs_plain_kernels
from uncert_cli.render.console import log, print_json, progress_bar
from uncert_cli.render.fit import fit_summary, print_fit_summary
from uncert_cli.storage.factor_file import PriorSettings
from uncert_cli.workflows.fit import FitOptions, coverage_notes
from uncert_cli.workflows.fit_checkpoints import (
    CheckpointLoading,
    FitData,
    FitReporting,
    FitStart,
    FittedCheckpoint,
    fit_checkpoints,
)
from uncert_cli.workflows.fit_memory import describe
from uncert_cli.workflows.inputs import parse_input_shape

# Fits predicted to peak above this announce the prediction even when stderr is not a terminal.
ANNOUNCE_PEAK = 1 << 30
# Read from the method table, so that a new method's module is all its --method choice needs.
METHOD_HELP = "Curvature structure: " + ", ".join(
    f"{name} ({method.summary})" if method.summary else name for name, method in CURVATURE_METHODS.items()
) + "."


class DtypeChoice(str, Enum):
    float32 = "float32"
    float64 = "float64"


@with_groups(source=CheckpointSource, out=Output, images=Conversion, files=DataFiles)
def fit(
    checkpoints: Annotated[list[Path], typer.Argument(help=(
        "Model checkpoint (.safetensors, .pt, .pth, .ckpt) or a Hugging Face model folder (config.json + weights); "
        "several checkpoints of one architecture (an ensemble) are fitted one after the other, -o then names a folder."
    ))],
    *,
    data: o.DataSpec = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help=(
        "Factor file to write (HDF5; default factors.h5); with several checkpoints a folder that gets "
        "<checkpoint name>.h5 for each."
    ))] = None,
    method: Annotated[Method, typer.Option("--method", help=METHOD_HELP)] = Method.kfac,
    rank: Annotated[int | None, typer.Option("--rank", min=1, help=(
        "lowrank: K eigenpairs of the whole GGN; kfac-diag: L Kronecker eigenpairs per layer (default 20)."
    ))] = None,
    fisher: Annotated[FisherType, typer.Option("--fisher", help=(
        "exact GGN, Monte-Carlo or empirical Fisher."
    ))] = FisherType.exact,
    mc_samples: Annotated[int, typer.Option("--mc-samples", min=1, help=(
        "Sampled labels per example for --fisher mc; for --method vi, weight samples per ELBO gradient."
    ))] = 1,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="--method vi: passes over the data (default 5).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help=(
        "--method vi: Adam's learning rate, decayed to 0 by a cosine (default 1e-3)."
    ))] = None,
    subset: Annotated[str, typer.Option("--subset", help=(
        "all, last-layer, or comma-separated module names and glob patterns ('classifier.*', 'layers.1*')."
    ))] = "all",
    layers: Annotated[str | None, typer.Option("--layers", help=(
        "Alias of --subset with comma-separated module names, e.g. fc1,fc2."
    ))] = None,
    include_frozen: Annotated[bool, typer.Option("--include-frozen", help=(
        "Also cover parameters with requires_grad=False (default: only trainable ones)."
    ))] = False,
    task: Annotated[Task | None, typer.Option("--task", help="Override the checkpoint's task.")] = None,
    prior_precision: Annotated[float, typer.Option("--prior-precision", callback=o.positive, help=(
        "Prior precision τ stored as default."
    ))] = 1.0,
    prior_mode: Annotated[PriorMode, typer.Option("--prior-mode", help=(
        "eigen: exact N·λ+τ; factor: Ritter eq. 9."
    ))] = PriorMode.eigen,
    n_data: o.NData = None,
    split: o.Split = None,
    limit: o.Limit = None,
    batch_size: o.BatchSize = 256,
    files: DataFiles,
    normalize: o.Normalize = None,
    images: Conversion,
    source: CheckpointSource,
    model_output: o.ModelOutput = None,
    trust_remote_code: o.TrustRemoteCode = False,
    input_shape: Annotated[
        str | None,
        typer.Option("--input-shape", metavar="D1,D2,...", help="One example's shape as the model takes it (e.g. 64,16 for "
                     "sequences of 64 steps with 16 features), when the checkpoint does not record it and the data is "
                     "ambiguous."),
    ] = None,
    device: o.Device = o.DeviceChoice.auto,
    dtype: Annotated[DtypeChoice, typer.Option("--dtype", help="Computation precision.")] = DtypeChoice.float32,
    max_memory: Annotated[str | None, typer.Option("--max-memory", help=(
        "Refuse if the fit's predicted peak memory is larger (e.g. 8GiB; default: the memory available on this machine)."
    ))] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for Monte-Carlo labels.")] = 0,
    out: Output,
    context: typer.Context,  # the command, whose flags a library note's parameters are shown as
) -> None:
    """Fit a post-hoc Laplace approximation (diag, KFAC, full, low-rank, EKFAC, KFAC+diag) and save the curvature."""
    conversion = images.image_conversion()
    if layers is not None:
        if subset != "all" and subset != layers:
            raise UserError(f"--layers {layers} and --subset {subset} disagree; pass only one of them")
        subset = layers
    split_name, split_asked = o.split_choice(split, "train")
    dev = resolve_device(device.value)
    options = FitOptions(
        method=method.value, fisher_type=fisher.value, mc_samples=mc_samples, subset=subset,
        batch_size=batch_size, dtype=resolve_dtype(dtype.value), device=dev, seed=seed,
        max_memory=parse_size(max_memory) if max_memory is not None else None, rank=rank,
        include_frozen=include_frozen, epochs=epochs, lr=lr,
    )
    fit_data = FitData(
        spec=data, split=split_name, split_required_by=split_asked, limit=limit, root=files.data_root,
        download=files.download, normalize=normalize, conversion=conversion,
        input_shape=parse_input_shape(input_shape) if input_shape is not None else None,
    )
    loading = CheckpointLoading(**source.load_options(), task=task.value if task else None, model_output=model_output,
                                trust_remote_code=trust_remote_code)
    ctx = init_from_environment(dev)
    show = not out.silent and ctx.is_main
    summaries: list[dict] = []

    def note(text: str | ParameterText) -> None:
        shown = render_for_command(text, context.command) if isinstance(text, ParameterText) else text
        log(f"note: {shown}", quiet=out.quiet)

    def announce(start: FitStart) -> None:
        # Before a fit that takes real memory (or at a terminal), say what it will take: a user can stop it.
        # What the fit adds decides, not the process's total: a long-lived Python process (a notebook, a test
        # run) would otherwise announce even the smallest fit.
        if start.memory.added >= ANNOUNCE_PEAK or sys.stderr.isatty():
            log(f"{method.value} fit: {describe(start.memory)}", quiet=not show)
        for text in coverage_notes(start.loaded.module, start.options):
            note(text)
        plain = needs_plain_kernels(start.loaded.module)
        if plain:
            log(f"note: {', '.join(plain)} run on plain (non-fused) kernels during the fit so that per-example "
                "gradients exist: same outputs, slower", quiet=out.silent)

    def summarise(fitted: FittedCheckpoint) -> None:
        summaries.append(fit_summary(fitted.result, fitted.output, fitted.conversion))
        if not out.json_output:  # --quiet silences progress and logs, not the result (as in every command)
            print_fit_summary(summaries[-1])

    try:
        fit_checkpoints(
            checkpoints, output, options, data=fit_data, loading=loading, ctx=ctx,
            prior=PriorSettings(prior_precision=prior_precision, prior_mode=prior_mode.value, n_data=n_data),
            reporting=FitReporting(progress=lambda total, what: progress_bar(total, what, quiet=not show), note=note,
                                   on_start=announce, on_fitted=summarise),
        )
        if ctx.is_main and out.json_output:  # one document: the fit's, or a list with one per checkpoint
            print_json(summaries[0] if len(summaries) == 1 else summaries)
    finally:
        shutdown()


def register(app: typer.Typer) -> None:
    app.command("fit")(fit)

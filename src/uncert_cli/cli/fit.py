"""``uncert fit``: fit a Laplace approximation and save its factors to HDF5."""

from __future__ import annotations

import sys
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.checkpoint import LoadedModel
from uncert_cli.checkpoint.pickled import record_pickled_arch
from uncert_cli.cli import options as o
from uncert_cli.cli.flags import render_for_command
from uncert_cli.cli.option_groups import CheckpointSource, Conversion, DataFiles, Output, with_groups
from uncert_cli.core.atomic import check_free_space, check_output_path, make_output_directory
from uncert_cli.core.device import resolve_device, resolve_dtype
from uncert_cli.core.distributed import init_from_environment, shutdown
from uncert_cli.core.errors import UserError
from uncert_cli.core.memory import parse_size
from uncert_cli.core.vocabulary import FisherType, Method, PriorMode, Task
from uncert_cli.curvature.methods import METHODS as CURVATURE_METHODS
from uncert_cli.curvature.plain_kernels import needs_plain_kernels
from uncert_cli.render.console import log, print_json, progress_bar
from uncert_cli.render.fit import fit_summary, log_coverage_notes, print_fit_summary
from uncert_cli.storage.factor_file import PriorSettings
from uncert_cli.workflows.ensemble import check_same_network, network_signature
from uncert_cli.workflows.fit import DEFAULT_EPOCHS, FitOptions, check_memory, expected_file_bytes, fit_to_file
from uncert_cli.workflows.fit_memory import describe
from uncert_cli.workflows.inputs import (
    load_checkpoint_model,
    load_model_data,
    parse_input_shape,
    recorded_conversion,
    with_conversion,
    with_normalization,
)

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
    targets = fit_targets(checkpoints, output)
    conversion = images.image_conversion()
    if layers is not None:
        if subset != "all" and subset != layers:
            raise UserError(f"--layers {layers} and --subset {subset} disagree; pass only one of them")
        subset = layers
    dev = resolve_device(device.value)
    ctx = init_from_environment(dev)
    try:
        def load(path: Path) -> LoadedModel:
            return load_checkpoint_model(
                path, **source.load_options(), task=task.value if task else None, model_output=model_output,
                trust_remote_code=trust_remote_code,
            )

        if len(checkpoints) > 1:  # every checkpoint is read and compared before the first fit starts
            check_same_network([(str(c), network_signature(load(c))) for c in checkpoints], "fitting several checkpoints")
            make_output_directory(targets[0][1].parent, "-o")
            for _, path in targets:
                check_output_path(path)
        summaries: list[dict] = []
        for checkpoint, output in targets:
            loaded = load(checkpoint)
            for note in loaded.notes if ctx.is_main else []:
                log(f"note: {note}", quiet=out.quiet)
            split_name, split_asked = o.split_choice(split, "train")
            loaded, pickle_note = record_pickled_arch(loaded)  # refuses before any data is read
            if pickle_note and ctx.is_main:
                log(f"note: {render_for_command(pickle_note, context.command)}", quiet=out.quiet)
            if input_shape is not None:
                loaded.meta = replace(loaded.meta, input_shape=parse_input_shape(input_shape))
            dataset = load_model_data(
                loaded.meta, data, split=split_name, limit=limit, root=files.data_root, download=files.download,
                normalize=normalize,
                conversion=conversion, model=loaded.module, split_required_by=split_asked,
                offers=("channels", "resize", "input_shape"),
            )
            if loaded.meta.input_shape is None:  # inferred from the data: later commands shape their data alike
                loaded.meta = replace(loaded.meta, input_shape=dataset.sample_shape)
            # Later commands read both from the file and prepare their data as the fit did.
            loaded.meta = with_normalization(loaded.meta, normalize)
            loaded.meta = with_conversion(loaded.meta, recorded_conversion(loaded.meta, conversion))
            opts = FitOptions(
                method=method.value, fisher_type=fisher.value, mc_samples=mc_samples, subset=subset,
                batch_size=batch_size, dtype=resolve_dtype(dtype.value), device=dev, seed=seed,
                max_memory=parse_size(max_memory) if max_memory is not None else None, rank=rank,
                include_frozen=include_frozen, epochs=epochs, lr=lr,
            )
            memory = check_memory(loaded.module, opts, dataset)  # refuse before any work is shown or done
            if ctx.is_main:  # and before the minutes of fitting: will the file fit on the disk?
                check_free_space(output, expected_file_bytes(loaded.module, opts), lower_bound=True)
            show = not out.silent and ctx.is_main
            # Before a fit that takes real memory (or at a terminal), say what it will take: a user can stop it.
            if memory.fit_peak >= ANNOUNCE_PEAK or sys.stderr.isatty():
                log(f"{method.value} fit: {describe(memory)}", quiet=not show)
            total = len(dataset) if ctx.world_size == 1 else len(dataset) // ctx.world_size
            total *= CURVATURE_METHODS[method].data_passes(opts.epochs or DEFAULT_EPOCHS)
            prior = PriorSettings(prior_precision=prior_precision, prior_mode=prior_mode.value, n_data=n_data)
            if ctx.is_main:
                log_coverage_notes(loaded.module, opts, quiet=out.quiet)
                plain = needs_plain_kernels(loaded.module)
                if plain:
                    log(f"note: {', '.join(plain)} run on plain (non-fused) kernels during the fit so that per-example "
                        "gradients exist: same outputs, slower", quiet=out.silent)
            with progress_bar(total, f"fit {method.value}", quiet=not show) as advance:
                result = fit_to_file(
                    loaded, dataset, opts, output, prior=prior, split=dataset.split, ctx=ctx, on_batch=advance, memory=memory,
                    on_status=advance.describe,
                )
            if ctx.is_main:
                summaries.append(fit_summary(result, output, recorded_conversion(loaded.meta)))
                if not out.json_output:  # --quiet silences progress and logs, not the result (as in every command)
                    print_fit_summary(summaries[-1])
            ctx.barrier()
        if ctx.is_main and out.json_output:  # one document: the fit's, or a list with one per checkpoint
            print_json(summaries[0] if len(summaries) == 1 else summaries)
    finally:
        shutdown()


def fit_targets(checkpoints: list[Path], output: Path | None) -> list[tuple[Path, Path]]:
    """``(checkpoint, factor file)`` pairs: ``-o`` itself for one checkpoint, ``<folder>/<name>.h5`` for several
    (the folder is made once the checkpoints are known to share an architecture).
    """
    if len(checkpoints) == 1:
        output = Path("factors.h5") if output is None else output
        if output.suffix.lower() not in (".h5", ".hdf5"):
            raise UserError(f"the factor file is HDF5; name it *.h5 (got '{output.name}')")
        check_output_path(output)
        return [(checkpoints[0], output)]
    if output is None or output.suffix.lower() in (".h5", ".hdf5"):
        raise UserError(f"{len(checkpoints)} checkpoints give {len(checkpoints)} factor files: name a folder for them "
                        "with -o (e.g. -o factors/)")
    names = [c.name.removesuffix(c.suffix) if c.suffix else c.name for c in checkpoints]
    if len(set(names)) != len(names):
        raise UserError("two checkpoints have the same file name, so their factor files would too; rename one")
    if output.exists() and not output.is_dir():
        raise UserError(f"-o {output} is a file; with several checkpoints name a folder")
    return [(c, output / f"{name}.h5") for c, name in zip(checkpoints, names)]


def register(app: typer.Typer) -> None:
    app.command("fit")(fit)

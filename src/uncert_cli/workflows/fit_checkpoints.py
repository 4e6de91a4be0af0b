"""``uncert fit`` in one call: one checkpoint, or several of one architecture, each into its factor file.

:func:`~uncert_cli.workflows.fit.fit_to_file` fits a model already loaded on data already adapted to it.
This module adds what the command does around it, so that a Python caller gets the command's behaviour:
the factor files' names, reading each checkpoint (once), what the factor file records for later commands
(the class of a pickled model, the input shape, the normalisation and the image conversion), and the
memory and free-space checks before any work. Nothing here prints: notes and progress go through the
callbacks the caller passes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from uncert_cli.checkpoint import LoadedModel
from uncert_cli.checkpoint.pickled import record_pickled_arch
from uncert_cli.core.atomic import check_free_space, check_output_path, make_output_directory
from uncert_cli.core.distributed import DistributedContext
from uncert_cli.core.errors import ParameterText, UserError
from uncert_cli.core.progress import Progress, no_progress
from uncert_cli.core.vocabulary import Method
from uncert_cli.curvature.methods import METHODS as CURVATURE_METHODS
from uncert_cli.data import ArrayDataset, ImageConversion
from uncert_cli.storage.factor_file import PriorSettings, check_storable_names
from uncert_cli.workflows.ensemble import check_same_network, network_signature
from uncert_cli.workflows.fit import DEFAULT_EPOCHS, FitOptions, FitResult, check_memory, expected_file_bytes, fit_to_file
from uncert_cli.workflows.fit_memory import MemoryEstimate
from uncert_cli.workflows.inputs import (
    load_checkpoint_model,
    load_model_data,
    recorded_conversion,
    with_conversion,
    with_normalization,
)

# Checkpoints read to compare their networks are kept for their fits while their weights together stay
# below this; a later one beyond it is read again when its turn comes, so that a set of large networks
# is never held in memory all at once.
KEEP_LOADED_BYTES = 1 << 30


@dataclass
class CheckpointLoading:
    """How every checkpoint is read: :func:`~uncert_cli.workflows.inputs.load_checkpoint_model`'s keyword arguments."""

    arch: str | None = None
    arch_kwargs: list[str] | None = None  # KEY=VALUE items
    trust_pickle: bool = False
    state_key: str | None = None
    strip_prefix: str | None = None
    task: str | None = None  # overrides the checkpoint's
    model_output: str | None = None  # the entry of a dict/tuple result, by name or index
    trust_remote_code: bool = False

    def load(self, path: str | Path) -> LoadedModel:
        """The checkpoint at ``path`` as a module and its metadata."""
        return load_checkpoint_model(path, **dataclasses.asdict(self))


@dataclass
class FitData:
    """The data each checkpoint is fitted on (:func:`~uncert_cli.workflows.inputs.load_model_data`'s arguments)."""

    spec: str | None = None  # default: the dataset the checkpoint names
    split: str = "train"
    # who asked for the split (data.file_splits.split_was_given): a data file without splits is then refused
    split_required_by: str | None = None
    limit: int | None = None
    root: str | Path | None = None
    download: bool = False
    normalize: str | None = None  # MEAN,STD: overrides the checkpoint's and is recorded
    conversion: ImageConversion | None = None  # fields given are applied and recorded
    input_shape: tuple[int, ...] | None = None  # one example's shape, for a checkpoint that records none


@dataclass
class FittedCheckpoint:
    """One checkpoint's fit: where it came from, the factor file written and what the fit found."""

    checkpoint: Path
    output: Path
    result: FitResult
    conversion: ImageConversion  # the image conversion the factor file records


@dataclass
class FitStart:
    """What a fit is about to do, told to ``on_start`` after every check passed and before the first batch."""

    loaded: LoadedModel  # the model, its metadata recording what later commands need
    data: ArrayDataset
    options: FitOptions
    memory: MemoryEstimate  # the predicted peak


def _silent(_: object) -> None:
    pass


@dataclass
class FitReporting:
    """What the caller hears of the fits; every part is silent by default."""

    # one bar per fit over every example pass; an ``advance`` with ``describe(text)`` shows vi's status line
    progress: Progress = no_progress
    # the loader's notes and the class recorded for a pickled model (a ParameterText naming ``arch``)
    note: Callable[[str | ParameterText], None] = _silent
    on_start: Callable[[FitStart], None] = _silent  # each fit once every check passed (main process)
    on_fitted: Callable[[FittedCheckpoint], None] = _silent  # each fit once its file is written (main process)


def check_checkpoints_exist(checkpoints: Sequence[str | Path], advice: str) -> None:
    """Refuse checkpoints that do not exist, all named in one message.

    A missing ``key=value`` is a constructor argument that became a checkpoint: ``--arch-kwargs a=1 b=2``
    gives ``--arch-kwargs`` only ``a=1``, and ``b=2`` lands among the positional checkpoints.

    Raises:
        UserError: a checkpoint does not exist; ``advice`` says what to pass instead, or, for a
            ``key=value`` word, how to pass several constructor arguments.
    """
    missing = [str(c) for c in checkpoints if not Path(c).exists()]
    if not missing:
        return
    keywords = [word for word in missing if "=" in word]
    if keywords:
        raise UserError(f"no such checkpoint: {', '.join(missing)}; {{arch_kwargs}} takes one key=value each: "
                        f"repeat it for each argument ({' '.join('{arch_kwargs} ' + k for k in keywords)})",
                        mentions=("arch_kwargs",))
    raise UserError(f"no such checkpoint: {', '.join(missing)}; {advice}")


def fit_targets(checkpoints: Sequence[str | Path], output: str | Path | None) -> list[tuple[Path, Path]]:
    """``(checkpoint, factor file)`` pairs: ``output`` itself for one checkpoint (default ``factors.h5``), the
    folder ``output``'s ``<checkpoint name>.h5`` for several (made once the checkpoints are known to share an
    architecture).

    Returns:
        The pairs, in the order of ``checkpoints``.

    Raises:
        UserError: the output is not an HDF5 name for one checkpoint, or not a folder for several; two
            checkpoints share a file name.
    """
    paths = [Path(c) for c in checkpoints]
    if not paths:
        raise UserError("{param} is empty; give at least one checkpoint", param="checkpoints")
    if len(paths) > 1:  # before the folder's name is asked for: a stray word is no second checkpoint
        check_checkpoints_exist(paths, "pass checkpoints of one architecture")
    if len(paths) == 1:
        single = Path("factors.h5") if output is None else Path(output)
        if single.suffix.lower() not in (".h5", ".hdf5"):
            raise UserError(f"the factor file is HDF5; name it *.h5 (got '{single.name}')")
        check_output_path(single)
        return [(paths[0], single)]
    if output is None or Path(output).suffix.lower() in (".h5", ".hdf5"):
        raise UserError(f"{len(paths)} checkpoints give {len(paths)} factor files: name a folder for them "
                        "with {param} (e.g. {param} factors/)", param="output")
    folder = Path(output)
    names = [c.name.removesuffix(c.suffix) if c.suffix else c.name for c in paths]
    if len(set(names)) != len(names):
        raise UserError("two checkpoints have the same file name, so their factor files would too; rename one")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{{param}} {folder} is a file; with several checkpoints name a folder", param="output")
    return [(c, folder / f"{name}.h5") for c, name in zip(paths, names)]


def fit_checkpoint(loaded: LoadedModel, output: str | Path, options: FitOptions, *, data: FitData | None = None,
                   prior: PriorSettings | None = None, ctx: DistributedContext | None = None,
                   reporting: FitReporting | None = None) -> FittedCheckpoint:
    """Fit one loaded checkpoint as ``uncert fit`` does and write its factor file.

    In order: the class of a pickled model is recorded (or the model refused) before any data is read;
    the data is loaded and adapted to the model; the input shape (``data.input_shape``, else the data's),
    the normalisation and the image conversion are recorded in the model's metadata, so later commands
    prepare their data as the fit did; the predicted peak memory and the free space for the file are
    checked; then :func:`~uncert_cli.workflows.fit.fit_to_file` fits and writes.

    Args:
        loaded: the checkpoint's model and metadata (its metadata is updated as described).
        output: the factor file to write.
        options: how to fit.
        data: the data to fit on (default: the checkpoint's dataset, train split).
        prior: the N, τ and noise the file holds as defaults.
        ctx: the distributed context (default: one process); notes and checks of the file are the main
            process's.
        reporting: the notes, the start and the progress bar (default: silent).

    Returns:
        The fit, with the file written and the image conversion it records. A model, data and options that
        do not go together, a fit that would not fit in memory and a file that would not fit on the disk are
        refused (``UserError``) before any fitting.
    """
    data = data or FitData()
    ctx = ctx or DistributedContext()
    reporting = reporting or FitReporting()
    output = Path(output)
    for text in loaded.notes if ctx.is_main else []:
        reporting.note(text)
    loaded, pickle_note = record_pickled_arch(loaded)  # refuses before any data is read
    check_storable_names(loaded.module.state_dict())  # and names the file could not hold
    if pickle_note and ctx.is_main:
        reporting.note(pickle_note)
    if data.input_shape is not None:
        loaded.meta = dataclasses.replace(loaded.meta, input_shape=data.input_shape)
    dataset = load_model_data(
        loaded.meta, data.spec, split=data.split, limit=data.limit, root=data.root, download=data.download,
        normalize=data.normalize, conversion=data.conversion, model=loaded.module,
        split_required_by=data.split_required_by, offers=("channels", "resize", "input_shape"),
    )
    if loaded.meta.input_shape is None:  # inferred from the data: later commands shape their data alike
        loaded.meta = dataclasses.replace(loaded.meta, input_shape=dataset.sample_shape)
    # Later commands read both from the file and prepare their data as the fit did.
    loaded.meta = with_normalization(loaded.meta, data.normalize)
    loaded.meta = with_conversion(loaded.meta, recorded_conversion(loaded.meta, data.conversion))
    memory = check_memory(loaded.module, options, dataset)  # refuse before any work is shown or done
    if ctx.is_main:  # and before the minutes of fitting: will the file fit on the disk?
        check_free_space(output, expected_file_bytes(loaded.module, options), lower_bound=True)
        reporting.on_start(FitStart(loaded, dataset, options, memory))
    total = len(dataset) if ctx.world_size == 1 else len(dataset) // ctx.world_size
    total *= CURVATURE_METHODS[options.method].data_passes(options.epochs or DEFAULT_EPOCHS)
    with reporting.progress(total, f"fit {Method(options.method).value}") as advance:
        result = fit_to_file(
            loaded, dataset, options, output, prior=prior, split=dataset.split, ctx=ctx, on_batch=advance,
            memory=memory, on_status=getattr(advance, "describe", None),
        )
    return FittedCheckpoint(Path(loaded.source), output, result, recorded_conversion(loaded.meta))


def same_network(first: LoadedModel, other: LoadedModel, first_path: Path, other_path: Path) -> None:
    """Refuse ``other`` unless it holds ``first``'s network (class, keyword arguments and weight shapes): a
    ``UserError`` naming ``other_path`` and how its network differs.
    """
    check_same_network([(str(first_path), network_signature(first)), (str(other_path), network_signature(other))],
                       "fitting several checkpoints")


def read_and_compare(
    checkpoints: Sequence[Path], loading: CheckpointLoading,
    check: Callable[[LoadedModel, LoadedModel, Path, Path], None] = same_network,
) -> list[LoadedModel | None]:
    """Read every checkpoint once and ``check(first, other, first_path, other_path)`` each against the first
    (default :func:`same_network`), before anything is fitted or written.

    Returns:
        Per checkpoint, its loaded model to fit, or None where keeping it would have held more than
        :data:`KEEP_LOADED_BYTES` of weights (the first one is always kept: it is fitted next). What
        ``check`` raises (a ``UserError`` naming the checkpoint) stops the reading.
    """
    kept: list[LoadedModel | None] = []
    budget = KEEP_LOADED_BYTES
    first: LoadedModel | None = None
    for path in checkpoints:
        loaded = loading.load(path)
        if first is None:
            first = loaded
        else:
            check(first, loaded, checkpoints[0], path)
        size = sum(t.numel() * t.element_size() for t in loaded.module.state_dict().values())
        if loaded is first or size <= budget:
            budget -= size
            kept.append(loaded)
        else:
            kept.append(None)
    return kept


def fit_checkpoints(checkpoints: Sequence[str | Path], output: str | Path | None, options: FitOptions, *,
                    data: FitData | None = None, loading: CheckpointLoading | None = None,
                    prior: PriorSettings | None = None, ctx: DistributedContext | None = None,
                    reporting: FitReporting | None = None) -> list[FittedCheckpoint]:
    """``uncert fit CHECKPOINT...``: each checkpoint through :func:`fit_checkpoint` into its factor file.

    Several checkpoints (an ensemble of one architecture) are each read once: all are read and compared
    before the first fit starts (:func:`read_and_compare`), the folder ``output`` is made and every factor
    file's name is checked, and then they are fitted one after the other.

    Args:
        checkpoints: checkpoint files or model folders.
        output: the factor file for one checkpoint (default ``factors.h5``); a folder for several, which
            gets ``<checkpoint name>.h5`` for each (:func:`fit_targets`).
        options: how to fit, the same for every checkpoint.
        data: the data (default: each checkpoint's own dataset, train split).
        loading: how to read the checkpoints.
        prior: the N, τ and noise every file holds as defaults.
        ctx: the distributed context (default: one process); the processes meet after every fit.
        reporting: the notes, each fit's start and end, and the progress bars (default: silent).

    Returns:
        The fits, in the order of ``checkpoints``. Bad outputs, checkpoints of other networks and fits
        :func:`fit_checkpoint` refuses are ``UserError`` s, the first two before anything is fitted.
    """
    loading = loading or CheckpointLoading()
    ctx = ctx or DistributedContext()
    reporting = reporting or FitReporting()
    targets = fit_targets(checkpoints, output)
    preloaded: list[LoadedModel | None] = [None]
    if len(targets) > 1:
        preloaded = read_and_compare([c for c, _ in targets], loading)
        make_output_directory(targets[0][1].parent, param="output")
        for _, path in targets:
            check_output_path(path)
    fitted: list[FittedCheckpoint] = []
    for (checkpoint, path), loaded in zip(targets, preloaded):
        one = fit_checkpoint(loaded or loading.load(checkpoint), path, options, data=data, prior=prior, ctx=ctx,
                             reporting=reporting)
        one.checkpoint = checkpoint
        preloaded[len(fitted)] = None  # fitted: let it go before the next one
        fitted.append(one)
        if ctx.is_main:
            reporting.on_fitted(one)
        ctx.barrier()
    return fitted

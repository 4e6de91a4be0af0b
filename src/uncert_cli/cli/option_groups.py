"""Groups of options that several commands take together, declared once as dataclasses.

Typer reads a command's options from its signature, one parameter per option. A group is a dataclass
whose fields are annotated like command parameters (``Annotated[type, typer.Option(...)]``, with
defaults); :func:`with_groups` puts the fields into the command's signature where the group's
parameter stands, and builds the dataclass from the parsed values before the command runs. So
``--json``, ``--quiet`` and ``--debug`` (:class:`Output`), the image conversion and the held-out
tuning options are each written once, and every command that takes them spells them the same.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from uncert_cli.cli import options as o
from uncert_cli.cli.flags import render_for_command
from uncert_cli.cli.html_output import Html, write_figures_and_page
from uncert_cli.core.device import resolve_device
from uncert_cli.core.errors import ParameterText
from uncert_cli.data import ImageConversion
from uncert_cli.posterior.widest import DEFAULT_NLL_TOLERANCE
from uncert_cli.render.console import log, print_json, progress_bar
from uncert_cli.render.html import check_html_path
from uncert_cli.storage.factor_file import read_provenance
from uncert_cli.workflows.evaluate import AnalysisSettings

Command = TypeVar("Command", bound=Callable[..., Any])


def _for_command(text: str | ParameterText, command: Any | None) -> str:
    """A workflow's warning as shown by the running ``command``: its parameters named by their flags."""
    return render_for_command(text, command) if isinstance(text, ParameterText) else text


@dataclass
class Output:
    """``--json``, ``--quiet`` and ``--debug``: every command has all three."""

    json_output: o.Json = False
    quiet: o.Quiet = False
    debug: o.Debug = False

    @property
    def silent(self) -> bool:
        """No progress and no log lines on stderr: ``--quiet``, or ``--json`` (stdout holds the document)."""
        return self.quiet or self.json_output

    def reporters(self, command: Any | None = None) -> dict[str, Callable[..., Any]]:
        """A workflow's ``progress``, ``announce`` and ``warn``: bars and notes on stderr unless :attr:`silent`;
        warnings unless ``--quiet`` (with ``--json`` too: they go to stderr), their parameters named as
        ``command``'s flags.
        """
        return {
            "progress": lambda total, what: progress_bar(total, what, quiet=self.silent),
            "announce": lambda text: log(text, quiet=self.silent),
            "warn": lambda text: log(_for_command(text, command), quiet=self.quiet),
        }

    def show(self, doc: dict[str, Any], print_tables: Callable[[dict[str, Any]], None]) -> None:
        """The command's result on stdout: ``doc`` as JSON with ``--json``, else drawn by ``print_tables``."""
        if self.json_output:
            print_json(doc)
        else:
            print_tables(doc)


@dataclass
class Conversion:
    """``--grayscale``, ``--channels`` and ``--resize``: how images are converted before the model sees them."""

    grayscale: o.Grayscale = False
    channels: o.Channels = None
    resize: o.Resize = None

    def image_conversion(self) -> ImageConversion:
        """The conversion the three options ask for (fields left None keep what ``fit`` recorded)."""
        return o.image_conversion(self.grayscale, self.channels, self.resize)


@dataclass
class DataFiles:
    """``--data-root`` and ``--download``: where named datasets are looked for, and whether to fetch them."""

    data_root: o.DataRoot = None
    download: o.Download = False


@dataclass
class FactorModel:
    """``--arch`` and ``--arch-kwargs``: the class to run a factor file's network with (the user's consent)."""

    arch: o.FactorArch = None
    arch_kwargs: o.FactorArchKwargs = None


@dataclass
class CheckpointSource:
    """How a checkpoint file is read: the class to build, its arguments, and where the weights sit in the file."""

    arch: o.Arch = None
    arch_kwargs: o.ArchKwargs = None
    trust_pickle: o.TrustPickle = False
    state_key: o.StateKey = None
    strip_prefix: o.StripPrefix = None

    def load_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~uncert_cli.workflows.inputs.load_checkpoint_model` they set."""
        return dataclasses.asdict(self)


@dataclass
class Evaluation:
    """What ``ood`` and ``attack`` share besides the held-out tuning: seed, outputs, data files, the class, device."""

    seed: o.Seed = 0
    png: o.Png = None
    html: Html = None
    data_root: o.DataRoot = None
    download: o.Download = False
    normalize: o.Normalize = None
    arch: o.FactorArch = None
    arch_kwargs: o.FactorArchKwargs = None
    device: o.Device = o.DeviceChoice.auto


@dataclass
class HeldOut:
    """The hyperparameters of ``ood`` and ``attack``: the file's, given, or tuned on held-out examples."""

    prior_precision: o.PriorPrecision = None
    n_data: o.NData = None
    prior_mode: o.AnalysisPriorMode = None
    tune: o.Tune = None
    objective: o.HeldOutObjectiveOption = o.HeldOutObjective.widest
    nll_tolerance: o.NllTolerance = DEFAULT_NLL_TOLERANCE
    val_from: o.ValFrom = None
    val_size: o.ValSize = 1000
    tune_samples: o.TuneSamples = 20


def analysis_settings(held_out: HeldOut, conversion: Conversion, evaluation: Evaluation, **settings: Any) -> AnalysisSettings:
    """The settings ``ood`` and ``attack`` pass to their workflow: the groups' values and ``settings``
    (``data``, ``limit``, ``batch_size``). A bad ``--html`` path is refused here, before any work.
    """
    if evaluation.html is not None:
        check_html_path(evaluation.html)
    image = conversion.image_conversion()
    return AnalysisSettings(
        prior_precision=held_out.prior_precision, n_data=held_out.n_data, prior_mode=held_out.prior_mode,
        tune=held_out.tune, objective=held_out.objective.value, nll_tolerance=held_out.nll_tolerance,
        val_from=held_out.val_from, val_size=held_out.val_size, tune_samples=held_out.tune_samples,
        seed=evaluation.seed, root=evaluation.data_root, download=evaluation.download, normalize=evaluation.normalize,
        arch=evaluation.arch, arch_kwargs=evaluation.arch_kwargs, device=resolve_device(evaluation.device.value).type,
        grayscale=conversion.grayscale, channels=image.channels, resize=image.size, **settings,
    )


def deliver(
    doc: dict[str, Any],
    report: Any,
    factors: Path,
    evaluation: Evaluation,
    out: Output,
    *,
    page: Callable[[dict[str, Any], dict[str, Any]], Any],
    plots: str,
    show: Callable[[dict[str, Any]], None],
) -> None:
    """The end of ``ood`` and ``attack``: figures and page as asked for, then ``doc`` as JSON or shown by ``show``.

    Args:
        doc: the command's JSON document.
        report: the workflow's result, which the figures draw.
        factors: the factor file, whose provenance the page shows.
        evaluation: the ``--png`` and ``--html`` wanted.
        out: ``--json``/``--quiet`` (``--quiet`` silences progress and logs, not the result).
        page: builds the HTML page from ``doc`` and the file's provenance.
        plots: the function of :mod:`uncert_cli.render.plots_ood` that draws them (matplotlib is imported
            only when figures are asked for).
        show: prints ``doc`` as tables.
    """
    def draw(folder: Path) -> list[Path]:
        from uncert_cli.render import plots_ood

        return getattr(plots_ood, plots)(report, folder)

    write_figures_and_page(doc, evaluation.png, evaluation.html, draw, lambda d: page(d, read_provenance(factors)), out.silent)
    out.show(doc, show)


def with_groups(**groups: type) -> Callable[[Command], Command]:
    """Expand the parameters named in ``groups`` into their dataclass's fields, as options of the command.

    Args:
        groups: parameter name -> the dataclass that parameter receives.

    Returns:
        A decorator: the command as Typer sees it has the fields in place of each group parameter, and
        is called with the group objects.
    """

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        parameters: list[inspect.Parameter] = []
        for parameter in signature.parameters.values():
            group = groups.get(parameter.name)
            if group is None:
                parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
                continue
            hints = get_type_hints(group, include_extras=True)
            parameters += [
                inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
                for f in dataclasses.fields(group)
            ]

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            for name, group in groups.items():
                values[name] = group(**{f.name: values.pop(f.name) for f in dataclasses.fields(group)})
            return command(**values)

        expanded = signature.replace(parameters=parameters)
        run.__signature__ = expanded  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": signature.return_annotation}
        return run  # type: ignore[return-value]

    return decorate

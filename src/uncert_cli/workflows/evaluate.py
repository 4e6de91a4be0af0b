"""``uncert ood`` and ``uncert attack`` as library calls: factor file + data specs → reports.

Both commands share the same preparation: open the posterior, pick the in-distribution test data
(the fit's dataset by default), hold out a validation split when the prior is tuned, and give each
Laplace predictive its own tuned (N, τ). Numbers come from :mod:`uncert_cli.analysis`; nothing here
prints (progress and log lines go through the callbacks the caller passes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from uncert_cli.analysis.attack import (
    ATTACK_KINDS,
    ATTACK_SAMPLES,
    AttackedPredictive,
    AttackReport,
    targeted_attack,
    untargeted_attack,
)
from uncert_cli.analysis.ood import (
    Hyperparameters,
    OODReport,
    current_hyperparameters,
    evaluate_predictive,
    held_out_check,
    split_validation,
    subset_rows,
    tune_on_validation,
)
from uncert_cli.checkpoint import LoadedModel, ModelMeta
from uncert_cli.checkpoint.hf_folder import tokenizer_folder
from uncert_cli.core.errors import ParameterText, UserError
from uncert_cli.core.progress import Progress, no_progress
from uncert_cli.core.vocabulary import PriorMode
from uncert_cli.curvature.plain_kernels import needs_plain_kernels
from uncert_cli.data import ArrayDataset, ImageConversion, adapt_to_model, load_dataset, parse_normalize
from uncert_cli.data.dataset import is_token_ids
from uncert_cli.posterior import LaplacePosterior, predictives
from uncert_cli.posterior.predictives import DEFAULT_LAPLACE, FALLBACK_LAPLACE  # noqa: F401 - older import path
from uncert_cli.posterior.widest import DEFAULT_NLL_TOLERANCE
from uncert_cli.storage.opening import OpenedFactors, open_posterior
from uncert_cli.workflows.forward_check import check_model_runs
from uncert_cli.workflows.inputs import (
    convert_as_recorded,
    data_within_memory,
    load_model_data,
    recorded_conversion,
)
from uncert_cli.workflows.validation import (
    HONESTY_RATIO,
    ValidationChoice,
    grid_edge_warning,
    honesty_warning,
    load_held_out,
    resolve_val_from,
)

PREDICTIVES = predictives.kinds()


def default_predictives(posterior: LaplacePosterior, allowed: Sequence[str] = PREDICTIVES) -> list[str]:
    """``map`` and the default Laplace predictive for this posterior (``predictives.default_laplace``)."""
    return ["map", str(predictives.default_laplace(posterior, allowed))]


def parse_predictives(text: str | None, allowed: tuple[str, ...] = PREDICTIVES) -> list[str] | None:
    """``"map,glm"`` → ``["map", "glm"]``; None stays None: the default is chosen once the posterior
    is open (:func:`default_predictives`).

    Returns:
        The predictive names, each once, in the given order; None for the default.

    Raises:
        UserError: the list is empty or names an unknown predictive.
    """
    if text is None:
        return None
    kinds = [k.strip().lower() for k in text.split(",") if k.strip()]
    if not kinds:
        raise UserError("{param} is empty; pass e.g. {param} map,glm", param="predictive")
    unknown = [k for k in kinds if k not in allowed]
    if unknown:
        raise UserError(f"unknown predictive {', '.join(map(repr, unknown))}; use one of {', '.join(allowed)}")
    return list(dict.fromkeys(kinds))


@dataclass
class AnalysisSettings:
    """What both commands need to know to prepare their posteriors and data."""

    data: str | None = None  # in-distribution spec (default: the fit's dataset), test split
    limit: int | None = None  # evaluation examples (the validation split comes on top)
    prior_precision: float | None = None
    n_data: float | None = None
    prior_mode: str | None = None
    tune: bool | None = None  # None: tune unless the prior was fixed here or by `uncert tune`
    val_size: int = 1000
    tune_samples: int = 20
    batch_size: int = 500
    seed: int = 0
    root: Path | None = None
    download: bool = False
    normalize: str | None = None
    device: str = "cpu"
    # Image conversion of every set read (in-distribution, held-out, OOD); a field left None is the fit's.
    resize: tuple[int, int] | None = None  # (H, W)
    grayscale: bool = False  # RGB → one luma channel (channels=1)
    channels: int | None = None  # 1 or 3
    objective: str = "widest"  # tuning objective of each Laplace predictive: widest or val-nll
    nll_tolerance: float = DEFAULT_NLL_TOLERANCE  # widest: relative held-out NLL a wider posterior may cost
    val_from: str | None = None  # held-out examples: val, test or train (None: val where the set has one, else test)
    arch: str | None = None  # the network's class when the file was fitted on the user's own
    arch_kwargs: list[str] | None = None  # KEY=VALUE items, as typed

    @property
    def conversion(self) -> ImageConversion:
        """The conversion given here; :func:`~uncert_cli.workflows.inputs.recorded_conversion` fills the rest from the fit."""
        return ImageConversion(channels=1 if self.grayscale else self.channels, size=self.resize)


@dataclass
class PreparedAnalysis:
    """What ``ood`` and ``attack`` work on: the opened file, the data and each predictive's posterior."""
    opened: OpenedFactors
    validation: ArrayDataset | None
    evaluation: ArrayDataset
    posteriors: dict[str, tuple[LaplacePosterior, Hyperparameters | None]]
    kinds: list[str]
    held_out: ValidationChoice | None = None  # where the tuning / checking examples came from

    @property
    def meta(self) -> ModelMeta:
        """The model's metadata (input shape, task, normalisation)."""
        return self.opened.model.meta


def prepare_analysis(
    factors: str | Path,
    kinds: Sequence[str] | None,
    settings: AnalysisSettings,
    *,
    allowed: Sequence[str] = PREDICTIVES,
    announce: Callable[[str], None] = lambda s: None,
    check_model: Callable[[ModelMeta], None] = lambda meta: None,
    continuous_inputs: bool = False,
    warn: Callable[[str | ParameterText], None] = lambda s: None,
    progress: Progress = no_progress,
    before_tuning: Callable[[LoadedModel], None] = lambda loaded: None,
) -> PreparedAnalysis:
    """Open ``factors``, load the in-distribution data and give each predictive its posterior
    (``kinds=None``: :func:`default_predictives` among ``allowed``). ``check_model`` sees the model's
    metadata as soon as the file is open, so option errors come before any data loading or tuning.
    ``continuous_inputs`` refuses token-id data (before any tuning). ``before_tuning`` sees the rebuilt model
    once the in-distribution data has loaded and before any tuning, so other inputs (OOD sets) can be loaded
    and refused before minutes of work.

    Held-out examples (``settings.val_from``, :mod:`uncert_cli.workflows.validation`) tune each Laplace
    predictive; where the hyperparameters come from the file or the command line instead, the same
    examples check them: the held-out NLL against the MAP's, and ``warn`` when it is more than 5% worse.

    Returns:
        The opened file, the validation and evaluation data and each predictive's posterior.

    Raises:
        UserError: bad settings, data or file (each with its own message).
    """
    s = settings
    if s.prior_mode is not None:
        PriorMode.parse(s.prior_mode, "prior_mode")
    opened = open_posterior(
        factors, prior_precision=s.prior_precision, n_data=s.n_data, prior_mode=s.prior_mode, device=s.device,
        flags=("prior_precision", "n_data", "prior_mode"), arch=s.arch, arch_kwargs=s.arch_kwargs,
    )
    check_model(opened.model.meta)
    plain = needs_plain_kernels(opened.model.module)
    if plain:
        announce(f"note: {', '.join(plain)} run on plain (non-fused) kernels for the Laplace predictives: "
                 "same outputs, differentiable by forward-mode AD, slower")
    if opened.posterior.task != "classification":
        raise UserError(f"'{factors}' holds a regression model; ood and attack need a classifier")
    kinds = list(kinds) if kinds is not None else default_predictives(opened.posterior, allowed)
    fixed = s.prior_precision is not None or s.n_data is not None
    tune = s.tune if s.tune is not None else not fixed and opened.factors.tuning is None
    tune = tune and any(predictives.get(k).uses_laplace for k in kinds)
    meta = opened.model.meta
    spec = s.data or opened.factors.fit.get("dataset") or meta.dataset
    laplace = any(predictives.get(k).uses_laplace for k in kinds)
    source = resolve_val_from(spec, s.val_from) if laplace else None
    split_test = tune and source == "test"  # held out of the test split: evaluation starts after them
    total = None if s.limit is None else s.limit + (s.val_size if split_test else 0)
    # Without data the fit's own data is evaluated: a file without a test split would then be the
    # examples the posterior was fitted on, so it must hold a test split.
    required_by = None if s.data else f"evaluating the fit's data '{spec}' (no data set was given) needs its test split"
    data = load_model_data(
        meta, spec, split="test", limit=total, root=s.root, download=s.download, normalize=s.normalize,
        conversion=s.conversion, model=opened.model.module, split_required_by=required_by,
    )
    if continuous_inputs and is_token_ids(data.inputs):
        raise UserError(
            f"'{spec}' holds integer token ids; fast-gradient-sign attacks step along the input gradient and need "
            "continuous inputs, so 'attack' cannot run on this model (ood works on token data)"
        )
    held_out: ValidationChoice | None = None
    validation: ArrayDataset | None = None
    if split_test:
        validation, evaluation = _split(data, s.val_size, s.limit)
        # a file without splits is held out from as a whole: its rows are not "test" examples
        rows = data.split if data.split is not None else "file"
        held_out = ValidationChoice("test", f"{rows}[0:{len(validation)}]", len(validation))
    else:
        evaluation = data
        if source is not None:
            validation, held_out = load_held_out(meta, spec, source, s, model=opened.model.module)
    before_tuning(opened.model)
    posteriors: dict[str, tuple[LaplacePosterior, Hyperparameters | None]] = {}
    for kind in kinds:
        if not predictives.get(kind).uses_laplace:
            posteriors[kind] = (opened.posterior, None)
        elif tune and validation is not None:
            assert held_out is not None  # chosen with the validation examples
            announce(f"tuning N and τ of the {kind} predictive on {len(validation):,} held-out examples "
                     f"({held_out.examples}) by {s.objective} ...")
            tuned, tuned_hp = tune_on_validation(
                opened.posterior, validation, kind, samples=s.tune_samples, batch_size=s.batch_size, seed=s.seed,
                prior_mode=s.prior_mode or "factor", objective=s.objective, nll_tolerance=s.nll_tolerance,
                progress=progress,
            )
            if tuned_hp.at_grid_edge:  # as `uncert tune` warns: the grid may have cut the search short
                warn(grid_edge_warning(tuned_hp.at_grid_edge, kind))
            posteriors[kind] = (tuned, tuned_hp)
        else:
            hp = current_hyperparameters(opened.posterior, "override" if fixed else "file")
            if validation is not None:
                hp = held_out_check(opened.posterior, hp, validation, kind, samples=s.tune_samples,
                                    batch_size=s.batch_size, seed=s.seed)
                assert hp.validation_nll is not None and hp.map_validation_nll is not None  # set by the check
                if hp.validation_nll > HONESTY_RATIO * hp.map_validation_nll:
                    warn(honesty_warning(kind, hp, held_out, str(factors)))
            posteriors[kind] = (opened.posterior, hp)
    return PreparedAnalysis(opened, validation if tune else None, evaluation, posteriors, kinds, held_out)


def _split(data: ArrayDataset, val_size: int, limit: int | None) -> tuple[ArrayDataset, ArrayDataset]:
    """Validation first, then at most ``limit`` evaluation examples.

    ``data`` was loaded with at most ``limit + val_size`` examples. When the set had that many, the
    first ``val_size`` are held out; when it is shorter, ``data`` is the whole set and the held-out
    part is what :func:`split_validation` takes without a limit (``val_size``, at most half), so the
    examples tuned on never depend on ``limit``.

    Returns:
        ``(validation, evaluation)``.
    """
    if limit is None or len(data) < limit + val_size:
        validation, rest = split_validation(data, val_size)
        return validation, rest if limit is None else subset_rows(rest, 0, min(len(rest), limit))
    return subset_rows(data, 0, val_size), subset_rows(data, val_size, val_size + limit)


def load_ood_set(meta: ModelMeta, spec: str, settings: AnalysisSettings, model: nn.Module | None = None) -> ArrayDataset:
    """An OOD set shaped and normalised like the model's inputs; its labels are ignored.

    Its images are converted first, as the in-distribution data is (the fit's conversion with the fields
    ``settings`` gives replaced). With ``model`` the model's forward is tried on its first examples.

    Returns:
        The OOD inputs adapted to the model.

    Raises:
        UserError: the set cannot be loaded or shaped for the model; the message starts with the spec.
    """
    try:
        with data_within_memory(spec, resizable=True):
            raw = load_dataset(spec, split="test", root=settings.root, limit=settings.limit,
                               download=settings.download, labels_optional=True, tokenizer=tokenizer_folder(meta))
            raw = convert_as_recorded(meta, settings.conversion, raw)
            if settings.normalize:
                norm = parse_normalize(settings.normalize)
            elif meta.normalize_mean is not None and meta.normalize_std is not None:
                norm = (list(meta.normalize_mean), list(meta.normalize_std))
            else:
                norm = None
            data = adapt_to_model(raw, meta.input_shape, normalize=norm, convertible=True)
        if model is not None:
            check_model_runs(model, data)
        return data
    except UserError as exc:
        # The set's own message keeps naming its parameters, as the command's flags where it has them.
        inner = exc.template.replace("{param}", "{" + exc.param + "}") if exc.param else exc.template
        raise UserError(f"{{param}} {spec}: {inner}", param="against", mentions=exc.params) from None


def ood_set_loader(
    against: Sequence[str], settings: AnalysisSettings
) -> tuple[dict[str, ArrayDataset], Callable[[LoadedModel], None]]:
    """The OOD sets (empty), and the callback that loads them once the model is known.

    Passed as ``prepare_analysis``'s ``before_tuning``, so that a bad ``--against`` fails in seconds, before any tuning.

    Returns:
        ``(sets, load)``: ``{spec: dataset}``, filled when ``load(loaded_model)`` is called.

    Raises:
        UserError: an OOD set given twice.
    """
    if len(set(against)) != len(against):
        raise UserError("the same {param} set is given twice; pass each OOD set once", param="against")
    ood_sets: dict[str, ArrayDataset] = {}

    def load_ood_sets(loaded: LoadedModel) -> None:
        ood_sets.update({spec: load_ood_set(loaded.meta, spec, settings, loaded.module) for spec in against})

    return ood_sets, load_ood_sets


FactorFiles = str | Path | Sequence[str | Path]


def factor_paths(factors: FactorFiles) -> list[str | Path]:
    """One factor file (a path) or several (a sequence of paths), as a list.

    Returns:
        The paths.

    Raises:
        UserError: an empty sequence.
    """
    paths = [factors] if isinstance(factors, (str, Path)) else list(factors)
    if not paths:
        raise UserError("{param} is empty; give at least one factor file", param="factors")
    return paths


def run_ood(
    factors: FactorFiles,
    against: Sequence[str],
    kinds: Sequence[str] | None,
    settings: AnalysisSettings,
    *,
    samples: int = 100,
    progress: Progress = no_progress,
    announce: Callable[[str], None] = lambda s: None,
    warn: Callable[[str | ParameterText], None] = lambda s: None,
) -> OODReport:
    """Calibration, OOD detection and own-error detection of each predictive (Ritter §5.2, §5.4).

    Args:
        factors: one factor file, or several of independently trained checkpoints of one architecture,
            which adds the deep ensemble and the mixture of Laplace (``workflows.ensemble``).
        against: the OOD sets.
        kinds: the predictives (None: the default ones).
        settings: data, held-out examples and tuning.
        samples: samples of the sampled predictives.
        progress: progress bars.
        announce: notes for the user.
        warn: warnings for the user.

    Returns:
        The report; for several files their predictives are named ``<kind>-<m>``, beside ``ensemble`` and
        ``mixture-<kind>``. An OOD set given twice, files of other architectures or given twice and members
        evaluated on different data are refused (``UserError``) before any tuning.
    """
    paths = factor_paths(factors)
    ood_sets, load_ood_sets = ood_set_loader(against, settings)  # loaded with the (first) model
    if len(paths) > 1:
        from uncert_cli.workflows import ensemble  # builds on this module

        members = ensemble.prepare_members(paths, kinds, settings, predictives.kinds(), announce, warn, progress,
                                           before_tuning=load_ood_sets)
        return ensemble.ood_of_members(members, paths, ood_sets, settings, samples, progress)
    factors = paths[0]
    prepared = prepare_analysis(factors, kinds, settings, announce=announce, warn=warn, progress=progress,
                                before_tuning=load_ood_sets)
    kinds = prepared.kinds
    total = len(prepared.evaluation) + sum(len(d) for d in ood_sets.values())
    results = {}
    for kind in kinds:
        post, hp = prepared.posteriors[kind]
        with progress(total, f"ood {kind}") as advance:
            results[kind] = evaluate_predictive(
                post, kind, prepared.evaluation, ood_sets, samples=samples, batch_size=settings.batch_size,
                seed=settings.seed, hyperparameters=hp, on_batch=advance,
            )
    return OODReport(
        in_name=prepared.evaluation.name, n_eval=len(prepared.evaluation),
        n_validation=len(prepared.validation) if prepared.validation is not None else 0,
        ood_names=list(against), results=results,
        settings={"factors": str(factors), "method": prepared.opened.factors.curvature.method, "seed": settings.seed,
                  "num_classes": prepared.meta.num_outputs,
                  # which examples: "test", or null for a whole file without splits
                  "in_distribution_split": prepared.evaluation.split,
                  "ood_splits": {name: data.split for name, data in ood_sets.items()},
                  "ood_resize": list(settings.resize) if settings.resize is not None else None,
                  "ood_grayscale": settings.grayscale,
                  # the conversion every set went through: the fit's, with the fields given to ood replaced
                  "input_conversion": recorded_conversion(prepared.meta, settings.conversion).to_dict(),
                  **held_out_settings(prepared)},
    )


def held_out_settings(prepared: PreparedAnalysis) -> dict[str, object]:
    """JSON keys naming the held-out examples that tuned or checked the Laplace predictives."""
    h = prepared.held_out
    return {"validation_from": h.source if h else None, "validation_examples": h.examples if h else None,
            "validation_n": h.n if h else 0}


@dataclass
class AttackSettings:
    """The attack's own settings: step sizes, steps, target class and mode."""
    mode: str = "both"  # untargeted, targeted or both
    step_sizes: tuple[float, ...] = ()  # untargeted η values (× per-dimension data range)
    target: int = 0
    step_size: float = 0.01  # targeted η
    steps: int = 50
    samples: int = ATTACK_SAMPLES


def run_attack(
    factors: FactorFiles,
    kinds: Sequence[str] | None,
    settings: AnalysisSettings,
    attack: AttackSettings,
    *,
    progress: Progress = no_progress,
    announce: Callable[[str], None] = lambda s: None,
    warn: Callable[[str | ParameterText], None] = lambda s: None,
) -> AttackReport:
    """Fast-gradient-sign attacks through each predictive (Ritter §5.3).

    Args:
        factors: one factor file, or several of checkpoints of one architecture: then the first member's
            predictives (``<kind>-1``), the deep ensemble and the mixture of each Laplace predictive are
            attacked, each through its own gradient (``workflows.ensemble``).
        kinds: the predictives (None: the default ones).
        settings: data, held-out examples and tuning.
        attack: step sizes, steps, target and mode.
        progress: progress bars.
        announce: notes for the user.
        warn: warnings for the user.

    Returns:
        The report.

    Raises:
        UserError: an unknown mode, a target the model lacks, files of other architectures or given twice.
    """
    paths = factor_paths(factors)
    if attack.mode not in ("untargeted", "targeted", "both"):
        raise UserError(f"unknown {{param}} '{attack.mode}'; use untargeted, targeted or both", param="mode")

    def check_target(meta: ModelMeta) -> None:
        classes = meta.num_outputs
        if classes is not None and attack.target >= classes:
            raise UserError(
                f"{{param}} {attack.target} is not a class of this model (it has {classes}); pick 0..{classes - 1}",
                param="target",
            )

    if len(paths) > 1:
        from uncert_cli.workflows import ensemble  # builds on this module

        members = ensemble.prepare_members(paths, kinds, settings, ATTACK_KINDS, announce, warn, progress,
                                           check_model=check_target, continuous_inputs=True)
        return ensemble.attack_of_members(members, paths, settings, attack, progress)
    factors = paths[0]
    prepared = prepare_analysis(
        factors, kinds, settings, allowed=ATTACK_KINDS, announce=announce, check_model=check_target, continuous_inputs=True,
        warn=warn, progress=progress,
    )
    kinds = prepared.kinds
    evaluation = prepared.evaluation
    report = AttackReport(
        settings={
            "factors": str(factors), "data": evaluation.name, "n": len(evaluation), "samples": attack.samples,
            "seed": settings.seed, "target_class": attack.target, "targeted_step_size": attack.step_size,
            "n_validation": len(prepared.validation) if prepared.validation is not None else 0,
            "input_conversion": recorded_conversion(prepared.meta, settings.conversion).to_dict(),
            **held_out_settings(prepared),
        },
        hyperparameters={k: hp for k, (_, hp) in prepared.posteriors.items()},
    )
    for kind in kinds:
        pred = AttackedPredictive(prepared.posteriors[kind][0], kind, samples=attack.samples, seed=settings.seed)
        if attack.mode in ("untargeted", "both"):
            with progress(len(evaluation), f"untargeted {kind}") as advance:
                report.untargeted[kind] = untargeted_attack(
                    pred, evaluation, attack.step_sizes, batch_size=settings.batch_size, on_batch=advance
                )
        if attack.mode in ("targeted", "both"):
            with progress(len(evaluation), f"targeted {kind}") as advance:
                report.targeted[kind] = targeted_attack(
                    pred, evaluation, target=attack.target, step_size=attack.step_size, steps=attack.steps,
                    batch_size=settings.batch_size, on_batch=advance,
                )
    return report

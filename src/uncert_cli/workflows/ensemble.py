"""Several checkpoints of one architecture at once (``uncert ood F1.h5 F2.h5 ...``, ``uncert attack``).

Each factor file (one per independently trained checkpoint) is prepared exactly as a single file is
(:func:`~uncert_cli.workflows.evaluate.prepare_analysis`: the same data, each Laplace predictive tuned on
the same held-out examples), and two combinations are added (Eschenhagen et al. 2021):

* ``ensemble``: the deep ensemble, the average of the members' MAP predictive distributions
  ``1/M Σ_m softmax f(x; θ*_m)``;
* ``mixture-<kind>``: the mixture of Laplace approximations, the average of the members' ``<kind>``
  predictives (each with its own tuned N and τ), one per Laplace predictive asked for.

Every member's own predictives are reported too, as ``<kind>-<m>`` (``map-1``, ``probit-2``, ...).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from uncert_cli.analysis.attack import Attacked, AttackedPredictive, AttackReport, targeted_attack, untargeted_attack
from uncert_cli.analysis.ood import OODReport, predict_probs, predictive_result
from uncert_cli.checkpoint import LoadedModel
from uncert_cli.core.errors import ParameterText, UserError
from uncert_cli.core.progress import Progress
from uncert_cli.data import ArrayDataset
from uncert_cli.posterior import predictives
from uncert_cli.storage.factor_file import read_architecture
from uncert_cli.workflows.evaluate import (
    AnalysisSettings,
    AttackSettings,
    PreparedAnalysis,
    held_out_settings,
    prepare_analysis,
    run_attack,
    run_ood,
)

ENSEMBLE = "ensemble"
MIXTURE = "mixture"
# Older names: run_ood and run_attack take one factor file or several.
run_ood_members = run_ood
run_attack_members = run_attack


def member_name(kind: str, index: int) -> str:
    """``probit-2``: member ``index`` (from 1)'s own ``kind`` predictive."""
    return f"{kind}-{index}"


def check_one_architecture(paths: Sequence[str | Path]) -> None:
    """Refuse factor files whose networks differ (class, keyword arguments or weight shapes), from their
    attributes alone; a file given twice is refused too (it would count one checkpoint twice).

    Raises:
        UserError: naming the first file that differs from the first one and how.
    """
    if len({Path(p).resolve() for p in paths}) != len(paths):
        raise UserError("the same factor file is given twice; give each checkpoint's file once")
    check_same_network([(str(p), read_architecture(p)) for p in paths], "an ensemble or mixture")


def network_signature(loaded: LoadedModel) -> dict[str, object]:
    """What :func:`check_same_network` compares, for a loaded checkpoint (as ``read_architecture`` gives it for a file)."""
    return {"arch": loaded.meta.arch, "arch_kwargs": dict(loaded.meta.arch_kwargs),
            "shapes": {name: tuple(t.shape) for name, t in loaded.module.state_dict().items()}}


def check_same_network(signatures: Sequence[tuple[str, dict]], purpose: str) -> None:
    """``signatures``: ``(name, {arch, arch_kwargs, shapes})`` per checkpoint; all must equal the first.

    Raises:
        UserError: naming the first checkpoint that differs and how.
    """
    first_name, first = signatures[0]
    for name, other in signatures[1:]:
        for key, what in (("arch", "class"), ("arch_kwargs", "keyword arguments"), ("shapes", "weight shapes")):
            if other[key] != first[key]:
                shown = (f"{other[key]!r:.80} vs {first[key]!r:.80}" if key != "shapes"
                         else _shape_difference(first["shapes"], other["shapes"]))
                raise UserError(f"'{name}' holds another architecture than '{first_name}' ({what}: {shown}); "
                                f"{purpose} needs checkpoints of one architecture")


def _shape_difference(a: dict[str, tuple], b: dict[str, tuple]) -> str:
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            return f"{name} {b.get(name)} vs {a.get(name)}"
    return "?"


def prepare_members(
    paths: Sequence[str | Path], kinds: Sequence[str] | None, settings: AnalysisSettings, allowed: Sequence[str],
    announce: Callable[[str], None], warn: Callable[[str | ParameterText], None], progress: Progress, **extra,
) -> list[PreparedAnalysis]:
    """Each member prepared as a single file is, all with the first member's predictives and data; ``extra``
    (``prepare_analysis``'s callbacks) applies to the first member. Files of other architectures or given
    twice, and members evaluated on other examples (:func:`check_same_evaluation`), are refused.

    Returns:
        The prepared members, in the order of ``paths``.
    """
    check_one_architecture(paths)
    members: list[PreparedAnalysis] = []
    for i, path in enumerate(paths):
        announce(f"member {i + 1} of {len(paths)}: {path}")
        prepared = prepare_analysis(path, kinds, settings, allowed=allowed, announce=announce, warn=warn,
                                    progress=progress, **(extra if i == 0 else {}))
        kinds = prepared.kinds  # the first member's defaults for everyone (a structure may change the default)
        if members:
            check_same_evaluation(prepared.evaluation, members[0].evaluation, path, paths[0])
        members.append(prepared)
    return members


def check_same_evaluation(data: ArrayDataset, first: ArrayDataset, path: str | Path, first_path: str | Path) -> None:
    """Refuse a member evaluated on other examples than the first member: another set, another count, or
    the same count of other examples (their labels differ: e.g. one member held out the first test examples to
    tune on and the other, tuned before, did not). The ensemble averages the members example by example.

    Raises:
        UserError: naming both files.
    """
    if data.name != first.name or len(data) != len(first):
        raise UserError(f"'{path}' evaluates on {data.name} ({len(data)} examples), "
                        f"'{first_path}' on {first.name} ({len(first)}); give {{data}} so that every member sees the same data",
                        mentions=("data",))
    if not torch.equal(data.targets, first.targets):
        raise UserError(f"'{path}' evaluates on other examples of {data.name} than '{first_path}' (the {len(data)} labels "
                        "differ, e.g. because only one of them was tuned by `uncert tune`); give both {tune} or both "
                        "{no_tune}, and the same {data}, so that every member sees the same examples",
                        mentions=("tune", "no_tune", "data"))


def ood_of_members(
    members: list[PreparedAnalysis], paths: Sequence[str | Path], ood_sets: dict[str, ArrayDataset],
    settings: AnalysisSettings, samples: int, progress: Progress,
) -> OODReport:
    """``run_ood``'s report for several prepared members (``prepare_members``): every member's predictives,
    the deep ensemble and the mixture of each Laplace predictive (module docstring).

    Returns:
        The report, its predictives named ``<kind>-<m>``, ``ensemble`` and ``mixture-<kind>``.
    """
    kinds = members[0].kinds
    evaluation = members[0].evaluation
    labels = evaluation.targets.numpy()
    total = len(evaluation) + sum(len(d) for d in ood_sets.values())
    results = {}
    # probs[kind][m] = (in-distribution (N, C), {ood set: (N_ood, C)})
    probs: dict[str, list[tuple[np.ndarray, dict[str, np.ndarray]]]] = {}
    seconds: dict[str, list[float]] = {}  # per kind, per member: time of its predictions
    for m, prepared in enumerate(members, 1):
        for kind in dict.fromkeys(["map", *kinds]):  # the ensemble needs every member's MAP
            post, hp = prepared.posteriors.get(kind, (prepared.opened.posterior, None))
            sampled = predictives.get(kind).sampled
            start = time.perf_counter()
            with progress(total, f"ood {member_name(kind, m)}") as advance:
                p_in, *outs = (predict_probs(post, data, kind, samples=samples, batch_size=settings.batch_size,
                                             seed=settings.seed, on_batch=advance)
                               for data in (evaluation, *ood_sets.values()))
            p_out = dict(zip(ood_sets, outs))
            probs.setdefault(kind, []).append((p_in, p_out))
            seconds.setdefault(kind, []).append(time.perf_counter() - start)
            if kind in kinds:
                results[member_name(kind, m)] = predictive_result(
                    member_name(kind, m), p_in, p_out, labels, samples=samples if sampled else None, hyperparameters=hp,
                    seconds=seconds[kind][-1])
    combined = {ENSEMBLE: "map", **{f"{MIXTURE}-{k}": k for k in kinds if predictives.get(k).uses_laplace}}
    for name, kind in combined.items():
        p_in = np.mean([p for p, _ in probs[kind]], axis=0)
        p_out = {s: np.mean([o[s] for _, o in probs[kind]], axis=0) for s in ood_sets}
        results[name] = predictive_result(name, p_in, p_out, labels, seconds=sum(seconds[kind]),
                                          samples=samples if predictives.get(kind).sampled else None)
    first = members[0]
    return OODReport(
        in_name=evaluation.name, n_eval=len(evaluation),
        n_validation=len(first.validation) if first.validation is not None else 0,
        ood_names=list(ood_sets), results=results,
        settings={"factors": str(paths[0]), "members": [str(p) for p in paths],
                  "method": first.opened.factors.curvature.method, "seed": settings.seed,
                  "num_classes": first.meta.num_outputs, "in_distribution_split": evaluation.split,
                  "ood_splits": {name: data.split for name, data in ood_sets.items()},
                  "ood_resize": list(settings.resize) if settings.resize is not None else None,
                  "ood_grayscale": settings.grayscale, **held_out_settings(first)},
    )


class MixturePredictive:
    """``log (1/M Σ_m p_m(y | x))`` of several attacked predictives, differentiable in ``x``: the
    attacked form of the ensemble (members' ``map``) and of a mixture of Laplace predictives.
    """

    def __init__(self, kind: str, members: list[AttackedPredictive]) -> None:
        self.kind, self.members = kind, members
        self.samples = members[0].samples

    def log_probs(self, x: Tensor) -> Tensor:
        """``log p(y | x)`` of the average distribution, ``(B, C)``, keeping the graph to ``x``."""
        stacked = torch.stack([m.log_probs(x) for m in self.members])  # (M, B, C)
        return torch.logsumexp(stacked, dim=0) - torch.log(torch.tensor(float(len(self.members)), device=x.device))


def attack_of_members(
    members: list[PreparedAnalysis], paths: Sequence[str | Path], settings: AnalysisSettings, attack: AttackSettings,
    progress: Progress,
) -> AttackReport:
    """``run_attack``'s report for several prepared members: the first member's predictives (``<kind>-1``),
    the deep ensemble and the mixture of each Laplace predictive, each attacked through its own gradient.

    Returns:
        The report, its predictives named ``<kind>-1``, ``ensemble`` and ``mixture-<kind>``.
    """
    kinds = members[0].kinds
    evaluation = members[0].evaluation
    attacked: dict[str, Attacked] = {}
    for kind in dict.fromkeys(["map", *kinds]):
        one = [AttackedPredictive(p.posteriors.get(kind, (p.opened.posterior, None))[0], kind, samples=attack.samples,
                                  seed=settings.seed) for p in members]
        if kind in kinds:
            attacked[member_name(kind, 1)] = one[0]
        if kind == "map":
            attacked[ENSEMBLE] = MixturePredictive(ENSEMBLE, one)
        elif predictives.get(kind).uses_laplace:
            attacked[f"{MIXTURE}-{kind}"] = MixturePredictive(f"{MIXTURE}-{kind}", one)
    report = AttackReport(
        settings={
            "factors": str(paths[0]), "members": [str(p) for p in paths], "data": evaluation.name, "n": len(evaluation),
            "samples": attack.samples, "seed": settings.seed, "target_class": attack.target,
            "targeted_step_size": attack.step_size,
            "n_validation": len(members[0].validation) if members[0].validation is not None else 0,
            **held_out_settings(members[0]),
        },
        hyperparameters={member_name(k, 1): hp for k, (_, hp) in members[0].posteriors.items()},
        member_hyperparameters=[{member_name(k, m): hp for k, (_, hp) in member.posteriors.items()}
                                for m, member in enumerate(members, 1)],
    )
    for name, pred in attacked.items():
        if attack.mode in ("untargeted", "both"):
            with progress(len(evaluation), f"untargeted {name}") as advance:
                report.untargeted[name] = untargeted_attack(pred, evaluation, attack.step_sizes,
                                                            batch_size=settings.batch_size, on_batch=advance)
        if attack.mode in ("targeted", "both"):
            with progress(len(evaluation), f"targeted {name}") as advance:
                report.targeted[name] = targeted_attack(pred, evaluation, target=attack.target, step_size=attack.step_size,
                                                        steps=attack.steps, batch_size=settings.batch_size, on_batch=advance)
    return report

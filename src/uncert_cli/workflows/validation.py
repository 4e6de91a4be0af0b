"""Which held-out examples tune (or check) a Laplace posterior's hyperparameters, and the honesty check.

``val_from`` chooses them (issue 13):

* ``val``: the set's own validation split (the embedded sets: digits, iris, toy-regression,
  photo-patches); the default wherever it exists.
* ``test``: the first ``val_size`` examples of the test split (at most half of it); the default for
  every other set (MNIST family, files). When ``ood``/``attack`` tune on them, evaluation starts after them.
* ``train``: the last :data:`TRAIN_HOLDOUT` examples of the training split (at most half of it). The test
  split stays untouched, but the checkpoint was most likely trained on these examples, so its MAP is more
  confident on them than on new data and the NLL comparison favours narrower posteriors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from uncert_cli.checkpoint import ModelMeta
from uncert_cli.core.errors import ParameterText, UserError
from uncert_cli.data import ArrayDataset
from uncert_cli.data.registry import EMBEDDED_DATASETS
from uncert_cli.workflows.inputs import load_model_data

if TYPE_CHECKING:  # the settings type lives in evaluation, which imports this module
    from uncert_cli.analysis.ood import Hyperparameters

VAL_SOURCES: tuple[str, ...] = ("val", "test", "train")
TRAIN_HOLDOUT = 5000  # val_from train: the last 5,000 training examples (MNIST: train[55000:60000])
HONESTY_RATIO = 1.05  # warn when the posterior's held-out NLL exceeds the MAP's by more than 5%


@dataclass(frozen=True)
class ValidationChoice:
    """Where held-out examples came from: ``source`` (val, test, train), ``examples`` as ``split[a:b]``."""

    source: str
    examples: str
    n: int


def has_val_split(spec: str | None) -> bool:
    """Whether ``spec`` names a data file that holds its own validation split."""
    return spec is not None and spec.strip().lower() in EMBEDDED_DATASETS


def resolve_val_from(spec: str | None, val_from: str | None) -> str:
    """``val_from`` checked against the set, or the default: ``val`` where the set has one, else ``test``."""
    if val_from is None:
        return "val" if has_val_split(spec) else "test"
    choice = val_from.strip().lower()
    if choice not in VAL_SOURCES:
        raise UserError(f"unknown {{param}} '{val_from}'; use one of {', '.join(VAL_SOURCES)}", param="val_from")
    if choice == "val" and not has_val_split(spec):
        raise UserError(f"'{spec}' has no val split; use {{param}} test (first {{val_size}} test examples) or "
                        f"{{param}} train (last {TRAIN_HOLDOUT:,} training examples)", param="val_from", mentions=("val_size",))
    return choice


def load_held_out(
    meta: ModelMeta, spec: str | None, source: str, settings, model: nn.Module | None = None
) -> tuple[ArrayDataset, ValidationChoice]:
    """The held-out examples of ``source`` for ``spec``, shaped for the model (tried on them when given).

    ``settings`` supplies ``val_size``, ``root``, ``download``, ``normalize`` and ``conversion`` (an
    ``AnalysisSettings``).

    Returns:
        The held-out examples and where they came from.

    Raises:
        UserError: the source cannot give held-out examples for this spec.
    """
    from uncert_cli.analysis.ood import subset_rows  # analysis imports posterior; keep this module light

    load = dict(root=settings.root, download=settings.download, normalize=settings.normalize,
                conversion=settings.conversion, model=model)
    if source == "val":
        data = load_model_data(meta, spec, split="val", limit=settings.val_size, **load)
        return data, ValidationChoice("val", f"val[0:{len(data)}]", len(data))
    split, size = ("train", TRAIN_HOLDOUT) if source == "train" else ("test", settings.val_size)
    data = load_model_data(meta, spec, split=split, **load)
    if len(data) < 2:
        raise UserError(f"the {split} split of '{spec}' has {len(data)} example(s); held-out tuning needs at least 2")
    k = max(1, min(size, len(data) // 2))
    start, stop = (len(data) - k, len(data)) if source == "train" else (0, k)
    return subset_rows(data, start, stop), ValidationChoice(source, f"{split}[{start}:{stop}]", k)


def grid_edge_warning(edges: list[str], kind: str | None = None) -> ParameterText:
    """Say that tuned hyperparameters lie on an edge of the searched grid, so the optimum may be beyond it.

    Returns:
        One stderr line naming ``edges`` (``"n_data"``, ``"prior_precision"``) of ``kind``'s predictive
        (None: the values ``uncert tune`` wrote); the parameters to set by hand are named as
        ``prior_precision``/``n_data`` (the CLI shows its flags).
    """
    whose = f" {kind} predictive's" if kind is not None else ""
    later = " in later commands" if kind is None else ""
    verb = "lies" if len(edges) == 1 else "lie"
    return ParameterText(
        f"warning: the{whose} best {' and '.join(edges)} {verb} on the edge of the searched grid; the optimum may be "
        f"beyond it (set them by hand with {{prior_precision}} / {{n_data}}{later})",
        mentions=("prior_precision", "n_data"),
    )


def honesty_warning(kind: str, hp: Hyperparameters, held_out: ValidationChoice | None, factors: str) -> str:
    """One stderr line: the file's (or given) hyperparameters make the held-out NLL worse than the MAP's."""
    tau = hp.prior_precision
    tau_text = f"{tau:.3g}" if isinstance(tau, float) else "per layer"
    where = f"{held_out.n:,} held-out examples ({held_out.examples})" if held_out else "held-out examples"
    assert hp.validation_nll is not None  # set by the held-out check this warning reports
    ratio = hp.validation_nll / hp.map_validation_nll if hp.map_validation_nll else float("inf")
    origin = "given" if hp.source == "override" else "the file's"
    return (f"warning: with {origin} τ={tau_text}, N={hp.n_data:.3g} the {kind} predictive's NLL on {where} is "
            f"{hp.validation_nll:.4f}, {ratio:.2f}× the MAP's {hp.map_validation_nll:.4f}; "
            f"`uncert tune {factors}` (widest objective) or `uncert ood {factors} --tune` chooses N and τ that keep "
            "it within 1% of the best")

"""The words uncert's options and files use, each defined once as a ``str`` enum.

A member *is* its string (``Method.kfac_diag == "kfac-diag"``, ``str()`` and f-strings give the value), so
the CLI uses these classes directly as Typer option types (the choices are the values), JSON documents
hold the plain strings, and library functions accept either form: each public entry point calls
:meth:`Vocabulary.parse` once, which refuses anything else with a :class:`~uncert_cli.core.errors.UserError`
listing the choices. Values written into HDF5 attributes go through ``str()`` (h5py stores only exact
``str`` objects as text).

Predictive *behaviour* lives in :mod:`uncert_cli.posterior.predictives`; its registry is keyed by
:class:`PredictiveKind` (a test checks that the two agree).
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from uncert_cli.core.errors import UserError

V = TypeVar("V", bound="Vocabulary")


class Vocabulary(str, Enum):
    """A closed set of option values; members are named like their values (``-`` becomes ``_``)."""

    # As enum.StrEnum (Python 3.11+) does, on every Python uncert supports: str() and f-strings give the value.
    __str__ = str.__str__
    __format__ = str.__format__  # type: ignore[assignment]

    @classmethod
    def choices(cls) -> tuple[str, ...]:
        """The values, in declaration order (the order the CLI's help lists them)."""
        return tuple(m.value for m in cls)

    @classmethod
    def parse(cls: type[V], value: object, param: str, *, label: str | None = None) -> V:
        """``value`` (a member or its string) as a member; a :class:`UserError` listing the choices otherwise.

        Args:
            value: what the caller passed.
            param: the library parameter it was passed as (the CLI shows it as the flag).
            label: how the message names the concept (default: ``param`` with spaces, e.g. "fisher type").

        Raises:
            UserError: ``value`` is not one of :meth:`choices`.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        what = label or param.replace("_", " ")
        raise UserError(f"unknown {what} '{value}'; use one of {', '.join(cls.choices())}", param=param)


class Method(Vocabulary):
    """How the curvature is approximated (``fit --method``); ``curvature.methods.METHODS`` builds each."""

    diag = "diag"
    kfac = "kfac"
    full = "full"
    lowrank = "lowrank"
    ekfac = "ekfac"
    kfac_diag = "kfac-diag"
    vi = "vi"


class FisherType(Vocabulary):
    """Which curvature: the exact GGN, a Monte-Carlo Fisher (sampled labels) or the empirical Fisher."""

    exact = "exact"
    mc = "mc"
    empirical = "empirical"


class Task(Vocabulary):
    """What the network's output means: logits, or the mean of a Gaussian."""

    classification = "classification"
    regression = "regression"


class PriorMode(Vocabulary):
    """How the prior enters a Kronecker precision: exact ``N·λ + τ`` (eigen) or Ritter et al.'s eq. 9 (factor)."""

    eigen = "eigen"
    factor = "factor"


class PredictiveKind(Vocabulary):
    """The predictives (``posterior.predictives.PREDICTIVES`` holds one object per member)."""

    map = "map"
    mc = "mc"
    glm = "glm"
    probit = "probit"
    dropout = "dropout"


class TunePredictive(Vocabulary):
    """The predictives ``tune`` can score held-out examples with: those using the Laplace posterior."""

    glm = "glm"
    probit = "probit"
    mc = "mc"


class Objective(Vocabulary):
    """How ``tune`` chooses ``(N, τ)``: see docs/design.md, "Choosing N and τ"."""

    widest = "widest"
    val_nll = "val-nll"
    marglik = "marglik"


class HeldOutObjective(Vocabulary):
    """The objectives that score predictions on held-out examples (how ``ood``/``attack`` tune)."""

    widest = "widest"
    val_nll = "val-nll"


class PriorStructure(Vocabulary):
    """One prior precision for the whole network, or one per layer (marglik)."""

    scalar = "scalar"
    layer = "layer"

"""What a curvature method is to the rest of uncert: a builder and its memory estimate.

A :class:`CurvatureMethod` names one ``--method``, builds the :class:`~uncert_cli.curvature.blocks.Curvature`
from a model and a re-iterable batch source (:meth:`~CurvatureMethod.build`), and predicts, before any
data is touched, the bytes its stored curvature takes (:meth:`~CurvatureMethod.stored_bytes`) and the
memory of its last phase (:meth:`~CurvatureMethod.finish_bytes`, the eigendecompositions), which
``fit_memory`` adds to the terms every method shares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from uncert_cli.core.registry import register
from uncert_cli.core.vocabulary import FisherType, Method, Task
from uncert_cli.curvature.blocks import Curvature
from uncert_cli.curvature.subset import Unit, select_units

# What a fit adds beyond its tensors: allocator arenas, worker-thread stacks, small temporaries
# (measured 7-12 MiB on the small networks of tests/cli/test_fit_memory.py).
SLACK_BYTES = 12 * 2**20
# A callable returning a fresh iterator over the same (inputs, targets) batches at every call.
BatchSource = Callable[[], Iterator[tuple[Tensor, Tensor]] | Iterable[tuple[Tensor, Tensor]]]
# Method -> its builder; each CurvatureMethod subclass with a ``name`` of its own enters it (an instance)
# when it is defined. ``curvature.methods.METHODS`` is this table in the order of the Method enum.
REGISTERED_METHODS: dict[str, CurvatureMethod] = {}


@dataclass(frozen=True)
class BuildRequest:
    """Everything a builder may use besides the model and the data.

    ``reduce`` (sum the running sums over processes) and ``on_outputs`` (see each batch's MAP outputs)
    are honoured by the streaming methods only; ``rank`` by the methods that take one.
    """

    fisher_type: FisherType = FisherType.exact
    task: Task = Task.classification
    mc_samples: int = 1
    subset: str = "all"
    rank: int | None = None
    generator: torch.Generator | None = None
    on_batch: Callable[[int], None] | None = None
    reduce: Callable[[list[Tensor]], None] | None = None
    on_outputs: Callable[[Tensor, Tensor], None] | None = None
    max_bytes: int | None = None
    include_frozen: bool = False
    # The posterior's hyperparameters and the optimiser's settings, for the methods that train (vi).
    prior_precision: float = 1.0
    n_data: float | None = None  # None: the number of examples
    noise_std: float = 1.0
    epochs: int = 5
    lr: float = 1e-3
    on_status: Callable[[str], None] | None = None  # a short line on the progress (the ELBO), as it changes


def kronecker_sizes(unit: Unit) -> tuple[int, int]:
    """``(O, I')`` of a Linear/Conv unit: output rows, inputs per row (+1 with a bias)."""
    weight = unit.params[0]
    return weight.shape[0], weight[0].numel() + (1 if len(unit.params) == 2 else 0)


def eigh_working_bytes(n: int, stored_element: int) -> int:
    """LAPACK ``syevd`` on an n×n factor in float64: the float64 copy (unless stored in float64),
    the eigenvector output and the ``1 + 6n + 2n²`` workspace.
    """
    copy = 8 * n * n if stored_element != 8 else 0
    return copy + 8 * n * n + 8 * (1 + 6 * n + 2 * n * n)


def model_element_size(model: nn.Module) -> int:
    return next((p.element_size() for p in model.parameters() if p.is_floating_point()), 4)


class CurvatureMethod:
    """One ``--method``.

    Subclasses set the class attributes and implement :meth:`build` and :meth:`stored_elements`;
    setting ``name`` (a member of :class:`~uncert_cli.core.vocabulary.Method`) registers the method.
    """

    name: ClassVar[Method]
    summary: ClassVar[str] = ""  # what ``fit --method``'s help says of it, e.g. "dense GGN, small models"
    # One pass over a batch iterator: sums can be reduced over processes and the MAP log-likelihood
    # is taken on the way; otherwise the method passes over the data several times, in one process.
    streaming: bool = False
    takes_rank: bool = False
    # fit_memory: each Linear/Conv layer's patches stay until the batch ends (the exact diagonal),
    # rather than one layer's at a time.
    keeps_all_patches: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:  # shared bases (the engine's and the structured methods') name none
            return
        if cls.name not in Method.choices():  # the vocabulary is the one list of methods the CLI offers
            raise TypeError(f"{cls.__qualname__}.name '{cls.name}' is not a member of core.vocabulary.Method; add it there")
        register(REGISTERED_METHODS, Method(cls.name), cls(), "curvature methods")

    def build(self, model: nn.Module, source: BatchSource, request: BuildRequest) -> Curvature:
        """The curvature of ``model`` over the batches of ``source``."""
        raise NotImplementedError

    def data_passes(self, epochs: int) -> int:
        """How many times :meth:`build` reports every example to ``on_batch`` (the progress bar's total)."""
        return 1

    def stored_elements(self, model: nn.Module, units: list[Unit], rank: int | None) -> int:
        """Numbers the stored curvature holds (before any data is touched)."""
        raise NotImplementedError

    def stored_bytes(self, model: nn.Module, units: list[Unit], rank: int | None, dtype: torch.dtype) -> int:
        """Bytes of the stored curvature in the fit's ``dtype``."""
        model_element = model_element_size(model)
        stored = self.stored_elements(model, units, rank) * model_element
        return stored * torch.empty((), dtype=dtype).element_size() // model_element

    def finish_bytes(self, units: list[Unit], element: int) -> int:
        """Memory of the phase after the data passes (the eigendecompositions); 0 when there is none."""
        return 0

    def rank_limit(self, units: list[Unit]) -> tuple[int, str]:
        """The largest rank the model allows and what it counts (only for :attr:`takes_rank`)."""
        raise NotImplementedError(f"{self.name} takes no rank")

    def check_size(self, units: list[Unit], max_bytes: int | None) -> None:
        """Refuse, before anything is computed, a size the method cannot handle (none by default)."""


def units_of(model: nn.Module, subset: str, include_frozen: bool, example_input: Any = None) -> list[Unit]:
    return select_units(model, subset, example_input=example_input, include_frozen=include_frozen)


def kronecker_finish_bytes(units: list[Unit], element: int) -> int:
    """Every Linear/Conv block's eigenvectors (kept for the file) plus the largest factor's LAPACK
    working set: the finish phase of the methods that decompose Kronecker factors.
    """
    sizes = [n for u in units if u.structure == "kronecker" for n in kronecker_sizes(u)]
    eigenvectors = sum(n * n for n in sizes) * element + sum(sizes) * element
    largest = max(sizes, default=0)
    return eigenvectors + eigh_working_bytes(largest, element) + SLACK_BYTES

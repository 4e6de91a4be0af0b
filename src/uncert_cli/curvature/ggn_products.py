"""Exact GGN-matrix products over the covered parameters, for ``full`` and ``lowrank``.

We use curvlinops' ``GGNLinearOperator``: it forms ``Jᵀ H J M`` with ``jvp``/``vjp`` on whatever graph
the model's ``forward`` builds (functional calls, residuals, shared modules) and vmaps over the columns
of ``M``, so one pass over the data multiplies a whole block of columns. That is exactly what a dense
GGN (identity columns in chunks) and a randomized eigensolver (a block of probe vectors per pass)
need, and it is independent of our own hook-based engine -- a second implementation of the GGN.

Scale: the loss is the per-example negative log-likelihood *summed* over the batch (cross-entropy, or
``½‖f − y‖²`` for regression at unit noise), so the operator is ``Σ_n J_nᵀ H_n J_n``; we divide by
``N`` to get the mean per-example GGN that every block stores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from uncert_cli.core.errors import UserError
from uncert_cli.core.likelihood import categorical_nll_sum
from uncert_cli.core.vocabulary import FisherType, Task

BatchSource = Callable[[], Iterable[tuple[Tensor, Tensor]]]


class _Flat(nn.Module):
    """The model with its output flattened to ``(B, C)`` (regression models may return ``(B,)``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        return out.reshape(out.shape[0], -1)


class _NegLogLik(nn.Module):
    """Summed per-example NLL whose Hessian in the outputs is the likelihood's (``reduction`` for curvlinops)."""

    reduction = "sum"

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task

    def forward(self, f: Tensor, y: Tensor) -> Tensor:
        if self.task == "classification":
            return categorical_nll_sum(f, y.long())
        # the Gaussian NLL at σ = 1 without its constant, in f's dtype: only its Hessian in f is used
        return 0.5 * (f - y.reshape(f.shape).to(f.dtype)).square().sum()


class _Reiterable:
    def __init__(self, source: BatchSource) -> None:
        self.source = source

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iter(self.source())


class GGNProducts:
    """``M ↦ GGN · M`` for ``M`` of shape ``(P, k)`` over ``params`` (flat concatenation, row-major).

    ``n_data`` is counted on construction (one pass without gradients).
    """

    def __init__(
        self, model: nn.Module, params: list[Tensor], source: BatchSource, task: Task, fisher_type: FisherType
    ) -> None:
        if fisher_type != "exact":
            raise UserError(
                f"{{method}} full/lowrank compute the exact GGN only, not {{param}} {fisher_type}; "
                "drop {param} or use {method} diag/kfac/ekfac/kfac-diag",
                param="fisher_type", mentions=("method",),
            )
        # Imported lazily: curvlinops is only needed by these two methods.
        from curvlinops import GGNLinearOperator

        self.params = params
        self.num_params = sum(p.numel() for p in params)
        self.n_data = sum(int(y.shape[0]) for _, y in source())
        if self.n_data == 0:
            raise UserError("the data set is empty; the curvature needs at least one example")
        self._op = GGNLinearOperator(
            _Flat(model), _NegLogLik(task), params, _Reiterable(source),
            check_deterministic=False, num_data=self.n_data,
        )
        self.dtype = params[0].dtype
        self.device = params[0].device

    def __call__(self, M: Tensor) -> Tensor:
        """``(P, k)`` -> ``(P, k)``: the mean per-example GGN times ``M`` (one pass over the data)."""
        with torch.no_grad():
            return (self._op @ M.to(self.dtype)) / self.n_data

    def dense(self, chunk: int | None = None) -> Tensor:
        """The full ``(P, P)`` GGN, identity columns ``chunk`` at a time (symmetrised)."""
        P = self.num_params
        chunk = chunk or max(1, min(P, DENSE_COLUMNS))
        out = torch.empty(P, P, dtype=self.dtype, device=self.device)
        for j0 in range(0, P, chunk):
            j1 = min(P, j0 + chunk)
            E = torch.zeros(P, j1 - j0, dtype=self.dtype, device=self.device)
            E[torch.arange(j0, j1), torch.arange(j1 - j0)] = 1
            out[:, j0:j1] = self(E)
        return (out + out.T) / 2


# Identity columns per data pass for the dense GGN: vmapped jvp/vjp over this many columns.
DENSE_COLUMNS = 256

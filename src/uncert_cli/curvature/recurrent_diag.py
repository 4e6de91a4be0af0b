"""Exact GGN/Fisher diagonal of ``nn.LSTM``/``nn.GRU``/``nn.RNN`` from gate gradients.

A recurrent weight is used at every time step, so its per-example gradient is a sum over time of
outer products: with ``δ_t`` the gradient of the gate pre-activations at step ``t``,

    ∂/∂W_ih = Σ_t δ_t x_tᵀ,    ∂/∂W_hh = Σ_t δʰ_t h_{t-1}ᵀ,    ∂/∂b_ih = Σ_t δ_t,    ∂/∂b_hh = Σ_t δʰ_t,

where ``δʰ = δ`` except for GRU's candidate gate, whose recurrent part is scaled by the reset gate
(``δʰ_n = r_t ⊙ δ_n``).  The engine propagates its ``K`` backward vectors to the gate pre-activations
of every layer-direction (:class:`~uncert_cli.curvature.recurrent.DirectionRecord`'s ``x_proj``, named
to the capture as the call's internal outputs), so each weight's per-example gradients for all ``K``
vectors are one batched matrix product, ``(B·K)`` products of ``(G×T)(T×F)``: ``2·K·B·T·G·F`` flops per
weight, the least the exact diagonal costs.  The generic accumulator instead re-ran the layer's
forward per example under ``vmap`` and pulled each vector back through the Python loop over time
steps, forming ``T`` outer products per weight and example (about 80× slower on a 2-layer LSTM).

Calls of a module used several times are positions like time steps: their ``δ`` and inputs are joined
along time before the products, so the per-example gradient sums every use before it is squared.
LSTMs with ``proj_size`` and modules some of whose parameters are not covered keep the generic path.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from uncert_cli.core.errors import UserError
from uncert_cli.curvature.blocks import DiagonalBlock
from uncert_cli.curvature.diagonal import diagonal_block
from uncert_cli.curvature.hooks import Call, Capture, check_unmodified
from uncert_cli.curvature.plain_kernels import runs_own_forward
from uncert_cli.curvature.recurrent import DirectionRecord
from uncert_cli.curvature.subset import Unit

__all__ = ["RecurrentDiagAccumulator"]

# Bound on the elements of one chunk of per-example gradients (b, K, G, F): 256 MiB in float32.
CHUNK_ELEMENTS = 2**26


class RecurrentDiagAccumulator:
    """Exact diagonal of a recurrent unit: per-example gradients as products over time steps."""

    keep_inputs = False
    on_forward = None

    @staticmethod
    def covers(unit: Unit) -> bool:
        """A whole recurrent module (every parameter covered, no tying, no projection) on its own
        or the plain forward, which reports its gates.
        """
        module = unit.module
        return (
            isinstance(module, nn.RNNBase)
            and not unit.members
            and getattr(module, "proj_size", 0) == 0
            and {id(p) for p in unit.params} == {id(p) for p in module.parameters()}
            and runs_own_forward(module)
        )

    def __init__(self, unit: Unit, dtype: torch.dtype, device: torch.device, capture: Capture) -> None:
        self.unit = unit
        self.capture = capture
        module = unit.module
        self.gru = module.mode == "GRU"
        self.hidden_size: int = cast(nn.RNNBase, module).hidden_size
        self.sums_ = {n: torch.zeros_like(p, dtype=dtype, device=device) for n, p in zip(unit.local_names, unit.params)}
        self._pending: list[tuple[DirectionRecord, int]] = []  # this call's records, input versions
        self._calls: list[list[tuple[DirectionRecord, int]]] = []  # per call of this batch

    def record(self, rec: DirectionRecord) -> None:
        """The plain forward's callback (only calls made while the capture is on are this batch's)."""
        if self.capture.active:
            self._pending.append((rec, rec.inputs._version))

    def internal_outputs(self) -> list[Tensor]:
        """The capture hook's callback after each call: the call's gate pre-activations."""
        records, self._pending = self._pending, []
        self._calls.append(records)
        return [rec.x_proj for rec, _ in records]

    def on_backward(self, calls: list[Call], grads: list[list[Tensor]], batch_size: int) -> None:
        """``grads[c][j]``: ``(K, T, B, G)`` gradients of call ``c``'s ``j``-th record's ``x_proj``."""
        by_direction: dict[str, list[tuple[DirectionRecord, Tensor]]] = {}
        for records, g in zip(self._calls, grads):
            for (rec, version), delta in zip(records, g):
                check_unmodified(self.unit.name, [rec.inputs], [version])
                if rec.inputs.shape[1] != batch_size:
                    raise UserError(
                        f"recurrent module {self.unit.name!r} was called on {rec.inputs.shape[1]} sequence(s) in a "
                        f"batch of {batch_size}; call it on the whole batch, (batch, time, features) or "
                        "(time, batch, features)",
                        param="model",
                    )
                by_direction.setdefault(rec.suffix, []).append((rec, delta))
        for suffix, uses in by_direction.items():
            delta = torch.cat([d for _, d in uses], dim=1)  # (K, T_all, B, G): calls are more positions
            inputs = torch.cat([r.inputs for r, _ in uses], dim=0)  # (T_all, B, F)
            hidden = torch.cat([r.hidden for r, _ in uses], dim=0)  # (T_all, B, H)
            delta_h = delta
            if self.gru:
                reset = torch.cat([r.reset for r, _ in uses], dim=0)  # type: ignore[misc]
                n0 = 2 * self.hidden_size
                delta_h = torch.cat([delta[..., :n0], delta[..., n0:] * reset], dim=-1)
            self._add_weight(f"weight_ih{suffix}", delta, inputs)
            self._add_weight(f"weight_hh{suffix}", delta_h, hidden)
            for name, d in ((f"bias_ih{suffix}", delta), (f"bias_hh{suffix}", delta_h)):
                if name in self.sums_:
                    self.sums_[name] += d.sum(1).square().sum((0, 1))

    def _add_weight(self, name: str, delta: Tensor, inputs: Tensor) -> None:
        """Add ``Σ_{k,b} (Σ_t δ_{k,t,b} ⊗ a_{t,b})²`` for ``delta (K, T, B, G)`` and ``inputs (T, B, F)``."""
        K, _, B, G = delta.shape
        F = inputs.shape[-1]
        d = delta.permute(2, 0, 3, 1)  # (B, K, G, T)
        a = inputs.permute(1, 0, 2).unsqueeze(1)  # (B, 1, T, F)
        chunk = max(1, CHUNK_ELEMENTS // max(1, K * G * F))
        total = self.sums_[name]
        for start in range(0, B, chunk):
            per_example = torch.matmul(d[start : start + chunk], a[start : start + chunk])  # (b, K, G, F)
            total += per_example.square_().sum((0, 1))

    def end_batch(self, batch_size: int) -> None:
        self._calls = []
        self._pending = []

    def sums(self) -> list[Tensor]:
        return [self.sums_[n] for n in self.unit.local_names]

    def finalize(self, n_data: int) -> DiagonalBlock:
        return diagonal_block(self.unit, self.sums(), n_data)

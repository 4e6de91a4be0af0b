"""EKFAC's second pass: per-parameter second moments of the per-example gradients in the KFAC eigenbasis.

George et al. (2018): keep the eigenbases ``Ug`` (O, O) and ``Ua`` (I', I') of the KFAC factors and
re-estimate the eigenvalues per parameter,

    S[o, i] = 1/N Σ_n Σ_k ( Ugᵀ ∇_{W_aug} ⟨v_{k,n}, f_n⟩ Ua )[o, i]²,

the exact diagonal of the (sum-over-k) GGN rotated into ``Ug ⊗ Ua`` (``v_{k,n}`` are the loss
backward vectors of :mod:`~uncert_cli.curvature.loss_vectors`). The per-example gradient of one call
is ``Σ_t g_{k,n,t} a_{n,t}ᵀ`` over the positions ``t`` (sequence entries, conv output pixels, calls of a
shared module), so in the basis it is ``Σ_t (Ugᵀ g_t)(Uaᵀ a_t)ᵀ``. Without positions (a Linear on 2-D
input) the square factorises: ``S = 1/N Σ_n (Σ_k (Ugᵀ g_nk)²) ⊗ (Uaᵀ a_n)²`` -- one ``(O, B) @ (B, I')``
product per batch. With positions the rotated per-example gradients are formed explicitly, a few
examples at a time (``CHUNK_ELEMENTS``).

This pass has its own small forward hooks (inputs and outputs of the Kronecker units only); each
call's example dimension is found by the same helper as in the KFAC pass and the exact diagonal
(``kronecker.per_example_rows``: the first leading dimension of a Linear's input with the batch size),
so sequence-first ``(T, B, I)`` layers get per-example gradients summed over their time steps.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from uncert_cli.core.errors import UserError
from uncert_cli.core.slow_path import announce_slow_path, vmap_unsupported
from uncert_cli.core.vocabulary import FisherType, Task
from uncert_cli.curvature.blocks import KroneckerEigen
from uncert_cli.curvature.kronecker import per_example_rows
from uncert_cli.curvature.loss_vectors import loss_backward_vectors
from uncert_cli.curvature.subset import Unit

CHUNK_ELEMENTS = 1 << 24  # numbers in one chunk of rotated per-example gradients (K·b·O·I')


def _call_rows(unit: Unit, x: Tensor, g: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """Inputs ``(B, T, I')`` (bias column of ones appended) and backward vectors ``(K, B, T, O)`` of one call.

    The example dimension is found as the KFAC pass and the exact diagonal find it
    (:func:`~uncert_cli.curvature.kronecker.per_example_rows`), so a Linear applied to a
    sequence-first ``(T, B, I)`` tensor groups its positions by example, not by time step.
    """
    rows = per_example_rows(unit.module, x, g, batch_size, default_batch_dim=0)
    assert rows is not None  # a default batch dimension is given
    a, gg = rows
    if len(unit.params) == 2:
        a = torch.cat([a, a.new_ones(*a.shape[:2], 1)], dim=2)
    return a, gg


class _Recorder:
    def __init__(self, units: list[Unit]) -> None:
        self.units = units
        self.inputs: list[list[Tensor]] = [[] for _ in units]
        self.outputs: list[list[Tensor]] = [[] for _ in units]

    def hook(self, i: int):
        def fn(_m: nn.Module, args: tuple, out: Tensor) -> Tensor:
            self.inputs[i].append(args[0].detach())
            self.outputs[i].append(out)
            return out.clone()  # an in-place op downstream must not touch what we differentiate

        return fn

    def clear(self) -> None:
        self.inputs = [[] for _ in self.units]
        self.outputs = [[] for _ in self.units]


def ekfac_eigenvalues(
    model: nn.Module,
    units: list[Unit],
    eigens: list[KroneckerEigen],
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    fisher_type: FisherType,
    task: Task,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Corrected eigenvalues ``S`` (O, I') of each Linear/Conv unit, means over the data."""
    sums = [
        torch.zeros(e.output_eigenvalues.numel(), e.input_eigenvalues.numel(),
                    dtype=e.input_eigenvectors.dtype, device=e.input_eigenvectors.device)
        for e in eigens
    ]
    rec = _Recorder(units)
    handles = [u.module.register_forward_hook(rec.hook(i)) for i, u in enumerate(units)]
    n = 0
    try:
        for x, y in batches:
            rec.clear()
            out = model(x)
            batch = int(out.shape[0])
            out = out.reshape(batch, -1)
            V = loss_backward_vectors(out, y, fisher_type, task, mc_samples, generator)  # (K, B, C)
            flat = [o for outs in rec.outputs for o in outs]
            grads = _backprop(out, flat, V)
            pos = 0
            for i, (unit, eig) in enumerate(zip(units, eigens)):
                calls = len(rec.outputs[i])
                if not calls:
                    continue
                rows = [_call_rows(unit, xi, gi, batch) for xi, gi in zip(rec.inputs[i], grads[pos : pos + calls])]
                a = torch.cat([r[0] for r in rows], dim=1)  # (B, T, I')
                g = torch.cat([r[1] for r in rows], dim=2)  # (K, B, T, O)
                pos += calls
                _accumulate(sums[i], g @ eig.output_eigenvectors, a @ eig.input_eigenvectors)
            n += int(out.shape[0])
    finally:
        for h in handles:
            h.remove()
        rec.clear()
    if n == 0:
        raise UserError("the data set is empty; the curvature needs at least one example")
    return [s / n for s in sums]


def _backprop(out: Tensor, inputs: list[Tensor], V: Tensor) -> list[Tensor]:
    """``(K, *input.shape)`` backward vectors at each of ``inputs``; one vmapped backward if possible."""
    try:
        g = torch.autograd.grad(out, inputs, grad_outputs=V, is_grads_batched=True, allow_unused=True)
    except (RuntimeError, NotImplementedError) as exc:  # no vmap rule somewhere in the graph: loop over the K vectors
        if not vmap_unsupported(exc):
            raise
        announce_slow_path("EKFAC's backward vectors are propagated", exc)
        per_k = [
            torch.autograd.grad(out, inputs, grad_outputs=V[k], retain_graph=k < V.shape[0] - 1, allow_unused=True)
            for k in range(V.shape[0])
        ]
        g = tuple(
            torch.stack([pk[j] if pk[j] is not None else torch.zeros_like(x) for pk in per_k])
            for j, x in enumerate(inputs)
        )
    return [gj if gj is not None else x.new_zeros((V.shape[0], *x.shape)) for gj, x in zip(g, inputs)]


def _accumulate(acc: Tensor, g_rot: Tensor, a_rot: Tensor) -> None:
    """``acc += Σ_{n,k} (Σ_t g_rot[k,n,t] ⊗ a_rot[n,t])²``; ``g_rot`` (K, B, T, O), ``a_rot`` (B, T, I')."""
    K, B, T, O = g_rot.shape
    I = a_rot.shape[2]
    if T == 1:  # the square of an outer product is the outer product of the squares
        acc.addmm_(g_rot[:, :, 0].square().sum(0).T, a_rot[:, 0].square())
        return
    b = max(1, CHUNK_ELEMENTS // max(1, K * O * I))
    for n0 in range(0, B, b):
        per_example = torch.einsum("knto,nti->knoi", g_rot[:, n0 : n0 + b], a_rot[n0 : n0 + b])
        acc.add_(per_example.square().sum((0, 1)))

"""Exact GGN/Fisher diagonals: ``diag = 1/N Σ_n Σ_k (J_nᵀ v_{k,n})²`` per parameter.

Two accumulators:

* :class:`LinearConvDiagAccumulator` for Linear/Conv (the "kronecker" units). The per-example
  gradient of the weight is ``Σ_p g_{k,n,p} a_{n,p}ᵀ``. With one position (a Linear on 2-D input
  called once) the square factorises, ``Σ_{n,k} g²_{nko} a²_{ni} = ((Σ_k g²)ᵀ a²)_{oi}``: one matrix
  product, no per-example gradients. With several positions (sequences, conv pixels, shared calls)
  the squares are summed by :func:`~uncert_cli.curvature.square_sums.add_square_sums_` (per-example
  gradients, or products of position pairs where those are cheaper); the inputs (conv patches) are
  formed once per batch and reused by every chunk of backward vectors.
* :class:`GenericDiagAccumulator` for every other module with direct parameters (norms,
  embeddings, attention, grouped convs, ...): per-example vector-Jacobian products of the module's
  own forward with ``torch.func`` (``functional_call`` + ``vjp``, vmapped over the ``K`` vectors and
  over the examples of the recorded call inputs). Valid for any module whose forward treats examples
  independently (eval-mode BatchNorm does). Calls of a shared module are summed per example before
  squaring.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap

from uncert_cli.core.errors import UserError
from uncert_cli.core.slow_path import announce_slow_path, vmap_unsupported
from uncert_cli.curvature.blocks import DiagonalBlock
from uncert_cli.curvature.hooks import Call, Capture, find_batch_dim
from uncert_cli.curvature.kronecker import example_dim, per_example_inputs, per_example_outputs
from uncert_cli.curvature.square_sums import add_square_sums_
from uncert_cli.curvature.subset import Unit

# Bound on the elements of one per-example-gradient chunk (512 MiB in float64).
CHUNK_ELEMENTS = 2**26


def diagonal_block(unit: Unit, diags: list[Tensor], n_data: int) -> DiagonalBlock:
    """The mean diagonal block of ``unit`` from its per-parameter sums over ``n_data`` examples."""
    return DiagonalBlock(
        module=unit.name,
        param_names=unit.param_names,
        param_shapes=tuple(tuple(p.shape) for p in unit.params),
        diagonal=tuple(d / n_data for d in diags),
    )


class LinearConvDiagAccumulator:
    """Exact diagonal of a Linear/Conv unit from recorded inputs and output backward vectors."""

    keep_inputs = True
    on_forward = None

    def __init__(self, unit: Unit, dtype: torch.dtype, device: torch.device) -> None:
        self.unit = unit
        weight = unit.params[0]
        self.O = weight.shape[0]
        self.I = weight[0].numel()
        self.has_bias = len(unit.params) == 2
        self.w_sum = torch.zeros(self.O, self.I, dtype=dtype, device=device)
        self.b_sum = torch.zeros(self.O, dtype=dtype, device=device)
        self._patches: Tensor | None = None  # (B, P, I), cached over chunks of K within a batch
        # One position: Σ_k g² (B, O) summed over the chunks of K of a batch, so the product with
        # a² runs once per batch instead of once per chunk (5 products → 1 on the MNIST MLP).
        self._g_square: Tensor | None = None

    def on_backward(self, calls: list[Call], grads: list[list[Tensor]], batch_size: int) -> None:
        B = batch_size
        module = self.unit.module
        live = [(call, g[0]) for call, g in zip(calls, grads) if g]
        if not live:
            return
        for call, _ in live:
            call.check_inputs_unmodified(self.unit.name)
        dims = [example_dim(module, call.args[0], B, default_batch_dim=0) or 0 for call, _ in live]
        if self._patches is None:  # once per batch, not once per chunk of K
            a_parts = [per_example_inputs(module, call.args[0], B, bd) for (call, _), bd in zip(live, dims)]
            self._patches = a_parts[0] if len(a_parts) == 1 else torch.cat(a_parts, dim=1)
        a = self._patches
        g_parts = [per_example_outputs(module, g, B, bd) for (_, g), bd in zip(live, dims)]
        g = g_parts[0] if len(g_parts) == 1 else torch.cat(g_parts, dim=2)  # (K, B, P, O)
        P = g.shape[2]
        if self.has_bias:
            self.b_sum += g.sum(2).square().sum((0, 1))
        if P == 1:
            s = g[:, :, 0, :].square().sum(0)  # (B, O)
            if self._g_square is None:
                self._g_square = s
            else:
                self._g_square += s
            return
        add_square_sums_(self.w_sum, g, a)

    def end_batch(self, batch_size: int) -> None:
        if self._g_square is not None:
            assert self._patches is not None
            self.w_sum.addmm_(self._g_square.t(), self._patches[:, 0, :].square())
        self._patches = None
        self._g_square = None

    def sums(self) -> list[Tensor]:
        return [self.w_sum, self.b_sum] if self.has_bias else [self.w_sum]

    def finalize(self, n_data: int) -> DiagonalBlock:
        shape = self.unit.params[0].shape
        diags = [self.w_sum.reshape(shape)]
        if self.has_bias:
            diags.append(self.b_sum)
        return diagonal_block(self.unit, diags, n_data)


def _arg_hint(module: nn.Module, position: int | str, t: Tensor) -> int | None | str:
    """Batch-dimension hint for one recorded input (``"none"``: shared by all examples)."""
    if isinstance(module, nn.MultiheadAttention):
        if position in (0, 1, 2, "query", "key", "value"):
            return 0 if module.batch_first or t.dim() == 2 else 1
        if position == "attn_mask":
            return "none"
    if isinstance(module, nn.RNNBase) and t.dim() == 3:
        # input (B, T, F) or (T, B, F); an initial hidden state (L·D, B, H) has its batch second
        return (0 if module.batch_first else 1) if position in (0, "input") else 1
    return None


def _output_hint(module: nn.Module, index: int) -> int | None:
    if isinstance(module, nn.MultiheadAttention) and index == 0 and not module.batch_first:
        return 1
    if isinstance(module, nn.RNNBase):
        # output (B, T, H) or (T, B, H); the final hidden state (L·D, B, H) has its batch second
        return (0 if module.batch_first else 1) if index == 0 else 1
    return None


class GenericDiagAccumulator:
    """Diagonal of any module's own parameters via per-example VJPs (``torch.func``)."""

    keep_inputs = True
    on_forward = None

    def __init__(self, unit: Unit, dtype: torch.dtype, device: torch.device, capture: Capture) -> None:
        self.unit = unit
        self.capture = capture
        self.sums_ = [torch.zeros_like(p, dtype=dtype, device=device) for p in unit.params]

    def _unit_grads(self, call: Call, g: list[Tensor], B: int, sl: slice) -> list[Tensor]:
        """Per-example gradients of one call for every parameter of the unit: ``(K, b, *param.shape)``.

        A call of one module of a tied unit reaches only that module's parameters; the others get
        zeros, so that summing over calls sums the uses of each shared tensor.
        """
        if not self.unit.members:
            return self._call_grads(call, g, B, sl, self.unit.module, self.unit.local_names, self.unit.params)
        member = self.unit.members[call.member]
        params = tuple(self.unit.params[s] for s in member.slots)
        per = self._call_grads(call, g, B, sl, member.module, member.local_names, params)
        K, b = g[0].shape[0], sl.stop - sl.start
        out: list[Tensor] = [p.new_zeros((K, b, *p.shape)) for p in self.unit.params]
        for slot, grad in zip(member.slots, per):
            out[slot] = out[slot] + grad
        return out

    def _call_grads(
        self, call: Call, g: list[Tensor], B: int, sl: slice,
        module: nn.Module, names: tuple[str, ...], unit_params: tuple[Tensor, ...],
    ) -> list[Tensor]:
        """Per-example gradients of ``Σ output·g`` for the examples ``sl`` of one call of
        ``module``: one ``(K, b, *param.shape)`` tensor per parameter in ``unit_params``
        (named ``names`` relative to ``module``).
        """
        params = tuple(p.detach() for p in unit_params)

        # Split the recorded inputs into per-example tensors (vmapped) and shared constants.
        # Only top-level tensor args/kwargs can be per-example; nested containers are passed as is.
        keys: list[int | str] = list(range(len(call.args))) + list(call.kwargs.keys())
        values: list[Any] = list(call.args) + list(call.kwargs.values())
        n_args = len(call.args)
        batched_idx, batched_vals, batched_dims = [], [], []
        for li, (key, leaf) in enumerate(zip(keys, values)):
            if not isinstance(leaf, Tensor) or leaf.dim() == 0 or call.shared_inputs:
                continue
            hint = _arg_hint(module, key, leaf)
            if hint == "none":
                continue
            bd = find_batch_dim(leaf.shape, B, hint if isinstance(hint, int) else None)
            if bd is None:
                continue
            batched_idx.append(li)
            batched_vals.append(leaf.narrow(bd, sl.start, sl.stop - sl.start))
            batched_dims.append(bd)
        out_dims = []
        g_vals = []
        for idx, gj in zip(call.output_index, g):
            bd = find_batch_dim(gj.shape[1:], B, _output_hint(module, idx))
            if bd is None:
                # An output without a batch axis that Capture could not expand (leading size not 1, or
                # computed from inputs with a batch-sized axis): its gradient is summed over the batch, so no
                # per-example curvature exists for it. The user can leave the module out.
                raise UserError(
                    f"module {self.unit.name!r} returns an output without a batch axis, shared by every example, "
                    "so its per-example curvature cannot be captured; leave it out with {param} (e.g. a glob of "
                    "the other modules such as 'classifier.*')",
                    param="subset",
                )
            out_dims.append(bd)
            g_vals.append(gj.narrow(bd + 1, sl.start, sl.stop - sl.start))
        out_index = list(call.output_index)

        def one_example(xs: list[Tensor], gs: list[Tensor], vectors_at_once: bool = True) -> tuple[Tensor, ...]:
            full = list(values)
            for li, x, bd in zip(batched_idx, xs, batched_dims):
                full[li] = x.unsqueeze(bd)  # keep a batch dimension of 1 (BatchNorm wants 4-D)
            args, kwargs = full[:n_args], {str(k): v for k, v in zip(keys[n_args:], full[n_args:])}

            def f(*ps: Tensor) -> tuple[Tensor, ...]:
                out = functional_call(module, dict(zip(names, ps)), tuple(args), dict(kwargs))
                flat = (out,) if isinstance(out, Tensor) else tuple(out)
                return tuple(flat[i] for i in out_index)

            _, pullback = vjp(f, *params)[:2]

            def one_vector(gk: list[Tensor]) -> tuple[Tensor, ...]:
                return pullback(tuple(x.unsqueeze(bd) for x, bd in zip(gk, out_dims)))

            if vectors_at_once:
                return vmap(one_vector)(gs)
            per_vector = [one_vector([gk[k] for gk in gs]) for k in range(gs[0].shape[0])]
            return tuple(torch.stack(parts) for parts in zip(*per_vector))

        in_dims = (batched_dims, [bd + 1 for bd in out_dims])
        with self.capture.paused():
            try:
                grads = vmap(one_example, in_dims=in_dims)(batched_vals, g_vals)
            except (RuntimeError, NotImplementedError, ValueError) as exc:
                # Some backward kernels' batching rules break under two nested vmaps (PReLU's pullback
                # gets the wrong sizes in torch 2.x) while one vmap runs them: the backward vectors go
                # one by one then. A real error of the module fails there as well, and propagates.
                if not vmap_unsupported(exc):
                    raise
                announce_slow_path(f"the per-example gradients of {self.unit.name!r} take their backward vectors", exc)
                grads = vmap(lambda xs, gs: one_example(xs, gs, False), in_dims=in_dims)(batched_vals, g_vals)
        # vmap stacks examples first: (b, K, *param) -> (K, b, *param)
        return [gr.transpose(0, 1) for gr in grads]

    def on_backward(self, calls: list[Call], grads: list[list[Tensor]], batch_size: int) -> None:
        B = batch_size
        live = [(c, g) for c, g in zip(calls, grads) if g]
        if not live:
            return
        for c, _ in live:
            c.check_inputs_unmodified(self.unit.name)
        K = live[0][1][0].shape[0]
        chunk = max(1, CHUNK_ELEMENTS // max(1, K * self.unit.num_params))
        for start in range(0, B, chunk):
            sl = slice(start, min(B, start + chunk))
            total: list[Tensor] | None = None
            for c, g in live:
                per = self._unit_grads(c, g, B, sl)
                total = per if total is None else [t + p for t, p in zip(total, per)]
            assert total is not None
            for s, t in zip(self.sums_, total):
                s += t.square().sum((0, 1))

    def end_batch(self, batch_size: int) -> None:
        pass

    def sums(self) -> list[Tensor]:
        return list(self.sums_)

    def finalize(self, n_data: int) -> DiagonalBlock:
        return diagonal_block(self.unit, list(self.sums_), n_data)

"""Marginal variances: of each parameter, and of the linearised network's outputs (``diag(J Σ Jᵀ)``).

The output variance never forms the ``(B, C, P)`` Jacobian of all examples: examples are processed in
chunks, and for each example the per-output vector-Jacobian products (``vmap`` over the basis
cotangents of ``vjp``) are reduced against each block's covariance in its eigenbasis right away. Peak
memory is about ``chunk_size * C * P`` numbers; by default the chunk is sized for ``max_elements``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap

from uncert_cli.core.errors import UserError
from uncert_cli.core.slow_path import announce_slow_path, vmap_unsupported
from uncert_cli.posterior.structures import Structure

DEFAULT_MAX_ELEMENTS = 1 << 24  # numbers per Jacobian chunk (128 MiB in float64)


def parameter_variances(specs: Sequence[Structure], prec_eigs: Sequence[Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for spec, eigs in zip(specs, prec_eigs):
        out.update(spec.marginal_variance(eigs))
    return out


def output_dim(model: nn.Module, x: Tensor) -> int:
    with torch.no_grad():
        return model(x[:1]).reshape(1, -1).shape[1]


def functional_variance(
    model: nn.Module,
    map_params: dict[str, Tensor],
    specs: Sequence[Structure],
    prec_eigs: Sequence[Tensor],
    x: Tensor,
    *,
    chunk_size: int | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Tensor:
    """``diag(J(x) Σ J(x)ᵀ)`` per example, shape ``(B, C)``; ``J`` is w.r.t. the covered parameters."""
    if x.shape[0] == 0:
        raise UserError("cannot predict on an empty batch; pass at least one example")
    n_out = output_dim(model, x)
    if chunk_size is None:
        n_params = sum(s.num_params for s in specs)
        chunk_size = max(1, max_elements // max(1, n_out * n_params))
    eye = torch.eye(n_out, dtype=x.dtype if x.is_floating_point() else None, device=x.device)
    params = {k: v.detach() for k, v in map_params.items()}

    def per_example(xi: Tensor) -> dict[str, Tensor]:
        def f(p: dict[str, Tensor]) -> Tensor:
            return functional_call(model, p, (xi.unsqueeze(0),)).reshape(-1)

        out, vjp_fn = vjp(f, params)[:2]
        return vmap(vjp_fn)(eye.to(out.dtype))[0]  # name -> (C, *shape)

    with torch.no_grad():  # torch.func.vjp ignores an outer no_grad; this only keeps the reductions graph-free
        return _reduce_chunks(per_example, specs, prec_eigs, x, chunk_size)


def _chunk_jacobians(per_example, chunk: Tensor, state: dict[str, bool]) -> dict[str, Tensor]:
    """``name -> (b, C, *shape)`` for the examples of ``chunk``: vmapped over them, or one by one once vmap
    has failed on this model (data-dependent control flow on an input, such as transformers checking
    whether an attention mask masks anything).
    """
    if state.get("vmap", True):
        try:
            return vmap(per_example)(chunk)
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            if not vmap_unsupported(exc):
                raise
            announce_slow_path("the per-example output variances are computed", exc)
            state["vmap"] = False
    rows = [per_example(xi) for xi in chunk]
    return {name: torch.stack([row[name] for row in rows]) for name in rows[0]}


def _reduce_chunks(per_example, specs, prec_eigs, x: Tensor, chunk_size: int) -> Tensor:
    result: list[Tensor] = []
    state: dict[str, bool] = {}
    for start in range(0, x.shape[0], chunk_size):
        jac = _chunk_jacobians(per_example, x[start : start + chunk_size], state)  # name -> (b, C, *shape)
        var = None
        for spec, eigs in zip(specs, prec_eigs):
            q = spec.quadratic_form(eigs, {n: jac[n] for n in spec.param_names}, batch_dims=2)
            var = q if var is None else var + q
        assert var is not None  # a posterior has at least one block
        result.append(var)
    return torch.cat(result)

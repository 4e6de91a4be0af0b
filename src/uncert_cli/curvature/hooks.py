"""Capture machinery: forward hooks that record each call of a unit, and the batched backward.

Why our own hooks rather than BackPACK or curvlinops:

* BackPACK's KFAC/KFLR needs an extension for every module on the path from the output to each
  parameter; it has none for ``AdaptiveAvgPool2d`` and so fails on torchvision's resnet18, and it
  rebuilds per-sample quantities module by module in Python, which is slow.
* curvlinops' KFAC runs one full backward per column of the loss-Hessian square root (``C``
  backward passes for the exact GGN), each computing parameter gradients it then throws away.

Here the model runs forward once per batch with a forward hook (``with_kwargs=True``) on every unit.
The hook records the call's inputs and the output tensors that carry gradient. The ``K`` backward
vectors of :mod:`~uncert_cli.curvature.loss_vectors` are then propagated from the model output to
those recorded outputs only (``torch.autograd.grad`` with ``inputs=`` the outputs: no parameter
gradient is ever formed), all ``K`` at once with ``is_grads_batched=True`` where vmap supports the
graph, else in a loop with ``retain_graph``. Calls of shared modules and functional ops in
``forward`` (``F.relu``, ``x + residual``) need nothing special: hooks fire once per module call,
and autograd differentiates whatever ran in between.

The hook returns a *clone* of each tracked output: the model then keeps working on the clone, and
an in-place op downstream (resnet's ``ReLU(inplace=True)`` after a BatchNorm) cannot rewrite the
tensor we differentiate with respect to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from uncert_cli.core.errors import UserError
from uncert_cli.curvature.subset import Unit


@dataclass
class Call:
    """One call of a unit's module during the current forward pass.

    ``outputs`` are the (pre-clone) tensor outputs that carry gradient; ``output_index`` their
    positions in the module's output (0 for a plain tensor output, the tuple index otherwise).
    ``args``/``kwargs`` are kept (detached) only when the accumulator asked for inputs.
    """

    outputs: list[Tensor]
    output_index: list[int]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_versions: list[int] = field(default_factory=list)
    member: int = 0  # which module of a tied unit made the call (0 for ordinary units)
    shared_inputs: bool = False  # its outputs were expanded to the batch: every input is shared by the examples

    def check_inputs_unmodified(self, unit_name: str) -> None:
        """Inputs are read after the backward pass; an in-place change since the call would
        silently corrupt the curvature, so refuse it.
        """
        tensors = [a for a in self.args if isinstance(a, Tensor)]
        check_unmodified(unit_name, tensors, self.input_versions)


def check_unmodified(unit_name: str, tensors: Sequence[Tensor], versions: Sequence[int]) -> None:
    """Refuse tensors of a unit's call whose in-place version moved on since ``versions`` were read."""
    for t, v in zip(tensors, versions):
        if t._version != v:
            raise UserError(
                f"the input of module {unit_name!r} of the {{param}} was modified in place after the module "
                "ran; the curvature needs it unchanged: make that operation out of place in the model's "
                "forward (e.g. x = x + 1 instead of x += 1)",
                param="model",
            )


def output_entries(output: Any) -> list[Any]:
    """The entries of a module's result that may carry gradient, as :class:`Capture` tracks them: a tensor
    itself, or each entry of a tuple or list (one level); nothing for any other result.
    """
    if isinstance(output, Tensor):
        return [output]
    return list(output) if isinstance(output, (tuple, list)) else []


def _check_layer_output(unit: Unit, module: nn.Module, output: Any) -> None:
    """A Kronecker unit (Linear/Conv) must return its own output, one tensor: every accumulator and the
    output covariance take its curvature from that output and the layer's input. A subclass whose forward
    returns a tuple would otherwise have its first entry read as the layer's output (wrong numbers).
    """
    if unit.structure == "kronecker" and not isinstance(output, Tensor):
        base = next(b.__name__ for b in type(module).__mro__ if b.__module__.startswith("torch.nn"))
        raise UserError(
            f"module {unit.name!r} ({type(module).__name__}, an nn.{base}) returns a {type(output).__name__}, not "
            f"one tensor, and its curvature is built from the layer's own output; leave it out of the fit with {{param}} "
            "(e.g. the other modules' names) or return only the layer's output from its forward",
            param="subset",
        )


def _detach(x: Any) -> Any:
    return x.detach() if isinstance(x, Tensor) else x


class Capture:
    """Forward hooks on every unit; ``calls[i]`` lists the calls of ``units[i]`` this batch.

    Args:
        units: modules to hook.
        keep_inputs: per unit, whether to keep the call's inputs for after the backward pass.
        on_forward: per unit, an optional callback ``(args, kwargs) -> None`` run inside the hook
            (Kronecker accumulators update their input factor there, so inputs need not be kept).
        internal_outputs: per unit, an optional callback ``() -> tensors`` run inside the hook: the
            tensors *inside* the call to propagate the backward vectors to, in place of its outputs
            (a recurrent layer's gate pre-activations, whose gradients give every weight's in one
            product over time). The call's outputs are then left as they are.
    """

    def __init__(
        self,
        units: Sequence[Unit],
        keep_inputs: Sequence[bool],
        on_forward: Sequence[Callable[[tuple[Any, ...], dict[str, Any]], None] | None],
        internal_outputs: Sequence[Callable[[], list[Tensor]] | None] | None = None,
    ) -> None:
        self.units = list(units)
        self.keep_inputs = list(keep_inputs)
        self.on_forward = list(on_forward)
        self.internal_outputs = list(internal_outputs) if internal_outputs is not None else [None] * len(self.units)
        self.calls: list[list[Call]] = [[] for _ in self.units]
        self.active = False
        # Per unit: expand an output every example shares to the batch (see _per_example_output); set by
        # the engine for units whose curvature comes from per-example gradients, with the batch size.
        self.expand_shared: list[bool] = [False] * len(self.units)
        self.batch_size: int | None = None

    def _hook(
        self, i: int, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any, member: int = 0
    ) -> Any:
        if not self.active:
            return None
        internal = self.internal_outputs[i]
        if internal is not None:
            tensors = internal()
            self.calls[i].append(Call(outputs=tensors, output_index=list(range(len(tensors))), member=member))
            return None
        _check_layer_output(self.units[i], module, output)
        single = isinstance(output, Tensor)
        flat = output_entries(output)
        tracked: list[Tensor] = []
        index: list[int] = []
        expanded = False
        for j, o in enumerate(flat):
            if isinstance(o, Tensor) and o.requires_grad and o.is_floating_point():
                if self.expand_shared[i]:
                    per_example = self._per_example_output(module, args, o)
                    expanded, o = expanded or per_example is not o, per_example
                tracked.append(o)
                index.append(j)
                flat[j] = o.clone()
        call = Call(outputs=tracked, output_index=index, member=member, shared_inputs=expanded)
        if self.keep_inputs[i]:
            call.args = tuple(_detach(a) for a in args)
            call.kwargs = {k: _detach(v) for k, v in kwargs.items()}
            call.input_versions = [a._version for a in call.args if isinstance(a, Tensor)]
        cb = self.on_forward[i]
        if cb is not None:
            with torch.no_grad():
                cb(args, kwargs)
        self.calls[i].append(call)
        if not tracked:
            return None
        if single:
            return flat[0]
        return list(flat) if isinstance(output, list) else tuple(flat)

    def _per_example_output(self, module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
        """``output`` expanded to ``(B, ...)`` when every example shares it, else unchanged.

        BERT looks its position embeddings up with position ids of shape ``(1, T)`` and lets the addition
        broadcast them over the batch. The gradient with respect to that ``(1, T, H)`` output is already
        summed over the examples, so no per-example curvature could be formed from it. Expanded here (a
        view; the network computes the same numbers, since it broadcast the output anyway), the output
        has a gradient row per example, and the module's per-example gradients follow from its own
        forward on the shared input. Shared: an embedding looked up with indices of leading size 1, or
        any output of leading size 1 from inputs none of whose sizes is the batch size.
        """
        B = self.batch_size
        if B is None or B == 1 or output.dim() == 0 or output.shape[0] != 1:
            return output
        inputs = [a for a in args if isinstance(a, Tensor)]
        shared = isinstance(module, nn.Embedding) or not any(B in a.shape for a in inputs)
        return output.expand(B, *output.shape[1:]) if shared else output

    @contextmanager
    def hooked(self) -> Iterator[Capture]:
        handles = []
        for i, unit in enumerate(self.units):
            for j, module in enumerate(unit.modules):  # a tied unit hooks each of its modules
                handles.append(
                    module.register_forward_hook(
                        lambda m, a, kw, o, i=i, j=j: self._hook(i, m, a, kw, o, j), with_kwargs=True
                    )
                )
        self.active = True
        try:
            yield self
        finally:
            self.active = False
            for h in handles:
                h.remove()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Re-running a module (generic diagonal) must not record new calls."""
        was = self.active
        self.active = False
        try:
            yield
        finally:
            self.active = was

    def tracked_outputs(self) -> list[Tensor]:
        """All tracked output tensors of this batch, unit by unit, call by call."""
        return [o for calls in self.calls for c in calls for o in c.outputs]

    def split(self, grads: Sequence[Tensor]) -> list[list[list[Tensor]]]:
        """Regroup a flat list (same order as :meth:`tracked_outputs`) as ``[unit][call][output]``."""
        out: list[list[list[Tensor]]] = []
        pos = 0
        for calls in self.calls:
            per_unit = []
            for c in calls:
                per_unit.append(list(grads[pos : pos + len(c.outputs)]))
                pos += len(c.outputs)
            out.append(per_unit)
        return out

    def clear(self) -> None:
        self.calls = [[] for _ in self.units]


def backprop_vectors(
    output: Tensor,
    inputs: Sequence[Tensor],
    V: Tensor,
    *,
    batched: bool,
    retain_graph: bool,
) -> list[Tensor]:
    """Propagate ``V`` (``(K, *output.shape)``) back to each of ``inputs``.

    Returns one ``(K, *input.shape)`` tensor per input (zeros where the output does not depend on
    it). ``batched=True`` uses one vmapped backward (``is_grads_batched``); otherwise a loop over
    ``K`` (each pass but the last retaining the graph).
    """
    K = V.shape[0]
    if K == 1 or not batched:
        per_k = []
        for k in range(K):
            g = torch.autograd.grad(
                output, inputs, grad_outputs=V[k], retain_graph=retain_graph or k < K - 1, allow_unused=True
            )
            per_k.append(g)
        grads = [
            torch.stack([pk[j] if pk[j] is not None else torch.zeros_like(x) for pk in per_k])
            if K > 1
            else (per_k[0][j].unsqueeze(0) if per_k[0][j] is not None else torch.zeros_like(x).unsqueeze(0))
            for j, x in enumerate(inputs)
        ]
        return grads
    g = torch.autograd.grad(
        output, inputs, grad_outputs=V, retain_graph=retain_graph, allow_unused=True, is_grads_batched=True
    )
    return [
        gj if gj is not None else torch.zeros((K, *x.shape), dtype=x.dtype, device=x.device)
        for gj, x in zip(g, inputs)
    ]


def find_batch_dim(shape: Sequence[int], batch_size: int, hint: int | None = None) -> int | None:
    """Dimension of a tensor that indexes the examples: ``hint`` if it fits, else 0 if it has
    size ``batch_size``, else the first dimension of that size, else ``None`` (shared by all
    examples). Ambiguous when another dimension has the batch size too (a sequence of length B
    in a ``batch_first=False`` model); the hint resolves the cases we know about.
    """
    if hint is not None and hint < len(shape) and shape[hint] == batch_size:
        return hint
    for d, s in enumerate(shape):
        if s == batch_size:
            return d
    return None

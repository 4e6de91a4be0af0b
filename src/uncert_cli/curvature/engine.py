"""The data loop: forward with hooks, backward vectors, accumulate sums, reduce, divide by N.

Per batch: one forward pass (hooks record every unit call; Kronecker units fold their inputs into
``A`` right there), the ``K`` loss backward vectors of :func:`loss_backward_vectors`, then the
vectors are propagated to the recorded unit outputs in chunks of ``K`` sized so the propagated
tensors stay below ``GRAD_ELEMENTS`` elements, and every accumulator consumes each chunk.
Everything accumulated is a *sum* over examples; ``reduce`` (e.g. a torch.distributed all-reduce)
sees those sums plus the example count, and only then are means taken.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from uncert_cli.core.errors import UserError
from uncert_cli.core.heap import release_free_heap
from uncert_cli.core.model_state import model_state
from uncert_cli.core.slow_path import announce_slow_path, out_of_memory, vmap_unsupported
from uncert_cli.core.vocabulary import FisherType, Method, Task
from uncert_cli.curvature.blocks import Block, Curvature
from uncert_cli.curvature.diagonal import GenericDiagAccumulator, LinearConvDiagAccumulator
from uncert_cli.curvature.hooks import Capture, backprop_vectors
from uncert_cli.curvature.kronecker import KroneckerAccumulator
from uncert_cli.curvature.live_tap_convs import live_tap_convs
from uncert_cli.curvature.loss_vectors import loss_backward_vectors
from uncert_cli.curvature.norm_diag import BatchNormDiagAccumulator, closed_form_batch_norm
from uncert_cli.curvature.plain_kernels import plain_kernels
from uncert_cli.curvature.recurrent_diag import RecurrentDiagAccumulator
from uncert_cli.curvature.subset import Unit, select_units

# Bound on the elements of the backward vectors propagated at once (K-chunk × tracked outputs),
# split into equal chunks. On the MNIST MLP (9 vectors, batch 256, 2 threads) 3·2**19 runs them
# 2 + 2 + 2 + 2 + 1: exact KFAC 1.95 s / 65 MiB added memory, exact diag 2.19 s / 56 MiB; 2**21
# (3 + 3 + 3): 1.96 s / 77 MiB and 1.85 s / 76 MiB; 2**20 (one at a time): 2.11 s / 54 MiB and
# 2.82 s / 46 MiB. Chosen so that neither method needs more memory than its peers
# (docs/benchmarks.md).
GRAD_ELEMENTS = 3 * 2**19
# Networks with convolutions propagate up to this many at once (128 MiB in float32): resnet18's unit
# outputs take 3.2M elements per backward vector at batch 32, so the bound above ran its 9 vectors one
# at a time; all 9 in one vmapped backward made the exact diagonal 1.2× faster (7.6× → 6.2× the floor,
# 3 interleaved rounds, docs/benchmarks.md), the vectors' memory being small beside such a fit's.
CONV_GRAD_ELEMENTS = 2**25


def vectors_per_chunk(
    K: int, per_vector: int, units: list[Unit], kfac: bool = False, eval_mode: bool | None = None
) -> int:
    """How many of the ``K`` backward vectors to propagate at once, in equal chunks, when one
    vector takes ``per_vector`` elements at the unit outputs (``kfac``: for KFAC's accumulators;
    ``eval_mode`` as :func:`~.norm_diag.closed_form_batch_norm` takes it).
    """
    convolutional = any(isinstance(u.module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for u in units)
    if convolutional and kfac and all(u.structure == "kronecker" or closed_form_batch_norm(u, eval_mode) for u in units):
        # KFAC's G and the closed-form BatchNorm diagonal take the vectors' rows whichever way they come,
        # and torch's "batched" backward (is_grads_batched) runs each conv's and BatchNorm's backward once
        # per vector anyway and then stacks the results: one at a time, resnet18's exact KFAC took 11%
        # fewer CPU seconds and 160 MiB less memory (docs/benchmarks.md). The exact diagonal's square
        # sums put the vectors side by side and keep the batched backward.
        return 1
    bound = CONV_GRAD_ELEMENTS if convolutional else GRAD_ELEMENTS
    k_max = max(1, min(K, bound // max(1, per_vector)))
    return -(-K // -(-K // k_max))  # equal chunks: 9 vectors at most 7 -> 5 + 4
MODIFIED_IN_PLACE = "modified by an inplace operation"  # in autograd's message

# One vmapped backward for all K vectors (``is_grads_batched``) rather than a loop over K. On the
# 784-1024-1024-10 MLP (exact KFAC, K = 10, batch 256, 2 threads) the vmapped backward was faster
# than the loop (see the engine's report); kept switchable for debugging graphs vmap mishandles.
BATCHED_BACKWARD = True


class Accumulator(Protocol):
    unit: Unit
    keep_inputs: bool

    def on_backward(self, calls: list[Any], grads: list[list[Tensor]], batch_size: int) -> None: ...
    def end_batch(self, batch_size: int) -> None: ...
    def sums(self) -> list[Tensor]: ...
    def finalize(self, n_data: int) -> Block: ...


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.get_default_dtype(), torch.device("cpu")


# A binary classifier with one logit (trained with BCEWithLogitsLoss) has a Bernoulli likelihood, which the
# curvature does not implement; the same network with the logits (0, z) is a softmax classifier of the same
# predictions (softmax(0, z)[1] = sigmoid(z)), so that is the way out.
_ONE_LOGIT_ADVICE = ("a one-logit binary classifier (sigmoid, BCEWithLogitsLoss) has no Laplace likelihood here; "
                     "make forward return the two logits torch.cat([torch.zeros_like(z), z], 1) for z of shape "
                     "(batch, 1) (softmax of them is sigmoid(z), the same predictions)")


def check_batch(out: Any, y: Tensor, task: Task, i: int) -> tuple[Tensor, Tensor]:
    """Validate one batch's output/targets; returns output as ``(B, C)`` and targets."""
    if not isinstance(out, Tensor):
        raise UserError(
            f"the model returned {type(out).__name__} on batch {i}, not a tensor; "
            "wrap the model so that forward returns the (batch, outputs) tensor"
        )
    if task == "regression" and out.dim() == 1:
        out = out.unsqueeze(1)
    if out.dim() == 1 and task == "classification":
        raise UserError(
            f"the model output on batch {i} has shape {tuple(out.shape)}, one number per example: "
            f"{_ONE_LOGIT_ADVICE}"
        )
    if out.dim() != 2:
        raise UserError(
            f"the model output on batch {i} has shape {tuple(out.shape)}; expected (batch, outputs) — "
            "flatten extra dimensions in the model"
        )
    B, C = out.shape
    if y.shape[0] != B:
        raise UserError(f"batch {i} has {B} model outputs but {y.shape[0]} targets; check the data loader")
    if not torch.isfinite(out).all():
        raise UserError(f"the model produced NaN/inf on batch {i}; check the checkpoint and input normalisation")
    if task == "classification":
        if y.dim() != 1 or y.is_floating_point() and not torch.equal(y, y.round()):
            raise UserError(
                f"classification targets on batch {i} have shape {tuple(y.shape)} and dtype {y.dtype}; "
                "expected integer class labels of shape (batch,) — use {param} regression for real targets",
                param="task",
            )
        if B and C == 1 and int(y.min()) >= 0 and int(y.max()) == 1:
            raise UserError(f"the model has 1 output and batch {i} has labels 0 and 1: {_ONE_LOGIT_ADVICE}")
        if B and (int(y.min()) < 0 or int(y.max()) >= C):
            raise UserError(
                f"batch {i} has label {int(y.max()) if int(y.max()) >= C else int(y.min())} but the model has "
                f"{C} outputs (labels must be 0..{C - 1}); check {{param}} and the model's output width",
                param="task",
            )
    else:
        if y.numel() != out.numel():
            raise UserError(
                f"regression targets on batch {i} have shape {tuple(y.shape)} but the model output is "
                f"{tuple(out.shape)}; they must match"
            )
        if not torch.isfinite(y).all():
            raise UserError(f"the regression targets on batch {i} contain NaN/inf; clean the data")
    return out, y


def _make_accumulators(
    units: list[Unit], method: Method, dtype: torch.dtype, device: torch.device, capture: Capture
) -> list[Any]:
    accs: list[Any] = []
    for u in units:
        if u.structure == "kronecker":
            acc: Any = (
                KroneckerAccumulator(u, dtype, device) if method == "kfac" else LinearConvDiagAccumulator(u, dtype, device)
            )
        elif RecurrentDiagAccumulator.covers(u):  # under kfac too: recurrent weights keep a diagonal
            acc = RecurrentDiagAccumulator(u, dtype, device, capture)
        elif closed_form_batch_norm(u):
            acc = BatchNormDiagAccumulator(u, dtype, device, capture)
        else:
            acc = GenericDiagAccumulator(u, dtype, device, capture)
        accs.append(acc)
    return accs


def compute_curvature(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    method: Method | str,
    fisher_type: FisherType | str = FisherType.exact,
    task: Task | str = Task.classification,
    mc_samples: int = 1,
    subset: str = "all",
    generator: torch.Generator | None = None,
    on_batch: Callable[[int], None] | None = None,
    reduce: Callable[[list[Tensor]], None] | None = None,
    on_outputs: Callable[[Tensor, Tensor], None] | None = None,
    include_frozen: bool = False,
) -> Curvature:
    """GGN/Fisher curvature of ``model`` over ``batches`` as one block per unit.

    Args:
        model: the trained network; run in eval mode (restored afterwards). Its forward must map
            an input batch to a ``(B, C)`` tensor (``(B,)`` allowed for regression).
        batches: ``(inputs, targets)`` pairs already on the model's device and dtype.
        method: ``"kfac"`` (Kronecker blocks for Linear/Conv, diagonal for the rest) or ``"diag"``.
        fisher_type: ``"exact"`` GGN, ``"mc"`` Fisher with ``mc_samples`` sampled labels, or
            ``"empirical"`` Fisher.
        mc_samples: sampled labels per example for ``fisher_type="mc"``.
        task: ``"classification"`` (cross-entropy on logits) or ``"regression"`` (unit-variance
            Gaussian).
        subset: ``"all"``, ``"last-layer"`` or comma-separated module names.
        generator: random generator for ``fisher_type="mc"``.
        on_batch: called with the number of examples after every batch.
        reduce: called once with every accumulated sum (and, last, a 1-element tensor holding the
            example count); must reduce them in place (all-reduce SUM across processes).
        on_outputs: called per batch with the model's (detached) outputs ``(B, C)`` and targets, so
            that callers can score the MAP network in the same pass (``uncert fit``'s log-likelihood).
        include_frozen: also cover parameters with ``requires_grad=False`` (left out by default).

    Returns:
        :class:`Curvature` with blocks in module registration order; every block is the mean over
        all examples of the per-example curvature.
    """
    method = Method.parse(method, "method")
    if method not in (Method.diag, Method.kfac):
        raise UserError(f"{{param}} {method} is not built by this engine; use 'diag' or 'kfac'", param="method")
    fisher_type = FisherType.parse(fisher_type, "fisher_type")
    task = Task.parse(task, "task")
    if fisher_type == "mc" and mc_samples < 1:
        raise UserError(f"{{param}} must be at least 1, got {mc_samples}", param="mc_samples")

    it = iter(batches)
    first = next(it, None)
    if first is None:
        raise UserError("the data set is empty; the curvature needs at least one example")
    dtype, device = _model_dtype_device(model)
    units = select_units(
        model, subset, example_input=first[0] if subset.strip() == "last-layer" else None, include_frozen=include_frozen
    )

    # Eval mode (dropout off, BatchNorm on running statistics); restore every flag afterwards.
    # Hooked outputs must carry gradient; parameters outside the subset need none.
    chosen = {id(p) for u in units for p in u.params}
    kernels = contextlib.ExitStack()  # eval mode and grad flags, restored per module and parameter afterwards
    kernels.enter_context(model_state(model, requires_grad=lambda p: id(p) in chosen))
    capture = Capture(units, [False] * len(units), [None] * len(units))
    accs = _make_accumulators(units, method, dtype, device, capture)
    capture.keep_inputs = [a.keep_inputs for a in accs]
    capture.on_forward = [getattr(a, "on_forward", None) for a in accs]
    capture.expand_shared = [isinstance(a, GenericDiagAccumulator) for a in accs]
    capture.internal_outputs = [getattr(a, "internal_outputs", None) for a in accs]
    recorders = {a.unit.module: a.record for a in accs if isinstance(a, RecurrentDiagAccumulator)}
    batched = BATCHED_BACKWARD  # switched off for good if the graph has no vmap support
    n = 0
    # recurrent and attention layers on vmap-able kernels, recurrent ones reporting their gates
    kernels.enter_context(plain_kernels(model, recorders))
    kernels.enter_context(live_tap_convs(model))  # convs on small maps skip the taps that read only padding
    try:
        for i, (x, y) in enumerate(itertools.chain([first], it)):
            capture.clear()
            capture.batch_size = int(y.shape[0])
            for acc in accs:
                if hasattr(acc, "start_batch"):
                    acc.start_batch(int(y.shape[0]))
            with capture.hooked():
                out = model(x)
            out, y = check_batch(out, y, task, i)
            if on_outputs is not None:
                on_outputs(out.detach(), y)
            B = out.shape[0]
            V = loss_backward_vectors(out, y, fisher_type, task, mc_samples, generator)  # (K, B, C)
            if fisher_type == "empirical" and not torch.isfinite(V).all():
                raise UserError(f"the loss gradient is NaN/inf on batch {i}; check the checkpoint and targets")
            tracked = capture.tracked_outputs()
            if tracked and out.requires_grad:
                K = V.shape[0]
                per_vector = sum(t.numel() for t in tracked)
                k_chunk = vectors_per_chunk(K, per_vector, units, kfac=method == Method.kfac)
                for k0 in range(0, K, k_chunk):
                    Vc = V[k0 : k0 + k_chunk]
                    last = k0 + k_chunk >= K
                    try:
                        grads = backprop_vectors(out, tracked, Vc, batched=batched, retain_graph=not last)
                    except (RuntimeError, NotImplementedError) as exc:
                        if MODIFIED_IN_PLACE in str(exc):  # autograd's word for the same user-fixable change
                            raise UserError(
                                "a tensor the backward pass needs was modified in place in the {param}'s forward; "
                                "make that operation out of place (e.g. x = x + 1 instead of x += 1)",
                                param="model",
                            ) from None
                        if not batched or Vc.shape[0] == 1 or not (vmap_unsupported(exc) or out_of_memory(exc)):
                            raise
                        # No vmap rule for some op in the graph (or no memory for all vectors at once):
                        # loop over the vectors instead.
                        announce_slow_path("the backward vectors of each batch are propagated", exc)
                        batched = False
                        grads = backprop_vectors(out, tracked, Vc, batched=False, retain_graph=not last)
                    split = capture.split(grads)
                    for acc, calls, g in zip(accs, capture.calls, split):
                        acc.on_backward(calls, g, B)
                    del grads, split
            for acc in accs:
                acc.end_batch(B)
            capture.clear()
            del out, V, tracked  # this batch's graph and vectors, before the heap is trimmed
            if device.type == "cpu":
                release_free_heap()  # each batch starts from the memory in use (core/heap.py)
            n += B
            if on_batch is not None:
                on_batch(B)
    finally:
        kernels.close()
        capture.clear()

    sums = [s for acc in accs for s in acc.sums()]
    count = torch.tensor([float(n)], dtype=torch.float64 if dtype == torch.float64 else torch.float32, device=device)
    if reduce is not None:
        reduce(sums + [count])
    n_total = int(round(float(count.item())))
    if n_total <= 0:
        raise UserError("the data set is empty; the curvature needs at least one example")
    blocks = [acc.finalize(n_total) for acc in accs]
    return Curvature(
        blocks=blocks,
        n_data=n_total,
        task=task,
        method=method,
        fisher_type=fisher_type,
        mc_samples=mc_samples if fisher_type == "mc" else 1,
    )


def estimate_memory(
    model: nn.Module, method: Method, subset: str = "all", example_input: Tensor | None = None,
    include_frozen: bool = False,
) -> int:
    """Bytes the curvature factors of ``model`` will take (element size of the model's dtype).

    Kronecker blocks (``method="kfac"``, Linear/Conv): ``O² + (I+1)²`` elements; every other block
    one element per parameter. ``subset="last-layer"`` uses ``example_input`` for forward order if
    given, else module registration order.
    """
    dtype, _ = _model_dtype_device(model)
    elem = torch.empty((), dtype=dtype).element_size()
    total = 0
    for u in select_units(model, subset, example_input=example_input, include_frozen=include_frozen):
        if method == "kfac" and u.structure == "kronecker":
            w = u.params[0]
            O, I = w.shape[0], w[0].numel() + (1 if len(u.params) == 2 else 0)
            total += O * O + I * I
        else:
            total += u.num_params
    return total * elem

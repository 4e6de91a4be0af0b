"""How much memory a fit will reach at its peak, predicted before any data is touched.

``--max-memory`` (and, without it, the memory the machine has available) is checked against this
prediction, so it has to cover the whole process, not only the factors: the VGG16 KFAC fit that
passed a 4 GiB check on its factor estimate reached 5.77 GiB. The peak is the memory in use now
(libraries, model, data) plus what the fit adds:

* ``weights``: the copy of the weights the factor file keeps, and the cast for another ``--dtype``;
* ``factors``: the curvature sums, which become the blocks in place;
* then the larger of two phases that do not overlap:
  ``batch``, one batch in flight: the activations autograd keeps for the backward pass (measured
  by one probe forward of a single example) with the gradients flowing back through them, the
  backward vectors, and the patch matrices of convolutions;
  ``finish``, the eigendecompositions at the end: every block's eigenvectors (kept for the file),
  plus the largest factor's LAPACK ``syevd`` working set in float64 (input copy, eigenvectors and
  a ``2n²`` workspace).

benchmarks/memory.py measures the prediction against the peak resident set size on a VGG-shaped
network and torchvision's resnet18 (docs/benchmarks.md), tests/cli/test_fit_memory.py on small
networks. Validated for diag and KFAC; EKFAC and kfac-diag reuse KFAC's terms, full and lowrank
(curvlinops' GGN products) use the same batch terms without a measurement of their own.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from uncert_cli.core.memory import current_memory_bytes, format_size
from uncert_cli.core.model_state import model_state
from uncert_cli.curvature import square_sums
from uncert_cli.curvature.conv_input import input_plan
from uncert_cli.curvature.engine import vectors_per_chunk
from uncert_cli.curvature.methods import METHODS
from uncert_cli.curvature.methods.base import SLACK_BYTES, eigh_working_bytes, kronecker_sizes
from uncert_cli.curvature.norm_diag import closed_form_batch_norm
from uncert_cli.curvature.plain_kernels import plain_kernels
from uncert_cli.curvature.recurrent import DirectionRecord, Recorder
from uncert_cli.curvature.recurrent_diag import RecurrentDiagAccumulator
from uncert_cli.curvature.subset import Unit, select_units
from uncert_cli.data.dataset import inputs_to

# The generic diagonal's per-example gradient chunk (diagonal.CHUNK_ELEMENTS).
_DIAG_CHUNK_ELEMENTS = 2**26
# Gradients flowing back through a batch's graph: at their largest about as many bytes again as the
# saved activations (measured ~0.6-1.0x on the benchmark networks; the upper end is used).
_BACKWARD_FACTOR = 1.0
# What the fit adds beyond its tensors (curvature.methods.base.SLACK_BYTES).
_SLACK = SLACK_BYTES
# The C heap's hold on a batch. Tensors below glibc's mmap threshold (which rises to 32 MiB after the
# first large block is freed) come from the heap, which keeps the holes they leave; a batch's later
# requests do not always fit in them (core/heap.py trims it between batches). Measured against the
# same fits with the threshold pinned at 128 KiB (freed blocks go back at once) on benchmarks/sequence.py
# (N = 200): the excess follows the per-example paths, which form and free their chunks again for every
# chunk of vectors and every unit, beside the batch's activations. It was 0.9x the per-example bytes
# counted on the 2-layer LSTM (recurrent weights) and 0.5x on the transformer encoder (the generic
# path's vmapped re-runs), so they are counted twice (the LSTM's peak moved by 40 MiB between runs);
# the same margin on the whole batch charged the BERT classifier's activations (which do not churn)
# and overshot its all-weights peak by 44%. Fits with only Kronecker, Linear/Conv diagonal and
# closed-form BatchNorm blocks have no such path and measured within 3% without it.
# A forward's temporaries outside the covered modules (a plain recurrent layer's, a repeated block's,
# below) are formed and freed op by op in the heap as well, and are counted twice too: at 1.4 times,
# two identical head-only LSTM fits measured 103 and 124 MiB added, the second 4 MiB over its prediction.
_HEAP_CHURN = 2.0


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted peak memory of one fit, in bytes, by what takes it (see the module docstring)."""

    before: int  # in use now: the resident set (CPU) or allocated device memory (CUDA)
    weights: int
    factors: int
    batch: int
    finish: int

    @property
    def peak(self) -> int:
        """The predicted peak of the process during the fit: the memory in use now plus what the fit adds.

        A higher peak the process reached earlier and has since freed (a large data set read, then dropped)
        is not counted: it is not in use, so the fit does not need it again.
        """
        return self.before + self.added

    @property
    def added(self) -> int:
        """What the fit adds to the memory in use now (weight copies, factors, then a batch or the finish)."""
        return self.weights + self.factors + max(self.batch, self.finish)


@dataclass(frozen=True)
class ForwardProbe:
    """What one example's forward pass keeps: bytes saved for backward and unit output elements."""

    saved_bytes: int
    unit_output_elements: int
    output_width: int
    positions: tuple[int, ...]  # per unit: output positions (conv pixels, sequence steps, calls)
    unit_saved_bytes: tuple[int, ...] = ()  # per unit: what autograd saves inside the unit's own forward
    # a plain recurrent forward's largest layer-direction, elements: its input, gate pre-activations
    # and outputs (the list of step outputs and their stack); where the layer is outside the covered
    # modules autograd keeps none of it, but it is all in memory while the layer runs
    recurrent_transient_elements: int = 0
    # KFAC's whole-map Gram sums (curvature/pixel_gram.py) of the convs on small maps, held for the pass
    pixel_sum_elements: int = 0
    block_bytes: int = 0  # the largest repeated block's intermediates (largest_block_bytes)


def probe_forward(model: nn.Module, units: list[Unit], example: Tensor) -> ForwardProbe:
    """Run ``model`` on ``example`` (shape ``(1, *input_shape)``) and count what autograd keeps.

    Tensors saved for backward are counted once per storage; the parameters themselves are not
    (they exist anyway). Requires-grad flags and the training flag are restored.

    Returns:
        Bytes of the tensors autograd saves for one example.
    """
    params = {p.data_ptr() for p in model.parameters()}
    seen: set[tuple[int, int]] = set()
    saved = 0
    unit_saved = [0] * len(units)
    running: list[int] = []  # the units whose forward is running, innermost last

    def pack(t: Tensor) -> Tensor:
        nonlocal saved
        # Counted by the view's own size: a batch is often a view of the whole data set.
        key = (t.data_ptr(), t.numel())
        if key not in seen and t.data_ptr() not in params:
            seen.add(key)
            saved += t.numel() * t.element_size()
            if running:
                unit_saved[running[-1]] += t.numel() * t.element_size()
        return t

    index = {id(u.module): i for i, u in enumerate(units)}
    positions = [0] * len(units)
    pixel_sums: dict[tuple[int, tuple[int, ...]], int] = {}  # by (unit, input size): one sum for all its calls
    outputs = 0
    transient = 0

    def enter_unit(module: nn.Module, args: object) -> None:
        running.append(index[id(module)])

    def count_output(module: nn.Module, args: object, out: object) -> None:
        nonlocal outputs
        if running and running[-1] == index[id(module)]:
            running.pop()
        if isinstance(out, Tensor):
            outputs += out.numel()
            first = units[index[id(module)]].params[0]  # a 0-d parameter (a learned temperature) has no rows
            rows = first.shape[0] if out.dim() > 0 and first.dim() > 0 else 1
            positions[index[id(module)]] += max(1, out.numel() // max(1, rows))
        unit = units[index[id(module)]]
        x = args[0] if isinstance(args, tuple) and args and isinstance(args[0], Tensor) else None
        if unit.structure == "kronecker" and isinstance(module, (nn.Conv1d, nn.Conv2d)) and x is not None:
            spatial = tuple(x.shape[-(module.weight.dim() - 2) :])
            if input_plan(module, spatial).pixels:
                n = module.in_channels * math.prod(spatial)
                pixel_sums[(index[id(module)], spatial)] = n * n + n

    def count_transient(record: DirectionRecord) -> None:
        nonlocal transient
        transient = max(transient, record.inputs.numel() + record.x_proj.numel() + 2 * record.hidden.numel())

    def count_gates(record: DirectionRecord) -> None:
        # a recurrent unit's backward vectors go to its gates, and its starting states are kept
        nonlocal outputs, saved
        count_transient(record)
        outputs += record.x_proj.numel()
        for kept in (record.hidden, record.reset):
            if kept is not None:
                saved += kept.numel() * kept.element_size()

    covered = {u.module for u in units if RecurrentDiagAccumulator.covers(u)}
    recorders: dict[nn.Module, Recorder] = {
        m: (count_gates if m in covered else count_transient) for m in model.modules() if isinstance(m, nn.RNNBase)
    }
    handles = [u.module.register_forward_hook(count_output) for u in units]
    handles += [u.module.register_forward_pre_hook(enter_unit) for u in units]
    chosen = {id(p) for u in units for p in u.params}
    try:
        # on the kernels the fit runs (a plain recurrent forward keeps more than the fused one)
        with model_state(model, requires_grad=lambda p: id(p) in chosen), plain_kernels(model, recorders), \
                torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(example)
        width = int(out[0].numel()) if isinstance(out, Tensor) and out.dim() > 0 else 1
        del out
    finally:
        for h in handles:
            h.remove()
    block = largest_block_bytes(model, example, [u.module for u in units])
    return ForwardProbe(
        saved, outputs, width, tuple(max(1, n) for n in positions), tuple(unit_saved), transient,
        sum(pixel_sums.values()), block,
    )


def largest_block_bytes(model: nn.Module, example: Tensor, covered: list[nn.Module]) -> int:
    """What the largest of ``model``'s repeated blocks without a ``covered`` module holds while it
    runs, for one example: bytes.

    A block is an entry of an ``nn.ModuleList`` or ``nn.Sequential`` (a transformer layer, a residual
    stage); one holding a covered module keeps its intermediates for the backward pass, where the
    probe's saved bytes count them. Where nothing in a block needs a gradient (a fit of the head
    alone), its intermediates are freed as it goes, but many are in memory at once while it runs; what
    autograd would save in it with every weight trainable bounds them (a BERT classifier's head-only
    fit measured 8% over its prediction without it). Requires-grad flags are restored.

    Returns:
        Bytes of the tensors autograd would save inside the largest block for one example (0: no blocks).
    """
    fitted = {id(m) for m in covered}
    blocks = {
        id(child) for m in model.modules() if isinstance(m, (nn.ModuleList, nn.Sequential)) for child in m
        if not any(id(inner) in fitted for inner in child.modules())
    }
    sizes: dict[int, int] = {}
    running: list[int] = []
    seen: set[tuple[int, int]] = set()
    # the weights and their views (a transpose, the packed in-projection's query/key/value parts) exist anyway
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t: Tensor) -> Tensor:
        key = (t.data_ptr(), t.numel())
        if running and key not in seen and t.untyped_storage().data_ptr() not in weights:
            seen.add(key)
            sizes[running[-1]] = sizes.get(running[-1], 0) + t.numel() * t.element_size()
        return t

    def enter(module: nn.Module, args: object) -> None:
        running.append(id(module))

    def leave(module: nn.Module, args: object, out: object) -> None:
        if running and running[-1] == id(module):
            running.pop()

    handles = [m.register_forward_pre_hook(enter) for m in model.modules() if id(m) in blocks]
    handles += [m.register_forward_hook(leave) for m in model.modules() if id(m) in blocks]
    try:
        with model_state(model, requires_grad=lambda p: p.is_floating_point()), plain_kernels(model), \
                torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(example)
        del out
    finally:
        for h in handles:
            h.remove()
    return max(sizes.values(), default=0)


def estimate_fit_memory(
    model: nn.Module,
    *,
    method: str,
    factor_bytes: int,
    example: Tensor,
    batch_size: int,
    examples: int,
    subset: str = "all",
    fisher_type: str = "exact",
    mc_samples: int = 1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
    include_frozen: bool = False,
) -> MemoryEstimate:
    """Predict the peak memory of fitting ``model`` (see the module docstring for the parts).

    Args:
        model: the network as loaded (its own dtype, on the CPU or the fit's device).
        method: the curvature method (diag, kfac, ekfac, kfac-diag, full, lowrank).
        factor_bytes: the curvature's own size in the fit's dtype (the method's factor estimate).
        example: one input ``(1, *input_shape)`` as the model takes it.
        batch_size: examples per batch.
        examples: the data set's size (no batch is larger).
        subset: which modules the fit covers (as ``fit``'s ``subset``).
        fisher_type: with ``mc_samples``, how many backward vectors each example carries.
        mc_samples: sampled labels per example for the Monte-Carlo Fisher.
        dtype: the fit's dtype.
        device: where it runs (default: the CPU).
        include_frozen: cover ``requires_grad=False`` parameters too (as the fit does).

    Returns:
        A :class:`MemoryEstimate` whose ``peak`` is the prediction.
    """
    device = device or torch.device("cpu")
    # The first batched backward imports this (and sympy with it: ~40 MiB, a tenth of a small
    # sequence fit's peak); imported now, it is in the memory in use the prediction starts from.
    importlib.import_module("torch.fx.experimental.symbolic_shapes")
    builder = METHODS[method]
    units = select_units(
        model, subset, example_input=example if subset.strip() == "last-layer" else None, include_frozen=include_frozen
    )
    element = torch.empty((), dtype=dtype).element_size()
    model_element = next((p.element_size() for p in model.parameters() if p.is_floating_point()), 4)
    scale = element / model_element
    state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    weights = state_bytes + (int(param_bytes * scale) if scale != 1 else 0)
    on_device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if device.type == "cuda" and on_device.type != "cuda":
        weights += int(param_bytes * scale)  # the model moves onto the device for the fit

    model_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    probe = probe_forward(model, units, inputs_to(example, on_device, model_dtype).clone())
    B = max(1, min(batch_size, examples))
    vectors = {"exact": max(1, probe.output_width - 1), "mc": mc_samples, "empirical": 1}.get(fisher_type, 1)
    activations = int(B * probe.saved_bytes * scale)
    backward = int(activations * _BACKWARD_FACTOR)
    per_vector = B * probe.unit_output_elements
    chunk = vectors_per_chunk(vectors, per_vector, units, kfac=method == "kfac", eval_mode=True)  # as the engine chunks them
    propagated = chunk * per_vector * element * 2  # the vectors at the unit outputs, and their rows
    loss_vectors = vectors * B * probe.output_width * element
    patches = 0
    square_scratch = 0
    kron_units = [(i, u) for i, u in enumerate(units) if u.structure == "kronecker"]
    for i, u in kron_units:
        O, I = kronecker_sizes(u)
        rows = B * probe.positions[i] * I * element
        if builder.keeps_all_patches:
            patches += rows  # each layer's patches, copied once, stay until the batch ends
            # one layer at a time squares its per-example gradients (or position-pair products)
            scratch = square_sums.scratch_elements(chunk, B, probe.positions[i], O, I) * element
            square_scratch = max(square_scratch, scratch)
        else:
            patches = max(patches, rows)  # one layer's patches at a time (copied once from a strided view)
    patches += square_scratch
    # Diagonal blocks of other modules form per-example gradients in bounded chunks, one unit at a time:
    # a recurrent unit one weight's (squared in place), the generic path all of a unit's, and their squares.
    per_example = 0  # bytes
    grads: float
    for i, u in enumerate(units):
        if u.structure == "kronecker":
            continue
        if RecurrentDiagAccumulator.covers(u):
            grads = min(_DIAG_CHUNK_ELEMENTS, chunk * B * max(p.numel() for p in u.params)) * element
            grads *= _HEAP_CHURN
        elif closed_form_batch_norm(u, eval_mode=True):  # the fit runs in eval mode
            # x̂ of every BatchNorm is kept for the batch; g·x̂ is formed for one at a time
            normalised = B * probe.positions[i] * u.params[0].shape[0]
            patches += normalised * element
            grads = chunk * normalised * element
        else:
            grads = generic_diag_bytes(u, probe.unit_saved_bytes[i] * scale, B, chunk, element) * _HEAP_CHURN
        per_example = max(per_example, int(grads))
    backward_phase = activations + backward + propagated + loss_vectors + patches + per_example
    # The forward itself: what it keeps, and, where a recurrent layer runs with nothing to keep (outside
    # the covered modules), that layer's gates and outputs while it runs, with its per-step temporaries.
    transient = int(B * probe.recurrent_transient_elements * element * _HEAP_CHURN)
    transient = max(transient, int(B * probe.block_bytes * scale * _HEAP_CHURN))
    batch = max(backward_phase, activations + transient) + _SLACK
    if method == "kfac":  # KFAC's whole-map Gram sums stay from the first batch to the end of the pass
        batch += probe.pixel_sum_elements * element

    finish = builder.finish_bytes(units, element)  # the method's last phase (eigendecompositions)
    return MemoryEstimate(
        before=current_memory_bytes(device), weights=weights, factors=int(factor_bytes),
        batch=int(batch), finish=int(finish),
    )


def generic_diag_bytes(unit: Unit, saved_per_example: float, batch: int, vectors: int, element: int) -> int:
    """Peak bytes of the generic diagonal path (``diagonal.GenericDiagAccumulator``) on one chunk.

    It re-runs ``unit``'s forward under ``vmap`` for ``b`` examples at once (``b`` bounded by its
    per-example gradient chunk), keeping what that forward saves (``saved_per_example`` bytes per
    example, measured by the probe), pulls each of the ``vectors`` backward vectors through it (the
    gradients flowing back: about as many bytes again per vector, as ``_BACKWARD_FACTOR`` says for the
    whole network), and forms the ``(vectors, b, num_params)`` per-example gradients and their squares.
    On the transformer's attention (0.4 MiB saved per example of 64 steps, 1 MiB of gradients) the
    pullback of 100 examples peaked at 212 MiB; counting only two copies of the gradients left the
    prediction 13-34% under the peak.

    Returns:
        Bytes: the gradients (three copies, see below) and the re-run's saved tensors and gradients.
    """
    b = max(1, min(batch, _DIAG_CHUNK_ELEMENTS // max(1, vectors * unit.num_params)))
    # the per-example gradients and their squares; three copies for attention: its packed in-projection
    # is used through three views (query, key, value), each getting a gradient before the pullback joins
    # them (the attention's pullback alone peaked at 2.1x its gradients)
    copies = 3 if isinstance(unit.module, nn.MultiheadAttention) else 2
    grads = copies * vectors * b * unit.num_params * element
    rerun = b * saved_per_example * (1 + vectors * _BACKWARD_FACTOR)
    return int(grads + rerun)


def describe(estimate: MemoryEstimate) -> str:
    """One line: the peak and its largest parts (for the fit's start-up message and errors)."""
    phase = ("eigendecompositions", estimate.finish) if estimate.finish > estimate.batch else ("one batch", estimate.batch)
    return (
        f"about {format_size(estimate.peak)} at its peak (in use now {format_size(estimate.before)}, plus "
        f"factors {format_size(estimate.factors)}, weight copies {format_size(estimate.weights)}, "
        f"{phase[0]} {format_size(phase[1])})"
    )


__all__ = ["MemoryEstimate", "describe", "eigh_working_bytes", "estimate_fit_memory", "probe_forward"]

"""Kronecker factors of Linear/Conv modules (KFAC, "expand" flavour) and the patch math they share with the exact diagonal.

Convention (matches curvlinops' ``KFACLinearOperator(kfac_approx="expand")`` with a mean-reduced
loss and ``separate_weight_and_bias=False``, so the tests compare to it directly). With ``a_{n,p}``
the input (patch) of example ``n`` at position ``p`` (``P`` positions: sequence entries, conv output
pixels, and the calls of a module used several times per forward) with a 1 appended for the bias,
and ``g_{k,n,p} = J_{n,p}ᵀ v_{k,n}`` the backward vector at the module output::

    A = 1/N Σ_n (1/P) Σ_p a_{n,p} a_{n,p}ᵀ           (I+1, I+1)   mean over positions
    G = 1/N Σ_n Σ_k Σ_p g_{k,n,p} g_{k,n,p}ᵀ          (O, O)       sum over positions

so the bias-bias entry of ``A`` is 1 and ``G ⊗ A`` is exact for a Linear on 2-D input with one
example (Ritter et al. 2018 / Martens & Grosse 2015). Putting ``1/P`` on ``A`` keeps ``G`` at the
scale of a per-example GGN with respect to the module output; curvlinops does the same. (For a
module called ``c`` times curvlinops divides each call by its own positions, i.e. ``A`` is a sum
over calls; we treat calls as positions and average over all of them.)
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uncert_cli.core.errors import UserError
from uncert_cli.curvature.blocks import KroneckerBlock
from uncert_cli.curvature.conv_input import InputPlan, Positions, Taps, as_2d, input_plan, tap_block, tap_columns
from uncert_cli.curvature.gram import gram_lower_, mirror_lower_
from uncert_cli.curvature.hooks import find_batch_dim
from uncert_cli.curvature.huge_pages import factor_zeros
from uncert_cli.curvature.pixel_gram import fold_pixel_gram, pixel_selection
from uncert_cli.curvature.shift_gram import add_shift_gram_
from uncert_cli.curvature.subset import Unit, conv_padding


def conv_patch_rows(
    module: nn.Conv1d | nn.Conv2d, x: Tensor, taps: Taps | None = None, positions: Positions | None = None
) -> Tensor:
    """Input patches of a conv, examples first and positions as rows: ``(B, P, I)`` with
    ``I = C_in·∏kernel`` (in the order of ``weight.reshape(O, -1)``) and ``P`` output positions.

    The patches are a strided view of the zero-padded input (``Tensor.unfold`` per spatial
    dimension, every ``dilation``-th entry of a window), copied once into this layout. On CPU this
    beats ``F.unfold`` (im2col: 250 ms against 11 ms for a 32×256×2×2 batch with 3×3 kernels, the
    largest single cost of the exact diagonal on resnet18) and the identity-kernel convolution used
    before for few-channel inputs (56 ms against 30 ms for MNIST's 256×1×28×28 with 5×5 kernels).
    With ``taps`` (see :func:`live_taps`) only those kernel offsets are copied: ``I`` is then
    ``C_in·∏len(taps)``, the columns :func:`tap_columns` lists; with ``positions`` only those output
    positions (``P = ∏(p1 − p0)``).
    """
    padding = conv_padding(module)
    assert padding is not None  # supported_structure() guarantees it
    spatial = 1 if isinstance(module, nn.Conv1d) else 2
    if x.dim() == spatial + 1:  # unbatched input
        x = x.unsqueeze(0)
    pad: list[int] = []
    for p in reversed(padding):  # F.pad lists the last dimension first
        pad += [p, p]
    view = F.pad(x, pad) if any(padding) else x
    for d, (k, s, dil) in enumerate(zip(module.kernel_size, module.stride, module.dilation)):
        view = view.unfold(2 + d, dil * (k - 1) + 1, s)  # windows appended as the last dimension
        if dil > 1:
            view = view[..., ::dil]
    for d, (p0, p1) in enumerate(positions or ()):
        view = view.narrow(2 + d, p0, p1 - p0)
    for d, kept in enumerate(taps or ()):
        if len(kept) == view.shape[2 + spatial + d]:
            continue
        if kept == tuple(range(kept[0], kept[-1] + 1)):
            view = view.narrow(2 + spatial + d, kept[0], len(kept))
        else:
            view = view.index_select(2 + spatial + d, torch.tensor(kept, device=view.device))
    # view: (B, C, P_1[, P_2], k_1[, k_2]) -> (B, P_1[, P_2], C, k_1[, k_2])
    order = [0, *range(2, 2 + spatial), 1, *range(2 + spatial, 2 + 2 * spatial)]
    B, C = view.shape[0], view.shape[1]
    return view.permute(order).reshape(B, -1, C * math.prod(view.shape[2 + spatial :]))


def conv_patches(module: nn.Conv1d | nn.Conv2d, x: Tensor) -> Tensor:
    """Unfolded input patches of a conv: ``(B, I, P)`` (a transposed view of :func:`conv_patch_rows`)."""
    return conv_patch_rows(module, x).transpose(1, 2)


def output_rows(module: nn.Module, g: Tensor) -> Tensor:
    """Backward vectors at the module output as rows ``(R', O)``; ``g`` is ``(K, *output.shape)``."""
    if isinstance(module, nn.Linear):
        return g.reshape(-1, g.shape[-1])
    # Conv output (K, B, O, *spatial): channels last, then rows.
    O = g.shape[2]
    return g.reshape(g.shape[0] * g.shape[1], O, -1).transpose(1, 2).reshape(-1, O)


def per_example_rows(
    module: nn.Module, x: Tensor, g: Tensor, batch_size: int, default_batch_dim: int | None = None
) -> tuple[Tensor, Tensor] | None:
    """Inputs ``(B, P, I)`` and backward vectors ``(K, B, P, O)`` of one Linear/Conv call, examples first.

    ``g`` is ``(K, *output.shape)``. A Linear's example dimension is the first of its input's leading
    dimensions with size ``B`` (so ``(T, B, I)`` sequence-first inputs work); if none has that size,
    ``default_batch_dim`` is used, or None is returned when it is None. Conv inputs are ``(B, C, ...)``.
    """
    bd = example_dim(module, x, batch_size, default_batch_dim)
    if bd is None:
        return None
    return per_example_inputs(module, x, batch_size, bd), per_example_outputs(module, g, batch_size, bd)


def example_dim(module: nn.Module, x: Tensor, batch_size: int, default_batch_dim: int | None = None) -> int | None:
    """The dimension of a Linear/Conv input that indexes examples (see :func:`per_example_rows`)."""
    if not isinstance(module, nn.Linear):
        return 0
    bd = find_batch_dim(x.shape[:-1], batch_size)
    return default_batch_dim if bd is None else bd


def per_example_inputs(module: nn.Module, x: Tensor, batch_size: int, batch_dim: int) -> Tensor:
    """The input rows of one Linear/Conv call, ``(B, P, I)`` (conv patches are copied once)."""
    if isinstance(module, nn.Linear):
        return x.movedim(batch_dim, 0).reshape(batch_size, -1, x.shape[-1])
    return conv_patch_rows(cast(nn.Conv1d | nn.Conv2d, module), x)


def per_example_outputs(module: nn.Module, g: Tensor, batch_size: int, batch_dim: int) -> Tensor:
    """Backward vectors ``(K, *output.shape)`` at one Linear/Conv call's output as ``(K, B, P, O)`` (a view)."""
    if isinstance(module, nn.Linear):
        return g.movedim(batch_dim + 1, 1).reshape(g.shape[0], batch_size, -1, g.shape[-1])
    O = g.shape[2]
    return g.reshape(g.shape[0], batch_size, O, -1).transpose(2, 3)


class KroneckerAccumulator:
    """Running sums of one Linear/Conv unit's factors (see module docstring for the scaling).

    The input factor is updated inside the forward hook (:meth:`on_forward`), so inputs are never
    kept; the output factor is updated per chunk of backward vectors (:meth:`on_backward`).
    """

    keep_inputs = False

    def __init__(self, unit: Unit, dtype: torch.dtype, device: torch.device) -> None:
        self.unit = unit
        weight = unit.params[0]
        O = weight.shape[0]
        I = weight[0].numel()
        self.has_bias = len(unit.params) == 2
        # One (I+1)² sum whose lower triangle holds Σ a aᵀ, the bias row Σ aᵀ and the count in
        # the corner, so that it becomes ``A`` in place (no copy at the end).
        size = I + 1 if self.has_bias else I
        self.a_full = factor_zeros(size, size, dtype, device)
        self.aa_sum = self.a_full[:I, :I]
        self.gg_sum = factor_zeros(O, O, dtype, device)
        self._plans: dict[tuple[int, ...], InputPlan] = {}  # by spatial input shape
        self._columns: dict[Taps, Tensor] = {}  # the patch columns of some kernel taps (tap_columns)
        # By spatial input shape, for inputs planned as whole maps: their Gram sum M (lower triangle)
        # and their sum, folded into the factor once, by :meth:`sums` (see pixel_gram).
        self._pixel_sums: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {}
        # 1 once ``a_full`` holds a lower triangle only (a Gram product over all columns): then it
        # must be mirrored. A tensor so that ``reduce`` sums it with the factors across processes.
        self.lower_only = torch.zeros(1, dtype=dtype, device=device)
        self.touched = torch.zeros(I, dtype=dtype, device=device)  # columns the live-tap blocks cover (> 0)
        self._reset_batch()

    def _reset_batch(self) -> None:
        self._calls: list[tuple[Tensor, int]] = []  # inputs of this batch's calls, with versions
        self._rows_batch = 0
        self.batch_size = 0

    def start_batch(self, batch_size: int) -> None:
        self._reset_batch()
        self.batch_size = batch_size

    def _plan(self, x: Tensor) -> InputPlan:
        """:func:`~.conv_input.input_plan` for this conv's input ``x`` (batched or not), by its size."""
        module = cast(nn.Conv1d | nn.Conv2d, self.unit.module)
        key = tuple(x.shape[-(module.weight.dim() - 2) :])
        if key not in self._plans:
            self._plans[key] = input_plan(module, key)
        return self._plans[key]

    def _add_input(self, x: Tensor, alpha: float) -> None:
        """``A += alpha·Σ a aᵀ`` and the bias row ``+= alpha·Σ a`` over one call's input rows."""
        module = self.unit.module
        if isinstance(module, nn.Linear):
            self._add_rows(x.reshape(-1, x.shape[-1]), alpha)
            return
        conv = cast(nn.Conv1d | nn.Conv2d, module)
        plan = self._plan(x)
        if plan.pixels:
            self._add_pixels(conv, x, alpha)
            return
        if plan.shift:  # stride 1 on a large map: no patches at all
            padding = conv_padding(conv)
            assert padding is not None
            batched = x if x.dim() == conv.weight.dim() else x.unsqueeze(0)
            image = batched if batched.dim() == 4 else batched.unsqueeze(2)  # Conv1d: one row
            sums = add_shift_gram_(self.aa_sum, image, as_2d(conv.kernel_size, 1), as_2d(padding, 0), alpha)
            self.lower_only.fill_(1)
            if self.has_bias:
                self.a_full[-1, :-1].add_(sums, alpha=alpha)
            return
        for positions, taps in plan.parts:
            patches = conv_patch_rows(conv, x, taps, positions)  # (B, P', I'), contiguous
            rows = patches.reshape(-1, patches.shape[2])
            if taps is None:
                self._add_rows(rows, alpha)
            else:  # every position's taps (no position group): a symmetric block, no mirroring needed
                self._add_partial(conv, taps, rows, alpha, symmetric=positions is None)

    def _add_pixels(self, conv: nn.Conv1d | nn.Conv2d, x: Tensor, alpha: float) -> None:
        """``M += alpha·Σ_b x_b x_bᵀ`` and ``s += alpha·Σ_b x_b`` over whole input maps, pixel-major."""
        spatial = conv.weight.dim() - 2
        batched = x if x.dim() == spatial + 2 else x.unsqueeze(0)
        rows = batched.movedim(1, -1).reshape(batched.shape[0], -1)  # (B, S·C): a copy of the input
        key = tuple(x.shape[-spatial:])
        if key not in self._pixel_sums:
            n = rows.shape[1]
            self._pixel_sums[key] = factor_zeros(n, n, rows.dtype, rows.device), rows.new_zeros(n)
        gram, total = self._pixel_sums[key]
        gram_lower_(gram, rows, alpha)
        total.add_(rows.sum(0), alpha=alpha)

    def _fold_pixels(self) -> None:
        """Add every whole-map Gram sum into ``A`` through the patch selections (once; they are freed)."""
        if not self._pixel_sums:
            return
        conv = cast(nn.Conv1d | nn.Conv2d, self.unit.module)
        C, T = conv.in_channels, math.prod(conv.kernel_size)
        for key, (gram, total) in self._pixel_sums.items():
            taps, selection = pixel_selection(conv, key)
            u, v, tiles, sums = fold_pixel_gram(gram, total, selection)
            columns = tap_columns(conv, taps).to(gram.device)
            live = columns[: selection.shape[1]]  # channel 0's columns: the live taps' offsets
            r, c = self.aa_sum.stride()
            grid = self.aa_sum.as_strided((T, T, C, C), (r, c, T * r, T * c), self.aa_sum.storage_offset())
            grid.index_put_((live[u], live[v]), tiles, accumulate=True)  # [tap, tap, channel, channel]
            grid.index_put_((live[v], live[u]), tiles.transpose(1, 2), accumulate=True)
            self.touched[columns] = 1  # a symmetric block: no mirroring needed
            if self.has_bias:
                self.a_full[-1, :-1].index_add_(0, columns, sums.reshape(-1))
        self._pixel_sums.clear()

    def _add_partial(self, conv: nn.Conv1d | nn.Conv2d, taps: Taps, rows: Tensor, alpha: float, symmetric: bool) -> None:
        """The Gram product over the columns of ``taps`` only (the rest of ``A`` gets nothing from
        these rows), added to their block of ``A`` through a strided view: both triangles when
        ``symmetric``, else the lower one like every full product. Nothing is kept between batches.
        """
        if taps not in self._columns:
            self._columns[taps] = tap_columns(conv, taps).to(rows.device)
        columns = self._columns[taps]
        part = torch.zeros(rows.shape[1], rows.shape[1], dtype=rows.dtype, device=rows.device)
        gram_lower_(part, rows, alpha)
        if symmetric:
            mirror_lower_(part)
            self.touched[columns] = 1
        else:
            self.lower_only.fill_(1)
        block = tap_block(self.aa_sum, conv, taps)
        if block is not None:
            block.add_(part.view(block.shape))
        else:  # taps that are no range (a stride steps over some): gather and scatter
            self.aa_sum[columns.unsqueeze(1), columns] += part
        if self.has_bias:
            self.a_full[-1, :-1].index_add_(0, columns, rows.sum(0), alpha=alpha)

    def _add_rows(self, rows: Tensor, alpha: float) -> None:
        """The Gram product over all columns (lower triangle) and the bias row."""
        gram_lower_(self.aa_sum, rows, alpha)
        self.lower_only.fill_(1)
        if self.has_bias:
            self.a_full[-1, :-1].add_(rows.sum(0), alpha=alpha)

    def on_forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Fold one call's inputs into ``A`` straight away (no per-batch scratch matrix).

        The weight ``1/P`` needs ``P`` = rows per example over *all* calls of the batch. For the
        usual single call it is known at the call. A second call of a shared module re-weights
        the earlier calls of the batch (recomputing their Gram matrices from the kept inputs), so
        shared modules pay one extra product per earlier call; nothing else does.
        """
        x = args[0].detach()
        B = self.batch_size
        R_prev = self._rows_batch
        R_new = R_prev + (x.shape[:-1].numel() if isinstance(self.unit.module, nn.Linear) else self._positions(x))
        if R_prev:
            for x_prev, version in self._calls:
                if x_prev._version != version:
                    raise UserError(
                        f"the input of shared module {self.unit.name!r} of the {{param}} was modified in place "
                        "between two of its calls; the curvature needs it unchanged: make that operation out "
                        "of place in the model's forward (e.g. x = x + 1 instead of x += 1)",
                        param="model",
                    )
                self._add_input(x_prev, B / R_new - B / R_prev)
        self._add_input(x, B / R_new)
        self._calls.append((x, x._version))
        self._rows_batch = R_new

    def _positions(self, x: Tensor) -> int:
        """Rows a conv input gives: examples × output positions."""
        module = cast(nn.Conv1d | nn.Conv2d, self.unit.module)
        spatial = module.weight.dim() - 2
        padding = conv_padding(module)
        assert padding is not None
        count = x.shape[0] if x.dim() == spatial + 2 else 1
        for n, k, s, dil, pad in zip(x.shape[-spatial:], module.kernel_size, module.stride, module.dilation, padding):
            count *= (n + 2 * pad - dil * (k - 1) - 1) // s + 1
        return count

    def on_backward(self, calls: list[Any], grads: list[list[Tensor]], batch_size: int) -> None:
        for g in grads:
            if not g:
                continue
            gram_lower_(self.gg_sum, output_rows(self.unit.module, g[0]))

    def end_batch(self, batch_size: int) -> None:
        if self._rows_batch and self.has_bias:
            self.a_full[-1, -1] += batch_size
        self._reset_batch()

    def sums(self) -> list[Tensor]:
        """Running sums (in place, for ``reduce``); whole-map Gram sums are folded into ``A`` first."""
        self._fold_pixels()
        return [self.a_full, self.gg_sum, self.lower_only, self.touched]

    def finalize(self, n_data: int) -> KroneckerBlock:
        """The block, built in place from the sums (the accumulator is spent afterwards)."""
        self._fold_pixels()  # done already where the engine called sums()
        A = self.a_full
        if bool(self.lower_only.item()):
            mirror_lower_(A, scale=1 / n_data)
        else:  # only symmetric blocks (live taps, whole-map Gram sums): scale what they touched
            if self.has_bias:
                A[:-1, -1] = A[-1, :-1]
            touched = self.touched.nonzero().flatten()
            if 3 * len(touched) >= len(self.touched):  # most columns: one contiguous pass (the rest is 0)
                A.mul_(1 / n_data)
            else:  # a few (layer4's centre taps): gather and scatter only those rows and columns
                if self.has_bias:
                    touched = torch.cat([touched, touched.new_tensor([A.shape[0] - 1])])
                index = touched.unsqueeze(1), touched
                A[index] = A[index] / n_data
        G = mirror_lower_(self.gg_sum, scale=1 / n_data)
        return self._block(A, G)

    def _block(self, A: Tensor, G: Tensor) -> KroneckerBlock:
        u = self.unit
        return KroneckerBlock(
            module=u.name,
            param_names=u.param_names,
            param_shapes=tuple(tuple(p.shape) for p in u.params),
            input_factor=A,
            output_factor=G,
        )

"""``nn.RNN``, ``nn.LSTM`` and ``nn.GRU`` written out in plain tensor operations.

PyTorch runs recurrent layers through fused kernels (cuDNN, oneDNN/mkldnn, ``_VF``) that have no
forward-mode derivative and no batching rule: ``torch.func.vmap`` over examples (per-example
gradients for the exact diagonal), ``jvp`` (the linearised predictives) and batched backward passes
(``is_grads_batched``) all fail on them.  :func:`recurrent_forward` computes the same function with
elementwise operations and ``F.linear``, which every ``torch.func`` transform supports; it reads the
parameters through ``getattr`` at call time, so ``functional_call`` can substitute them.

Shapes follow ``nn.RNNBase``: input ``(B, T, F)`` when ``batch_first`` else ``(T, B, F)`` (or unbatched
``(T, F)``); hidden state ``(L·D, B, H_out)`` with layers outermost and directions inner; the output
``(B, T, D·H_out)`` (or ``(T, B, D·H_out)``).  Inter-layer dropout is a training-time operation and is
not applied (analysis always runs in eval mode).

A ``record`` callback, when given, receives one :class:`DirectionRecord` per layer and direction: the
tensors from which every weight's per-example gradient is one matrix product over time steps
(:mod:`uncert_cli.curvature.recurrent_diag` uses them for the exact diagonal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uncert_cli.core.errors import UserError

__all__ = ["DirectionRecord", "recurrent_forward"]


@dataclass
class DirectionRecord:
    """What one layer-direction of a recurrent module saw in one call, time-major.

    Every gate pre-activation is ``x_proj[t] + h_proj[t]`` with ``x_proj = inputs W_ihᵀ + b_ih`` and
    ``h_proj[t] = hidden[t] W_hhᵀ + b_hh``, so the gradient with respect to ``x_proj`` (which stays in
    the graph) is the gradient with respect to the gates, and a weight's gradient is a sum over time
    of outer products with ``inputs`` or ``hidden``.  GRU's candidate gate sees ``r ⊙ h_proj``: its
    ``h_proj`` gradient is the ``x_proj`` one times ``reset``.
    """

    suffix: str  # "_l0", "_l1_reverse": the module's parameter names end in it
    inputs: Tensor  # (T, B, F) the layer's input, detached
    hidden: Tensor  # (T, B, H_out) the state each step started from, detached
    x_proj: Tensor  # (T, B, G) input-side gate pre-activations, G = 4H (LSTM), 3H (GRU), H (RNN)
    reset: Tensor | None  # (T, B, H) GRU's reset gate r_t, detached; None otherwise


Recorder = Callable[[DirectionRecord], None]


def _step(mode: str, x_proj: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor, b_hh: Tensor | None,
          w_hr: Tensor | None, resets: list[Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
    """One time step of one layer and direction; ``x_proj = x W_ihᵀ + b_ih`` is precomputed.
    A GRU step appends its reset gate to ``resets`` when given.
    """
    h_proj = F.linear(h, w_hh, b_hh)
    if mode == "LSTM":
        i, f, g, o = (x_proj + h_proj).chunk(4, dim=-1)
        assert c is not None  # an LSTM carries a cell state
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        if w_hr is not None:
            h_new = F.linear(h_new, w_hr)
        return h_new, c_new
    if mode == "GRU":
        xr, xz, xn = x_proj.chunk(3, dim=-1)
        hr, hz, hn = h_proj.chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        if resets is not None:
            resets.append(r.detach())
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h, None
    pre = x_proj + h_proj
    return (torch.tanh(pre) if mode == "RNN_TANH" else torch.relu(pre)), None


def _direction(module: nn.RNNBase, layer: int, reverse: bool, seq: Tensor, h: Tensor,
               c: Tensor | None, record: Recorder | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Run one layer in one direction over ``seq`` ``(T, B, F)``: ``(outputs (T, B, H_out), h_T, c_T)``."""
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    w_ih = getattr(module, f"weight_ih{suffix}")
    w_hh = getattr(module, f"weight_hh{suffix}")
    b_ih = getattr(module, f"bias_ih{suffix}") if module.bias else None
    b_hh = getattr(module, f"bias_hh{suffix}") if module.bias else None
    w_hr = getattr(module, f"weight_hr{suffix}", None) if getattr(module, "proj_size", 0) > 0 else None
    x_proj = F.linear(seq, w_ih, b_ih)  # all time steps at once
    steps = range(seq.shape[0] - 1, -1, -1) if reverse else range(seq.shape[0])
    outputs: list[Tensor] = [None] * seq.shape[0]  # type: ignore[list-item]
    started: list[Tensor] = [None] * seq.shape[0]  # type: ignore[list-item]
    resets: list[Tensor] | None = [] if record is not None and module.mode == "GRU" else None
    # unbind, not x_proj[t]: the backward of T indexings writes T zero-filled (T, B, G) gradients
    # (T² work, which dominated the curvature pass), that of unbind stacks the T step gradients once.
    x_steps = x_proj.unbind(0)
    for t in steps:
        started[t] = h
        h, c = _step(module.mode, x_steps[t], h, c, w_hh, b_hh, w_hr, resets)
        outputs[t] = h
    if record is not None:
        reset = None
        if resets is not None:
            reset = torch.stack(resets[::-1] if reverse else resets)  # back in time order
        record(DirectionRecord(suffix, seq.detach(), torch.stack(started).detach(), x_proj, reset))
    return torch.stack(outputs), h, c


def recurrent_forward(
    module: nn.RNNBase, input: Tensor, hx: Any = None, record: Recorder | None = None
) -> tuple[Tensor, Any]:
    """The output of ``module(input, hx)`` computed with plain tensor operations (see module docstring);
    ``record`` receives each layer-direction's :class:`DirectionRecord`, layers outermost.

    Raises:
        UserError: for a packed sequence, which this path does not unpack.
    """
    if isinstance(input, nn.utils.rnn.PackedSequence):
        raise UserError(
            f"{type(module).__name__} received a packed sequence; uncert analyses padded (B, T, F) tensors: "
            "pass padded sequences to the recurrent layer"
        )
    if input.dim() not in (2, 3):  # as the fused module says it (else a 4-D batch ran on, broadcasting)
        raise ValueError(f"{type(module).__name__}: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
    batched = input.dim() == 3
    seq = input if batched else input.unsqueeze(1 if not module.batch_first else 0)
    if module.batch_first:
        seq = seq.transpose(0, 1)  # (T, B, F)
    directions = 2 if module.bidirectional else 1
    hidden_out = module.proj_size if getattr(module, "proj_size", 0) > 0 else module.hidden_size
    batch = seq.shape[1]
    lstm = module.mode == "LSTM"
    if hx is None:
        h0 = seq.new_zeros(module.num_layers * directions, batch, hidden_out)
        c0 = seq.new_zeros(module.num_layers * directions, batch, module.hidden_size) if lstm else None
    else:
        h0, c0 = (hx if lstm else (hx, None))
        if not batched:
            h0 = h0.unsqueeze(1)
            c0 = c0.unsqueeze(1) if c0 is not None else None
    h_last: list[Tensor] = []
    c_last: list[Tensor] = []
    layer_input = seq
    for layer in range(module.num_layers):
        outs = []
        for d in range(directions):
            k = layer * directions + d
            out, h, c = _direction(module, layer, d == 1, layer_input, h0[k], c0[k] if c0 is not None else None,
                                 record)
            outs.append(out)
            h_last.append(h)
            if c is not None:
                c_last.append(c)
        layer_input = torch.cat(outs, dim=-1) if directions == 2 else outs[0]
    output = layer_input.transpose(0, 1) if module.batch_first else layer_input
    h_n = torch.stack(h_last)
    c_n = torch.stack(c_last) if lstm else None
    if not batched:
        output = output.squeeze(0 if module.batch_first else 1)
        h_n = h_n.squeeze(1)
        c_n = c_n.squeeze(1) if c_n is not None else None
    return output, ((h_n, c_n) if lstm else h_n)

"""Run a model on kernels that every ``torch.func`` transform can differentiate.

Fused kernels make a model fast but opaque to the transforms uncert needs: recurrent layers
(``mkldnn_rnn_layer``, cuDNN) have no forward-mode derivative and no batching rule, and the
attention fast paths (``_native_multi_head_attention``, ``_transformer_encoder_layer_fwd``) and
flash/efficient SDPA kernels have no forward-mode derivative.  Inside :func:`plain_kernels` the
recurrent layers run :func:`~uncert_cli.curvature.recurrent.recurrent_forward` and attention takes
its composite ("math") path, which computes the same function with differentiable operations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from torch import nn

from uncert_cli.curvature.recurrent import Recorder, recurrent_forward

__all__ = ["plain_kernels", "needs_plain_kernels", "runs_own_forward"]

_ATTENTION = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def needs_plain_kernels(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` whose fast kernels :func:`plain_kernels` replaces."""
    return [name for name, m in model.named_modules() if isinstance(m, (nn.RNNBase, *_ATTENTION))]


def _recurrent(module: nn.RNNBase, record: Recorder | None):
    def forward(input, hx=None):  # noqa: A002 - nn.RNNBase's argument name
        return recurrent_forward(module, input, hx, record)

    forward.plain_recurrent = True  # type: ignore[attr-defined]
    return forward


def runs_own_forward(module: nn.Module) -> bool:
    """Whether ``module`` runs its class's forward or :func:`plain_kernels`' plain one (not a
    forward someone assigned to the instance, which a recorder would replace).
    """
    own = vars(module).get("forward")
    return own is None or getattr(own, "plain_recurrent", False)


@contextlib.contextmanager
def plain_kernels(model: nn.Module, recorders: Mapping[nn.Module, Recorder] | None = None) -> Iterator[list[str]]:
    """Within the block, ``model`` computes the same outputs on transform-friendly kernels.

    ``recorders`` maps recurrent modules to a callback that receives every layer-direction's
    :class:`~uncert_cli.curvature.recurrent.DirectionRecord` of each call (the curvature pass).

    Yields the names of the modules affected (empty when the model has none, and then only
    ``F.scaled_dot_product_attention`` is kept on its composite path).  Forwards are restored and the
    attention fast path re-enabled on exit, also on errors.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    affected = needs_plain_kernels(model)
    if not affected:
        # A model may call F.scaled_dot_product_attention itself (timm's Attention, many hand-written
        # transformers), out of sight of the module types above: its flash/efficient kernels have no
        # forward-mode derivative either, so the composite path is taken for every model.
        with sdpa_kernel(SDPBackend.MATH):
            yield affected
        return
    import torch.backends.mha

    recorders = recorders or {}
    # Inside an outer block a recurrent module already runs the plain forward; it is swapped again
    # only to attach a recorder (the engine's passes within a structured method's block), and the
    # outer forward comes back on exit.
    swapped = {
        m: vars(m).get("forward")
        for m in model.modules()
        if isinstance(m, nn.RNNBase) and ("forward" not in vars(m) or m in recorders and runs_own_forward(m))
    }
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        for module in swapped:
            module.forward = _recurrent(module, recorders.get(module))  # an instance attribute shadows the class's forward
        torch.backends.mha.set_fastpath_enabled(False)
        with sdpa_kernel(SDPBackend.MATH):
            yield affected
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for module, previous in swapped.items():
            if previous is None:
                del module.forward
            else:
                module.forward = previous

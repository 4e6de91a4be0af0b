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
from collections.abc import Iterator

from torch import nn

from uncert_cli.curvature.recurrent import recurrent_forward

__all__ = ["plain_kernels", "needs_plain_kernels"]

_ATTENTION = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def needs_plain_kernels(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` whose fast kernels :func:`plain_kernels` replaces."""
    return [name for name, m in model.named_modules() if isinstance(m, (nn.RNNBase, *_ATTENTION))]


def _recurrent(module: nn.RNNBase):
    def forward(input, hx=None):  # noqa: A002 - nn.RNNBase's argument name
        return recurrent_forward(module, input, hx)

    return forward


@contextlib.contextmanager
def plain_kernels(model: nn.Module) -> Iterator[list[str]]:
    """Within the block, ``model`` computes the same outputs on transform-friendly kernels.

    Yields the names of the modules affected (empty when the model has none, and then nothing is
    changed).  Forwards are restored and the attention fast path re-enabled on exit, also on errors.
    """
    affected = needs_plain_kernels(model)
    if not affected:
        yield affected
        return
    import torch.backends.mha
    from torch.nn.attention import SDPBackend, sdpa_kernel

    swapped = [m for m in model.modules() if isinstance(m, nn.RNNBase) and "forward" not in vars(m)]
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        for module in swapped:
            module.forward = _recurrent(module)  # an instance attribute shadows the class's forward
        torch.backends.mha.set_fastpath_enabled(False)
        with sdpa_kernel(SDPBackend.MATH):
            yield affected
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for module in swapped:
            del module.forward

"""Where uncert falls back to a slower way of computing the same numbers, and says so.

Batched backward passes (``is_grads_batched``) and ``vmap`` over weight samples need a batching rule for
every operation in the model's graph. Where one is missing, torch raises, and uncert computes the
same quantities one vector or one sample at a time. Only those errors take the fallback (any other
error is a real one and propagates), and the fallback is announced with a :class:`SlowPathWarning`,
which the CLI prints as one ``note:`` line on stderr.
"""

from __future__ import annotations

import warnings

# Fragments of torch's messages for an operation vmap cannot batch (functorch's "vmap: ...", "Batching
# rule not implemented for aten::...", kernels without storage for batched tensors, ...).
# The last: a batching rule that gets the sizes wrong, as PReLU's pullback does under two nested vmaps
# (torch 2.x); the unbatched route computes the same numbers, and a genuine size mismatch fails there again.
_VMAP_FRAGMENTS = ("vmap", "batching rule", "batched", "functorch", "storage", "must match the size of tensor")
# Fragments of torch's messages for an operation without a forward-mode derivative: a kernel whose
# forward AD is not implemented ("Trying to use forward AD with _weight_norm_interface ..."), or an
# ``autograd.Function`` written without ``setup_context``/``jvp``, which no torch.func transform can run.
_FORWARD_AD_FRAGMENTS = ("forward ad", "forward-mode", "setup_context", "jvp")


class SlowPathWarning(UserWarning):
    """uncert took a slower route than usual; the numbers are the same."""


def vmap_unsupported(exc: BaseException) -> bool:
    """Whether ``exc`` says that vmap (or a batched backward) cannot run an operation of the model."""
    if not isinstance(exc, (RuntimeError, NotImplementedError, ValueError)):
        return False
    text = str(exc).lower()
    return any(fragment in text for fragment in _VMAP_FRAGMENTS)


def forward_ad_unsupported(exc: BaseException) -> bool:
    """Whether ``exc`` says that forward-mode differentiation (``torch.func.jvp``) cannot run an operation of the model."""
    if not isinstance(exc, (RuntimeError, NotImplementedError)):
        return False
    text = str(exc).lower()
    return any(fragment in text for fragment in _FORWARD_AD_FRAGMENTS)


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CUDA's ``OutOfMemoryError`` or the CPU allocator's)."""
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "allocate" in str(exc).lower())


def announce_slow_path(what: str, exc: BaseException) -> None:
    """Warn once per call site that ``what`` runs unbatched because of ``exc`` (its first line is quoted)."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    warnings.warn(f"{what} one at a time (slower, same numbers): {reason}", SlowPathWarning, stacklevel=3)

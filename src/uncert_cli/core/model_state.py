"""One way to change a model's modes for a while and put them back exactly.

Predictions run in eval mode (dropout off, BatchNorm on its running statistics), MC dropout turns the
Dropout modules back to train mode, and curvature passes switch ``requires_grad`` to the covered
parameters only. :func:`model_state` does each of these and restores *every* module's own training
flag and every parameter's own ``requires_grad`` afterwards: a model whose submodules were in mixed
modes (a frozen BatchNorm left in eval inside a training model) comes back as it was, not with the
root's flag copied onto every child (``nn.Module.train(flag)`` would do that).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

DROPOUT_TYPES = (nn.modules.dropout._DropoutNd,)


def is_dropout(module: nn.Module) -> bool:
    """Whether ``module`` is one of torch's Dropout layers (the ones MC dropout keeps sampling)."""
    return isinstance(module, DROPOUT_TYPES)


def has_dropout(model: nn.Module) -> bool:
    return any(is_dropout(m) for m in model.modules())


@contextlib.contextmanager
def model_state(
    model: nn.Module,
    *,
    training: Callable[[nn.Module], bool] | None = None,
    requires_grad: Callable[[nn.Parameter], bool] | None = None,
) -> Iterator[nn.Module]:
    """Inside the block every module is in eval mode (or ``training(module)``'s mode where given) and,
    with ``requires_grad``, every parameter ``p`` has ``p.requires_grad = requires_grad(p)``.

    Args:
        model: changed in place and restored module by module, parameter by parameter, on exit
            (also when the block raises).
        training: which modules run in train mode, set through ``module.train()`` (so with their
            children; default: none).
        requires_grad: the parameters' flag inside the block (default: left alone).

    Yields:
        ``model`` itself.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()] if requires_grad is not None else []
    buffers = _buffer_values(model)
    try:
        model.eval()  # through train(): a model may override it to switch more than the flags
        if training is not None:
            for m in model.modules():
                if training(m):
                    m.train()
        if requires_grad is not None:
            for p in model.parameters():
                p.requires_grad_(bool(requires_grad(p)))
        yield model
    finally:
        for m, flag in modes:
            m.training = flag
        for p, flag in grads:
            p.requires_grad_(flag)
        _restore_buffers(buffers)


def _buffer_values(model: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor, torch.Tensor]]:
    """``(module, name, tensor, copy of its values)`` for every buffer of ``model``."""
    return [(m, name, b, b.detach().clone())
            for m in model.modules() for name, b in m._buffers.items() if b is not None]


def _restore_buffers(buffers: list[tuple[nn.Module, str, torch.Tensor, torch.Tensor]]) -> None:
    """Put every buffer back: the same tensor object with its values before the block.

    A forward that updates a buffer even in eval mode (a call counter, a running mean it keeps itself)
    would otherwise leave the model changed by uncert's own passes, and the weights a factor file stores
    would no longer be the checkpoint's (the class that wrote them could not reproduce them).
    """
    with torch.no_grad():
        for module, name, tensor, values in buffers:
            if module._buffers.get(name) is not tensor:  # rebound (``self.calls = self.calls + 1``)
                module._buffers[name] = tensor
            if not torch.equal(tensor, values):
                tensor.copy_(values)


def eval_mode(model: nn.Module, dropout_train: bool = False) -> contextlib.AbstractContextManager[nn.Module]:
    """Eval mode for the whole model, the Dropout modules in train mode when ``dropout_train`` (MC dropout)."""
    return model_state(model, training=is_dropout if dropout_train else None)

"""Which part of a forward's result is the prediction, for networks that return more than a tensor.

Hugging Face models return ``ModelOutput`` (a dict subclass with ``logits``), detection-style and
auxiliary-head networks return dicts, tuples or namedtuples. Every analysis in uncert needs one tensor
``(batch, outputs)``. :func:`select_output` attaches a forward hook to the network's root module that
replaces its result by the chosen part, so the rest of uncert (curvature capture, predictives, attacks)
sees a plain tensor, and the parameter names, the state dict and the weight fingerprint stay unchanged.

The choice (``output``: a name or an index, recorded in the model metadata as ``output``):

* ``None`` (automatic): a tensor as it is; otherwise the entry called ``logits`` when there is one,
  else the first tensor among the entries;
* a name: that key of a dict, or that field of a dataclass or namedtuple;
* an index ``i``: the ``i``-th entry (of a dict or dataclass: the ``i``-th entry that is not None,
  as ``ModelOutput.to_tuple()`` counts).

A name read from a file is only ever compared with keys and field names: nothing is looked up by it
on an arbitrary object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from uncert_cli.core.errors import UserError

__all__ = ["OutputChoice", "OutputSelector", "parse_output_choice", "check_output_choice", "pick_output",
           "select_output", "output_selector", "recorded_output", "PREFERRED_NAME"]

OutputChoice = str | int | None
PREFERRED_NAME = "logits"
_MAX_NAME = 64
_ATTRIBUTE = "_uncert_output_selector"  # where the module keeps its selector, so that a second one replaces it


def check_output_choice(choice: Any, where: str = "the model metadata") -> OutputChoice:
    """``choice`` if it is None, an index ≥ 0 or an identifier of at most 64 characters; else a UserError."""
    if choice is None or (type(choice) is int and choice >= 0):
        return choice
    if isinstance(choice, str) and choice.isidentifier() and len(choice) <= _MAX_NAME:
        return choice
    raise UserError(
        f"{where}: the model output to analyse must be a name such as logits or an index such as 0, "
        f"got {str(choice)[:_MAX_NAME]!r}"
    )


def parse_output_choice(text: str | None) -> OutputChoice:
    """The output choice as typed (``model_output`` text): digits are an index, anything else a name."""
    if text is None:
        return None
    text = text.strip()
    choice: OutputChoice = int(text) if text.isdigit() else text
    try:
        return check_output_choice(choice, "{param}")
    except UserError as exc:
        raise UserError(exc.template, param="model_output") from None


def _entries(output: Any) -> list[tuple[str | None, Any]] | None:
    """``(name or None, value)`` of each entry of a structured output, None for anything else."""
    if isinstance(output, Mapping):
        return [(k if isinstance(k, str) else None, v) for k, v in output.items()]
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return [(f.name, getattr(output, f.name)) for f in dataclasses.fields(output)]
    if isinstance(output, tuple) and hasattr(output, "_fields"):  # a namedtuple
        return list(zip(output._fields, output))
    if isinstance(output, (tuple, list)):
        return [(None, v) for v in output]
    return None


def _describe(output: Any, entries: list[tuple[str | None, Any]]) -> str:
    names = [n for n, _ in entries if n is not None]
    shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
    what = type(output).__name__
    return f"a {what} with entries {shown}" if names else f"a {what} of {len(entries)} entries"


def pick_output(output: Any, choice: OutputChoice) -> tuple[Tensor, OutputChoice]:
    """The prediction tensor in ``output`` and the choice that names it (a name where the entry has one).

    Returns ``(output, None)`` for a tensor with no choice. Raises :class:`UserError` when the choice does
    not fit the output or no tensor can be found.
    """
    if isinstance(output, Tensor) and choice is None:
        return output, None
    entries = _entries(output)
    if entries is None:
        if isinstance(output, Tensor):
            raise UserError(f"the model returns a single tensor, so there is no output {choice!r} to take; "
                            "drop {param}", param="model_output")
        raise UserError(f"the model returns a {type(output).__name__}, not a tensor or a dict, tuple or dataclass "
                        "of tensors; uncert cannot analyse it", param="model_output")
    if choice is None:
        named = dict((n, v) for n, v in entries if n is not None)
        if isinstance(named.get(PREFERRED_NAME), Tensor):
            return named[PREFERRED_NAME], PREFERRED_NAME
        for index, (name, value) in enumerate(entries):
            if isinstance(value, Tensor):
                return value, name if name is not None else index
        raise UserError(f"the model returns {_describe(output, entries)}, none of them a tensor; "
                        "uncert needs the prediction as a tensor", param="model_output")
    if isinstance(choice, int):
        # Tuples count every position; dicts and dataclasses only the entries that are set (ModelOutput's rule).
        sequence = isinstance(output, (tuple, list))
        present = entries if sequence else [(n, v) for n, v in entries if v is not None]
        if choice >= len(present):
            raise UserError(f"{{param}} {choice} is out of range: the model returns {_describe(output, entries)}",
                            param="model_output")
        name, value = present[choice]
    else:
        found = [v for n, v in entries if n == choice]
        if not found:
            raise UserError(f"the model returns {_describe(output, entries)}, none called {choice!r}; "
                            "choose one with {param} NAME or INDEX", param="model_output")
        name, value = choice, found[0]
    if not isinstance(value, Tensor):
        raise UserError(f"the model output {choice!r} is a {type(value).__name__}, not a tensor; choose another "
                        "with {param}", param="model_output")
    return value, choice


class OutputSelector:
    """A forward hook that replaces a module's result by the tensor :func:`pick_output` takes.

    ``choice`` is what was asked (None: automatic); ``resolved`` what the last structured output was
    answered with (a name, an index, or None while only tensors came back), which ``fit`` records.
    """

    def __init__(self, choice: OutputChoice) -> None:
        self.choice = check_output_choice(choice)
        self.resolved: OutputChoice = choice
        self.handle: Any = None

    def __call__(self, _module: nn.Module, _args: Any, output: Any) -> Tensor | None:
        if isinstance(output, Tensor) and self.choice is None:
            return None  # leave the result alone
        tensor, resolved = pick_output(output, self.choice)
        self.resolved = resolved
        return tensor

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


def select_output(module: nn.Module, choice: OutputChoice) -> OutputSelector:
    """Make ``module(x)`` return the chosen tensor of its result (see the module docstring).

    A module given a selector before gets this one instead.
    """
    previous = module.__dict__.get(_ATTRIBUTE)
    if isinstance(previous, OutputSelector):
        previous.remove()
    selector = OutputSelector(choice)
    selector.handle = module.register_forward_hook(selector)
    module.__dict__[_ATTRIBUTE] = selector
    return selector


def output_selector(module: nn.Module) -> OutputSelector | None:
    """The selector :func:`select_output` attached to ``module``, if any."""
    found = module.__dict__.get(_ATTRIBUTE)
    return found if isinstance(found, OutputSelector) else None


def recorded_output(module: nn.Module, meta: Any) -> Any:
    """``meta`` (a :class:`~uncert_cli.checkpoint.meta.ModelMeta`) with ``output`` set to what ``module``'s
    selector answered its structured results with, so that a factor file records the automatic choice too
    and every later command takes the same part; ``meta`` itself when only tensors came back.
    """
    selector = output_selector(module)
    if selector is None or selector.resolved is None or selector.resolved == meta.output:
        return meta
    return dataclasses.replace(meta, output=selector.resolved)

"""Library parameter names as the running command's flags (``mc_samples`` → ``--mc-samples``).

A :class:`~uncert_cli.core.errors.UserError`, and any note a library call returns as a
:class:`~uncert_cli.core.errors.ParameterText`, names the library parameters it is about; only the CLI
knows which command runs and what that command calls the parameter, so the translation lives here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from uncert_cli.core.errors import ParameterText

# Library keyword arguments whose command-line option has another name.
ALIASES = {
    "fisher_type": "fisher",
    "structure": "prior_structure",
    "max_bytes": "max_memory",
    "root": "data_root",
    "spec": "data",
}


def running_command(group: Any, argv: Sequence[str]) -> Any | None:
    """The subcommand object ``argv`` runs (its first non-option word), or None."""
    commands = getattr(group, "commands", {})
    for word in argv:
        if not word.startswith("-"):
            return commands.get(word)
    return None


def option_flags(command: Any) -> dict[str, str]:
    """``{parameter name: its longest flag}`` for every option of ``command`` (and ``no_NAME`` for
    the off switch of an on/off flag).
    """
    flags: dict[str, str] = {}
    for param in getattr(command, "params", []):
        opts = [o for o in getattr(param, "opts", []) if o.startswith("-")]
        if opts and param.name:
            flags[param.name] = max(opts, key=len)
        for off in getattr(param, "secondary_opts", []):  # --tune/--no-tune: "no_tune" is --no-tune
            flags[f"no_{param.name}"] = off
    return flags


def all_flags(command: Any) -> set[str]:
    """Every spelling of every option of ``command`` (``-o``, ``--output``, ``--no-tune`` …)."""
    spelled: set[str] = {"--help"}
    for param in getattr(command, "params", []):
        for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
            if opt.startswith("-"):
                spelled.add(opt)
    return spelled


def render_for_command(error: ParameterText, command: Any | None) -> str:
    """The message of ``error`` (or of a note) with its parameters shown as ``command``'s flags where it has them."""
    if not error.params or command is None:
        return str(error)
    flags = option_flags(command)
    names = {}
    for param in error.params:
        flag = flags.get(ALIASES.get(param, param)) or flags.get(param)
        if flag is not None:
            names[param] = flag
    return error.render(names)


# Options whose values set how much memory a command allocates, in the order a user would lower them.
SIZE_OPTIONS = ("batch_size", "samples", "tune_samples", "mc_samples", "limit", "val_size")


def is_out_of_memory(error: BaseException) -> bool:
    """True for Python's MemoryError and torch's allocation failures (CPU allocator or CUDA)."""
    text = str(error)
    return isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
    )


def out_of_memory_message(error: BaseException, command: Any | None) -> str:
    """One line for an allocation failure, naming the running command's size options to lower."""
    reason = " ".join(str(error).split())[:160] or type(error).__name__
    flags = option_flags(command) if command is not None else {}
    lower = [flags[name] for name in SIZE_OPTIONS if name in flags]
    advice = f"lower {', '.join(lower)}" if lower else "use a smaller model or data set"
    return f"out of memory ({reason}); {advice}"


def is_mutating_forward(error: BaseException) -> bool:
    """True for torch.func's refusal of a forward that writes into a tensor it captured (a buffer the
    model updates as it runs): the model's own code, not uncert's, so a user error.
    """
    text = str(error)
    return isinstance(error, RuntimeError) and "in-place operation" in text and "mutate a captured Tensor" in text


def mutating_forward_message(error: BaseException) -> str:
    """One line for :func:`is_mutating_forward`: which operation, why it cannot run, what to change."""
    operation = re.search(r"\((aten::[\w.]+)\)", str(error))
    what = f" ({operation.group(1)})" if operation else ""
    return ("the model's forward changes a tensor in place that is not one of its inputs" + what + ", such as a "
            "buffer it updates on every call (a counter, a running mean); this command differentiates the network "
            "as a pure function of its weights, which such a forward is not: update the buffer only when "
            "self.training is set (uncert runs the model in eval mode), or choose a method or predictive that "
            "needs no per-example Jacobians (e.g. --method kfac, --predictive map)")

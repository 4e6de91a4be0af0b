"""A trusted pickled model fitted without an ``arch``: name its class so that later commands can
rebuild it from the weights a factor file stores, or refuse before any work is done.

A factor file holds weights, never a pickle (opening it must not run code), so ``report``/``ood``
rebuild the model from ``arch`` + ``arch_kwargs``. A pickle records only its class, not the
constructor arguments; the class is recorded when calling it with no arguments rebuilds a module
that takes exactly the pickled weights.
"""

from __future__ import annotations

from dataclasses import replace

from uncert_cli.checkpoint.arch import build_module, is_builtin_arch
from uncert_cli.checkpoint.loading import LoadedModel
from uncert_cli.checkpoint.state import weights_fingerprint
from uncert_cli.core.errors import ParameterText, UserError

__all__ = ["record_pickled_arch"]


def _refusal(loaded: LoadedModel, spec: str, why: str, why_mentions: tuple[str, ...] = ()) -> UserError:
    """``why`` may name further parameters as ``{name}`` (listed in ``why_mentions``)."""
    return UserError(
        f"{loaded.source} is a pickled {spec} and {why}, so later commands could not rebuild it from the "
        f"factor file's weights; pass {{param}} {spec} (or path/to/file.py:Class) with {{arch_kwargs}} KEY=VALUE "
        "for its constructor",
        param="arch", mentions=("arch_kwargs", *why_mentions),
    )


def record_pickled_arch(loaded: LoadedModel) -> tuple[LoadedModel, ParameterText | None]:
    """``(loaded with meta.arch set, note)`` for a pickled module without an architecture; the
    note (or ``None``) says what later calls need, naming their ``arch`` parameter (the CLI shows
    it as ``--arch``). Raises :class:`UserError` when the class cannot be rebuilt with no
    constructor arguments.
    """
    if loaded.meta.arch:
        return loaded, None
    cls = type(loaded.module)
    spec = f"{cls.__module__}:{cls.__qualname__}"
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise _refusal(loaded, spec, "its class was defined in a script, not in an importable module")
    try:
        rebuilt = build_module(spec, {})
    except UserError as exc:
        # Keep the builder's parameters named (as flags on the command line) rather than rendered here.
        inner = exc.template.replace("{param}", "{" + exc.param + "}") if exc.param else exc.template
        raise _refusal(loaded, spec, f"its class cannot be built without arguments ({inner})", exc.params) from None
    state = loaded.module.state_dict()
    fresh = rebuilt.state_dict()
    if set(state) != set(fresh) or any(tuple(state[k].shape) != tuple(fresh[k].shape) for k in state):
        raise _refusal(loaded, spec, "its class built without arguments has other parameter shapes")
    rebuilt.load_state_dict(state)
    if weights_fingerprint(rebuilt) != loaded.fingerprint:
        raise _refusal(loaded, spec, "its class built without arguments does not reproduce its weights")
    note = None
    if not is_builtin_arch(spec):
        note = ParameterText(
            f"recorded the pickled model's class {spec} as its architecture; later commands that run the "
            f"model import it only with your consent: pass {{param}} {spec} (or set UNCERT_TRUST_ARCH=1)",
            param="arch",
        )
    return replace(loaded, meta=replace(loaded.meta, arch=spec, arch_kwargs={})), note

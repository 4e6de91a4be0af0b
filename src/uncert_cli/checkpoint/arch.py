"""Turn an architecture spec (``arch``) and keyword arguments (``arch_kwargs``) into a module.

Spec forms:

* ``torchvision:NAME``          a torchvision model, always randomly initialised (``weights=None``);
* ``timm:NAME``                 a timm model (optional dependency), always with ``pretrained=False``;
* ``path/to/file.py:Class``     a class (or factory function) in the user's own file;
* ``package.module:Class``      anything importable;
* ``MLP`` / ``LeNet``           shorthand for the models in :mod:`uncert_cli.models`.

Importing a user's file runs its code; that is fine because the user asked for exactly that file.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from uncert_cli.checkpoint.timm_arch import timm_builder, timm_lists
from uncert_cli.core.errors import UserError

__all__ = ["build_module", "build_file_module", "parse_arch_kwargs", "canonical_arch", "is_builtin_arch"]

_SPEC_HELP = (
    "use package.module:Class, path/to/file.py:Class, torchvision:NAME (e.g. torchvision:resnet18) or timm:NAME"
)
_BUILTIN = {"mlp": "uncert_cli.models:MLP", "lenet": "uncert_cli.models:LeNet"}
# Lower-case spellings people type on a shell; literal_eval only knows the Python ones.
_WORDS = {"true": True, "false": False, "none": None, "null": None}


def canonical_arch(arch: str) -> str:
    """Expand shorthands (``MLP``, ``lenet``) to full specs; other specs are returned stripped."""
    arch = arch.strip()
    return _BUILTIN.get(arch.lower(), arch)


def _split_items(item: str) -> list[str]:
    """Split ``"a=1,b=[2,3]"`` at top-level commas that start a new ``key=`` pair.

    Commas inside brackets, quotes, or followed by something that is not ``key=`` stay put,
    so ``hidden=[1,2]`` and ``name=a,b`` keep their commas.
    """
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    for i, ch in enumerate(item):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0 and re.match(r"\s*[A-Za-z_]\w*\s*=", item[i + 1 :]):
            parts.append(item[start:i])
            start = i + 1
    parts.append(item[start:])
    return parts


def _parse_value(text: str) -> Any:
    text = text.strip()
    if text.lower() in _WORDS:
        return _WORDS[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_arch_kwargs(items: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """Parse ``["num_classes=10", "hidden=[1024,1024]", "name=foo"]`` into a dict.

    Values go through :func:`ast.literal_eval` (numbers, lists, tuples, dicts, quoted strings);
    anything that is not a literal is kept as a string, and ``true/false/none/null`` are
    accepted in lower case.  One item may hold several pairs separated by commas
    (``"num_classes=10,hidden=[64,64]"``).
    """
    result: dict[str, Any] = {}
    for item in items or []:
        for part in _split_items(item):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or not key.isidentifier():
                raise UserError(
                    f"bad {{param}} item {part.strip()!r}: write KEY=VALUE, "
                    "e.g. num_classes=10 or hidden=[256,256]",
                    param="arch_kwargs",
                )
            if key in result:
                raise UserError(f"{{param}} gives {key!r} twice; give each keyword once", param="arch_kwargs")
            result[key] = _parse_value(value)
    return result


def _import_file(path: Path) -> Any:
    """Import a Python file by path under a private, path-derived module name."""
    if not path.is_file():
        raise UserError(f"no such file: {path} (from {{param}}); {_SPEC_HELP}", param="arch")
    resolved = path.resolve()
    name = f"uncert_user_arch_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:10]}"
    if name in sys.modules:  # importing the same file twice must give the same classes
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot import {path} as Python code; {_SPEC_HELP}")
    module = importlib.util.module_from_spec(spec)
    # Registered before exec so that dataclasses/pickle inside the file can find the module;
    # the file's own folder goes on sys.path so that it can import its sibling files.
    sys.modules[name] = module
    folder = str(resolved.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise UserError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    return module


def _import_with_cwd_fallback(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        cwd = str(Path.cwd())
        # A console script does not put the working directory on sys.path, but users expect
        # the spec `mymodels:Net` to find ./mymodels.py as `python -m` would.
        if exc.name != name.split(".")[0] or cwd in sys.path:
            raise
    sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(cwd)


def _import_module(name: str) -> Any:
    try:
        return _import_with_cwd_fallback(name)
    except ModuleNotFoundError as exc:
        raise UserError(f"cannot import module {name!r} ({exc}); {_SPEC_HELP}") from None
    except Exception as exc:
        raise UserError(f"importing module {name!r} failed: {type(exc).__name__}: {exc}") from exc


def _attribute(module: Any, qualname: str, where: str) -> Any:
    obj = module
    for part in qualname.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(qualname, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"{where} has no attribute {qualname!r}{hint}")
        obj = getattr(obj, part)
    return obj


def _torchvision_builder(name: str, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision.models as tvm

    if "weights" in kwargs or "pretrained" in kwargs:
        raise UserError(
            "uncert never downloads pretrained weights: drop weights=/pretrained= from {param} "
            "and pass the trained weights as the checkpoint file",
            param="arch_kwargs",
        )
    available = tvm.list_models()
    if name not in available:
        lowered = {m.lower(): m for m in available}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=5, cutoff=0.5)
        hint = f" did you mean {', '.join(lowered[c] for c in close)}?" if close else ""
        raise UserError(f"torchvision has no model {name!r};{hint} (see torchvision.models.list_models())")
    # weights=None always: a random init that the checkpoint's weights then replace.
    return _call(
        lambda **kw: tvm.get_model(name, weights=None, **kw),
        kwargs,
        f"torchvision:{name}",
        signature_of=tvm.get_model_builder(name),
    )


def _call(factory: Callable[..., Any], kwargs: dict[str, Any], arch: str, signature_of: Any = None) -> Any:
    """Call ``factory(**kwargs)``, turning bad keywords and constructor failures into UserErrors."""
    try:
        sig = inspect.signature(signature_of if signature_of is not None else factory)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        try:
            sig.bind(**kwargs)
        except TypeError as exc:
            accepted = [
                p.name
                for p in sig.parameters.values()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in ("weights", "progress")
            ]
            raise UserError(
                f"{{param}} do not fit {arch} ({exc}); it accepts: {', '.join(accepted) or 'no keywords'}",
                param="arch_kwargs",
            ) from None
    try:
        return factory(**kwargs)
    except UserError:
        raise
    except Exception as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise UserError(
            f"building {arch}({shown}) failed: {type(exc).__name__}: {exc}; check {{param}}", param="arch_kwargs"
        ) from exc


# What a file's metadata may name: exactly one colon, an identifier after it, nothing else.
_FILE_ARCH = re.compile(r"(uncert_cli\.models|torchvision|timm):([A-Za-z_][A-Za-z0-9_]*)")
# Keyword values a file may pass: JSON scalars, or flat lists of them (MLP's hidden widths).
_MAX_LIST = 64
_MAX_STR = 64


def _uncert_model_class(name: str) -> type[nn.Module] | None:
    """The ``nn.Module`` subclass *defined in* :mod:`uncert_cli.models` called ``name``, else None.

    Only the module's own namespace is consulted (no attribute paths), and the class must have
    been defined there: names that module merely imports (``torch``, ``nn``) are not classes of
    uncert's and are refused.
    """
    from uncert_cli import models

    candidate = vars(models).get(name)
    if (
        isinstance(candidate, type)
        and issubclass(candidate, nn.Module)
        and candidate.__module__ == models.__name__
        and name in models.__all__
    ):
        return candidate
    return None


def file_arch_target(arch: str) -> tuple[str, str] | None:
    """Split an architecture named by a file into ``("uncert_cli.models" | "torchvision" | "timm", name)``.

    Returns None for anything else: another module, an attribute path (``models:torch.os.system``),
    whitespace around the colon, a class uncert does not define, or a name torchvision (timm) does not
    list. A ``timm:`` name when timm is not installed is a :class:`UserError` saying how to install it.
    """
    if not isinstance(arch, str):
        return None
    match = _FILE_ARCH.fullmatch(canonical_arch(arch))
    if match is None:
        return None
    target, name = match.groups()
    if target == "uncert_cli.models":
        return (target, name) if _uncert_model_class(name) is not None else None
    if target == "timm":
        return (target, name) if timm_lists(name) else None
    import torchvision.models as tvm

    return (target, name) if name in tvm.list_models() else None


def is_builtin_arch(arch: str) -> bool:
    """True for the architectures a file's metadata may name (see :func:`file_arch_target`).

    Following any other name would import (run) a module the file chose, so those are followed
    only when the user names the class (the ``arch`` parameter) or sets ``UNCERT_TRUST_ARCH=1``.
    """
    return file_arch_target(arch) is not None


def _plain_value(value: Any) -> bool:
    scalar = value is None or isinstance(value, (bool, int, float)) or (
        isinstance(value, str) and len(value) <= _MAX_STR
    )
    if scalar:
        return True
    return isinstance(value, list) and len(value) <= _MAX_LIST and all(
        v is None or isinstance(v, (bool, int, float)) for v in value
    )


def check_file_arch_kwargs(arch_kwargs: dict[str, Any], where: str = "the file") -> dict[str, Any]:
    """Keyword arguments read from a file: identifiers mapped to JSON scalars or flat lists of them.

    Raises :class:`UserError` for anything else (nested objects, long strings, non-identifier keys),
    so that a file cannot smuggle structured values into a constructor.
    """
    if not isinstance(arch_kwargs, dict):
        raise UserError(f"{where}: the architecture's keyword arguments are not a JSON object")
    for key, value in arch_kwargs.items():
        if not (isinstance(key, str) and key.isidentifier()) or not _plain_value(value):
            raise UserError(
                f"{where}: architecture keyword {str(key)[:40]!r} holds a value that is not a plain number, "
                "short string or list of numbers; pass {param} and {arch_kwargs} yourself if you trust the file",
                param="arch", mentions=("arch_kwargs",),
            )
    return dict(arch_kwargs)


def build_file_module(
    arch: str,
    arch_kwargs: dict[str, Any] | None,
    where: str = "the file",
    user_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Build an architecture that a *file* names, never importing anything a file chose.

    Only classes defined in :mod:`uncert_cli.models` (``uncert_cli.models:MLP``, ``MLP``) and
    builders listed by ``torchvision.models.list_models()`` or ``timm.list_models()`` are built; keyword arguments from the
    file must pass :func:`check_file_arch_kwargs` (``user_kwargs``, typed by the user, override them
    unchecked).  Raises :class:`UserError` otherwise.
    """
    resolved = file_arch_target(arch)
    if resolved is None:
        raise UserError(
            f"{where} names its architecture {arch!r}, which is not one of uncert's models or a torchvision "
            "model; opening a file never imports code it names, so pass {param} yourself if you trust it",
            param="arch",
        )
    kwargs = {**check_file_arch_kwargs(dict(arch_kwargs or {}), where), **(user_kwargs or {})}
    target, name = resolved
    if target == "torchvision":
        module = _torchvision_builder(name, kwargs)
    elif target == "timm":
        module = timm_builder(name, kwargs, _call)
    else:
        cls = _uncert_model_class(name)
        assert cls is not None  # file_arch_target checked it
        module = _call(cls, kwargs, f"{target}:{name}")
    if not isinstance(module, nn.Module):
        raise UserError(f"{arch} returned {type(module).__name__}, not a torch.nn.Module")
    return module


def build_module(arch: str, arch_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate the architecture named by ``arch`` with ``arch_kwargs`` (see module docstring).

    Raises :class:`UserError` for malformed specs, files or modules that cannot be imported,
    missing classes, keywords the constructor does not take, and results that are not modules.
    """
    kwargs = dict(arch_kwargs or {})
    spec = canonical_arch(arch)
    if ":" not in spec:
        raise UserError(f"{{param}} {arch!r} names no class; {_SPEC_HELP}", param="arch")
    # rpartition so that a Windows drive letter (C:\models\net.py:Net) stays in the path.
    target, _, attr = spec.rpartition(":")
    target, attr = target.strip(), attr.strip()
    if not target or not attr:
        raise UserError(f"{{param}} {arch!r} is incomplete; {_SPEC_HELP}", param="arch")
    if target == "torchvision":
        module = _torchvision_builder(attr, kwargs)
    elif target == "timm":
        module = timm_builder(attr, kwargs, _call)
    else:
        if target.endswith(".py") or "/" in target or "\\" in target:
            where = _import_file(Path(target).expanduser())
        else:
            where = _import_module(target)
        factory = _attribute(where, attr, target)
        if not callable(factory):
            raise UserError(f"{spec} is not a class or function; {_SPEC_HELP}")
        module = _call(factory, kwargs, spec)
    if not isinstance(module, nn.Module):
        raise UserError(f"{spec} returned {type(module).__name__}, not a torch.nn.Module")
    return module

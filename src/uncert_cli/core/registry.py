"""Self-registering tables: a class enters its table when it is defined, a package's modules when imported.

The structures (``posterior.structures``), the codecs (``storage.codecs``) and the curvature methods
(``curvature.methods``) are each a table keyed by a name the class declares (a storage tag, a method). A
class adds itself from ``__init_subclass__`` through :func:`register`, and a package whose modules hold
such classes imports all of them with :func:`import_package_modules`, so that a new file registers itself
without a line in a central list (docs/design.md, "How to add a structure").
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def _qualified(entry: object) -> str:
    cls = entry if isinstance(entry, type) else type(entry)
    return f"{cls.__module__}.{cls.__qualname__}"


def register(table: dict[str, T], key: str, entry: T, what: str) -> None:
    """Put ``entry`` into ``table`` under ``key``.

    The same class defined again (a reloaded module) replaces its old entry; a different class under a
    key already taken is a programming error, reported when the second class is defined.

    Raises:
        TypeError: ``key`` already names another class's entry.
    """
    old = table.get(key)
    if old is not None and _qualified(old) != _qualified(entry):
        raise TypeError(f"two {what} declare '{key}': {_qualified(old)} and {_qualified(entry)}")
    table[key] = entry


def import_package_modules(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (its ``__name__`` and ``__path__``), in name order."""
    for info in sorted(pkgutil.iter_modules(list(path)), key=lambda m: m.name):
        importlib.import_module(f"{package}.{info.name}")

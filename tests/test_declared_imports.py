"""Every third-party module the package imports comes with a declared dependency.

The README's quick start installs with ``pip install -e .`` alone; CI installs the test extra, whose packages
bring more with them (huggingface_hub brings click). An import that only the test environment satisfies
passes every test and breaks the quick start, as ``import click`` did once (recent typer ships its own
click). So: a module-level import must come from the base dependencies or what they require, an import
inside a function (an optional feature) from those or an extra's.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
requirements = pytest.importorskip("packaging.requirements")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "uncert_cli"


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-").replace(".", "-")


def _with_requirements(names: set[str]) -> set[str]:
    """``names`` and every distribution they require, transitively (extras of theirs left out)."""
    seen: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            required = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for text in required:
            req = requirements.Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(_name(req.name))
    return seen


def _imports() -> list[tuple[str, bool, str]]:
    """``(top-level module, imported at module level, file)`` for every absolute import in the package."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.append((name.split(".")[0], id(node) in module_level, str(path.relative_to(ROOT))))
    return found


def test_every_import_comes_with_a_declared_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base = _with_requirements({_name(r) for r in project["dependencies"]})
    extras = _with_requirements({_name(r) for reqs in project["optional-dependencies"].values() for r in reqs})
    providers = {module: {_name(d) for d in dists} for module, dists in packages_distributions().items()}
    wrong = []
    checked = 0
    for module, at_top, path in _imports():
        if module in sys.stdlib_module_names or module == "uncert_cli":
            continue
        allowed = base if at_top else base | extras
        dists = providers.get(module)
        if dists is None:  # not installed here: only an optional feature may import it
            if at_top:
                wrong.append(f"{path}: {module} (not installed, imported at module level)")
            continue
        checked += 1
        if not dists & allowed:
            wrong.append(f"{path}: {module} (from {sorted(dists)}, which no {'base ' if at_top else ''}dependency brings)")
    assert checked > 100
    assert not wrong, "imports that `pip install -e .` may not satisfy:\n" + "\n".join(sorted(set(wrong)))

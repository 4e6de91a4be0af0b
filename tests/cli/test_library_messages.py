"""Library errors name library parameters; only the CLI turns them into flags (issue 12 item 7).

A ``UserError`` raised outside ``cli/`` says ``{param}`` (or ``{name}`` for a parameter it mentions) where
the CLI shows ``--name``, so that a Python caller is never told to pass a flag. The scan reads every
string literal inside a ``UserError(...)`` call of the library; the modules in ``NOT_YET`` still spell
flags and are to be converted (a module leaves the list when it is). A new module, or a converted one,
that spells a flag fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import typer

import uncert_cli
from uncert_cli.cli.flags import render_for_command
from uncert_cli.cli.main import app
from uncert_cli.core.errors import UserError
from uncert_cli.data import parse_normalize

SRC = Path(uncert_cli.__file__).resolve().parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# A command line quoted as an example (`uncert fit CKPT --data ...`) may name its own flags.
QUOTED_COMMAND = re.compile(r"([`'])uncert [^`']*\1")
NOT_YET = {
    "checkpoint/arch.py", "checkpoint/hf_folder.py", "checkpoint/loading.py", "checkpoint/meta.py",
    "checkpoint/pickled.py", "checkpoint/state.py", "checkpoint/stored.py", "checkpoint/timm_arch.py",
    "data/hf_datasets.py", "data/token_files.py",
}


def flags_in_user_errors(path: Path) -> set[str]:
    """The flags spelled by the string literals of every ``UserError(...)`` call in ``path``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        callee = getattr(node, "func", None)
        if isinstance(node, ast.Call) and getattr(callee, "id", getattr(callee, "attr", None)) == "UserError":
            text = "".join(
                sub.value for sub in ast.walk(node) if isinstance(sub, ast.Constant) and isinstance(sub.value, str)
            )
            found |= set(FLAG.findall(QUOTED_COMMAND.sub("", text)))
    return found


LIBRARY = sorted(
    str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "cli" not in p.relative_to(SRC).parts
)


@pytest.mark.parametrize("module", [m for m in LIBRARY if m not in NOT_YET])
def test_library_messages_name_parameters_not_flags(module: str) -> None:
    assert not flags_in_user_errors(SRC / module), f"{module}: say {{param}} and pass param=..., not the flag"


def test_the_scan_finds_a_flag() -> None:
    assert flags_in_user_errors(SRC / "checkpoint" / "arch.py")  # still on NOT_YET: the scan must see it


def test_a_python_caller_reads_the_parameter_and_the_cli_the_flag() -> None:
    with pytest.raises(UserError) as caught:
        parse_normalize("1,2,3")
    assert "bad normalize '1,2,3'" in str(caught.value) and "--" not in str(caught.value).split(";")[0]
    fit = typer.main.get_command(app).commands["fit"]
    assert render_for_command(caught.value, fit).startswith("bad --normalize '1,2,3'")

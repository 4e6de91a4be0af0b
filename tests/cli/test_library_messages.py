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
from uncert_cli.checkpoint.arch import build_module, parse_arch_kwargs
from uncert_cli.cli.flags import render_for_command
from uncert_cli.cli.main import app
from uncert_cli.core.errors import UserError
from uncert_cli.data import parse_normalize

SRC = Path(uncert_cli.__file__).resolve().parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# A command line quoted as an example (`uncert fit CKPT --data ...`) may name its own flags.
QUOTED_COMMAND = re.compile(r"([`'])uncert [^`']*\1")
NOT_YET: set[str] = set()


def flags_in_user_errors(path: Path) -> set[str]:
    """The flags spelled by the string literals of every ``UserError(...)`` message in ``path``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        callee = getattr(node, "func", None)
        if isinstance(node, ast.Call) and getattr(callee, "id", getattr(callee, "attr", None)) == "UserError":
            # The message only: keyword values (param="split") are names, and joined to it they would read as
            # part of a flag.
            text = "\n".join(
                sub.value for arg in node.args for sub in ast.walk(arg)
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str)
            )
            found |= set(FLAG.findall(QUOTED_COMMAND.sub("", text)))
    return found


LIBRARY = sorted(
    str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "cli" not in p.relative_to(SRC).parts
)


@pytest.mark.parametrize("module", [m for m in LIBRARY if m not in NOT_YET])
def test_library_messages_name_parameters_not_flags(module: str) -> None:
    assert not flags_in_user_errors(SRC / module), f"{module}: say {{param}} and pass param=..., not the flag"
    # Nor any other string the library builds: outside cli/ nothing knows which command runs, so a flag
    # spelled there (handed to a helper, in a progress label or a note) may be one the caller lacks.
    assert not flags_in_code_strings(SRC / module), f"{module}: name the parameter (ParameterText), not the flag"


def test_the_scan_finds_a_flag(tmp_path: Path) -> None:
    spelled = tmp_path / "spelled.py"
    spelled.write_text(
        'raise UserError(f"bad {x}: pass --arch-kwargs "\n "or --split", param="arch")\n'
        "raise UserError(\"see `uncert fit CKPT --data mnist`\")\n"
    )
    assert flags_in_user_errors(spelled) == {"--arch-kwargs", "--split"}  # the quoted command line is allowed


def test_a_python_caller_reads_the_parameter_and_the_cli_the_flag() -> None:
    with pytest.raises(UserError) as caught:
        parse_normalize("1,2,3")
    assert "bad normalize '1,2,3'" in str(caught.value) and "--" not in str(caught.value).split(";")[0]
    fit = typer.main.get_command(app).commands["fit"]
    assert render_for_command(caught.value, fit).startswith("bad --normalize '1,2,3'")


def test_checkpoint_messages_read_as_parameters_in_python_and_flags_in_fit() -> None:
    with pytest.raises(UserError) as caught:
        parse_arch_kwargs(["novalue"])
    assert str(caught.value).startswith("bad arch_kwargs item 'novalue'")
    fit = typer.main.get_command(app).commands["fit"]
    assert render_for_command(caught.value, fit).startswith("bad --arch-kwargs item 'novalue'")
    with pytest.raises(UserError) as caught:
        build_module("torchvision:resnet18", {"weights": "DEFAULT"})
    assert "drop weights=/pretrained= from arch_kwargs" in str(caught.value)
    assert "from --arch-kwargs" in render_for_command(caught.value, fit)


def flags_in_code_strings(path: Path) -> set[str]:
    """The flags spelled by any string the code of ``path`` builds (docstrings apart): a flag handed to a
    helper (``option="--png"``), a progress label, a note, as well as the messages of ``UserError``.
    An f-string is read whole (its fields as ``X``), so that a quoted command line split by a field is allowed.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped: set[int] = set()
    texts: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            skipped.add(id(node.value))  # docstrings (of modules, classes, functions and attributes)
        elif isinstance(node, ast.JoinedStr):
            texts.append("".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values))
            skipped.update(id(v) for v in node.values)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped:
            texts.append(node.value)
    return {flag for text in texts for flag in FLAG.findall(QUOTED_COMMAND.sub("", text))}


def test_the_code_scan_finds_flags_outside_messages(tmp_path: Path) -> None:
    spelled = tmp_path / "spelled.py"
    spelled.write_text(
        '"""Module docs may say --png."""\n'
        'folder = make_output_directory(path, "--png")\n'
        'label = f"prune {x} --evaluate"\n'
        "hint = f\"run `uncert fit {ckpt} --data mnist`\"\n"
    )
    assert flags_in_code_strings(spelled) == {"--png", "--evaluate"}


def test_output_folders_are_named_by_parameter_and_shown_as_the_commands_flag(tmp_path: Path) -> None:
    from uncert_cli.core.atomic import make_output_directory

    a_file = tmp_path / "taken"
    a_file.write_text("x")
    with pytest.raises(UserError) as caught:
        make_output_directory(a_file, param="png")
    assert str(caught.value) == f"png {a_file} is a file; give a directory for the outputs"
    report = typer.main.get_command(app).commands["report"]
    assert render_for_command(caught.value, report).startswith(f"--png {a_file} is a file")

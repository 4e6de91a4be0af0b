"""``--help`` lists on/off flags without a type: ``--quiet <bool>`` read as an option taking a value, and
``--quiet true`` then made ``true`` a checkpoint ("no such checkpoint: true")."""

from __future__ import annotations

import pytest
import typer

from uncert_cli.cli.main import app


@pytest.mark.parametrize("command, flags", [
    ("fit", ("--quiet", "--json", "--include-frozen")),
    ("ood", ("--tune", "--json")),
    ("report", ("--json",)),
])
def test_flags_show_no_value_type(run_cli, command, flags):
    r = run_cli(command, "--help")
    assert r.code == 0
    for flag in flags:
        line = next(line for line in r.out.splitlines() if f" {flag} " in line)
        assert "<bool>" not in line, line
    assert "<int range>" in run_cli("fit", "--help").out  # options that take a value keep their type


COMMANDS = sorted(typer.main.get_command(app).commands)  # every subcommand, also one added later


@pytest.mark.parametrize("command", [(), *((c,) for c in COMMANDS)])
def test_no_option_of_any_command_shows_a_bool_type(run_cli, command):
    """``--help`` itself (made by click on demand, not among a command's parameters) kept ``<bool>``."""
    assert len(COMMANDS) >= 11
    r = run_cli(*command, "--help")
    assert r.code == 0 and "--help" in r.out
    assert "<bool>" not in r.out and "BOOLEAN" not in r.out, r.out

"""``--json`` on a command that fails: nothing on stdout (no half document, no error object), one line on
stderr, exit code 2 for bad input -- for every subcommand that takes ``--json`` (docs/json.md says so)."""

from __future__ import annotations

import pytest


@pytest.fixture
def factor_file(run_cli, digits_checkpoint, tmp_path):
    out = tmp_path / "f.h5"
    assert run_cli("fit", digits_checkpoint, "--limit", "32", "--method", "diag", "-o", out, "--quiet").code == 0
    return out


FAILING = {
    "info": ["info", "{missing}"],
    "fit": ["fit", "{checkpoint}", "--data", "{missing}", "-o", "{out}"],
    "report": ["report", "{missing}"],
    "compare": ["compare", "{factors}", "{missing}"],
    "ood": ["ood", "{factors}", "--against", "{missing}"],
    "attack": ["attack", "{factors}", "--data", "{missing}"],
    "prune": ["prune", "{factors}", "--fraction", "1.5"],
    "track": ["track", "{checkpoint}", "{missing}", "--data", "digits"],
    "tune": ["tune", "{factors}", "--data", "{missing}", "--split", "val"],
    "toy": ["toy", "--methods", "nonsense"],
}


@pytest.mark.parametrize("command", sorted(FAILING))
def test_a_failing_command_prints_nothing_on_stdout(run_cli, command, factor_file, digits_checkpoint, tmp_path):
    values = {"missing": str(tmp_path / "missing.npz"), "checkpoint": str(digits_checkpoint),
              "factors": str(factor_file), "out": str(tmp_path / "new.h5")}
    r = run_cli(*[word.format(**values) for word in FAILING[command]], "--json")
    assert r.code == 2, (command, r.err)
    assert r.out == "", (command, r.out)
    assert r.err.strip().startswith("uncert: error:") and len(r.err.strip().splitlines()) == 1, r.err

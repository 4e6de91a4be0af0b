"""What the commands print is the user's text as it is: a file or folder name with brackets (``x[exp].h5``,
``runs[3]/``) is not read as rich console markup (it printed 'wrote x.h5' for ``-o 'x[exp].h5'``), and a
note or warning on stderr stays one line when stderr is a file or a pipe (rich wrapped it at 80 columns, so
``grep warning: log`` found half a sentence)."""

from __future__ import annotations

import torch

from tests.reference.user_files import import_user_file


def test_names_with_brackets_are_printed_as_written(run_cli, digits_checkpoint, tmp_path):
    folder = tmp_path / "run[exp]"
    folder.mkdir()
    factors = folder / "f[a].h5"
    r = run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "16", "--method", "diag", "-o", factors)
    assert r.code == 0, r.err
    assert f"wrote {factors}" in r.out
    pruned = folder / "p[b].safetensors"
    r = run_cli("prune", factors, "--fraction", "0.2", "-o", pruned)
    assert r.code == 0 and f"wrote {pruned} (" in r.out, r.out
    other = folder / "g[c].h5"
    assert run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "16", "-o", other, "--quiet").code == 0
    r = run_cli("compare", factors, other)
    assert r.code == 0, r.err
    # The name whole: a long line may wrap anywhere in it (at a terminal's width), so whitespace is ignored.
    assert "".join(f"A {factors}:".split()) in "".join(r.out.split()), r.out
    r = run_cli("report", factors)
    assert r.code == 0 and "Verdict:" in r.out


def test_progress_bars_show_names_with_brackets_as_written(run_cli, digits_checkpoint, tmp_path):
    """A progress bar's description holds a checkpoint's file name (``track``): a name such as
    ``ep[bold]1.safetensors`` must not be read as a style (and vanish from the bar)."""
    checkpoint = tmp_path / "ep[bold]1.safetensors"
    checkpoint.write_bytes(digits_checkpoint.read_bytes())
    r = run_cli("track", checkpoint, "--data", "digits", "--limit", "16")
    assert r.code == 0, r.err
    assert f"fit {checkpoint.name} " in r.err, r.err


FROZEN_FILE = """
from torch import nn


class PartlyFrozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(64, 32)
        self.head = nn.Linear(32, 10)
        for p in self.body.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        return self.head(self.body(x.flatten(1)).relu())
"""


def test_a_long_note_on_stderr_is_one_line(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "frozen.py").write_text(FROZEN_FILE)
    torch.save(import_user_file(tmp_path, "frozen").PartlyFrozen().state_dict(), tmp_path / "model.pt")
    r = run_cli("fit", "model.pt", "--arch", "frozen.py:PartlyFrozen", "--data", "digits", "--limit", "16",
                "--method", "diag", "-o", "f.h5")
    assert r.code == 0, r.err
    notes = [line for line in r.err.splitlines() if "frozen parameters" in line]
    assert len(notes) == 1 and len(notes[0]) > 80, r.err
    assert notes[0].startswith("note:") and notes[0].rstrip().endswith("covers them too)")  # the whole note, one line

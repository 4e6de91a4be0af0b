"""Ctrl-C that Python itself would swallow still stops the command with exit code 130.

A SIGINT's handler runs wherever the main thread happens to be. When that is a finalizer (``__del__``,
a weakref callback: matplotlib runs many while it draws), a library's bare ``except:`` or an atexit
callback, the raised exception never reaches the CLI: Python prints "Exception ignored in ..." and
carries on. ``uncert demo`` once ran to the end and exited 0 after a Ctrl-C this way. The user's own
class here sends the SIGINT itself from such a place and then runs Python code, so the handler runs
there every time, not by chance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

# A user file: the preamble defines interrupt_here(), which the net calls in its first forward pass.
USER_FILE = '''
import atexit
import os
import signal

from torch import nn


def send_sigint():
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):  # Python code after the signal: its handler runs in here
        pass

{preamble}

_sent = []


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        if {on_forward} and not _sent:
            _sent.append(True)
            interrupt_here()
        return self.fc(x.flatten(1))
'''

IN_A_FINALIZER = '''
class _SignalsWhenDropped:
    def __del__(self):
        send_sigint()


def interrupt_here():
    _SignalsWhenDropped()  # dropped at once: its __del__ runs now
'''

IN_A_BARE_EXCEPT = '''
def interrupt_here():
    try:  # like a library's bare except: around an optional step
        send_sigint()
    except BaseException:
        pass
'''

AT_EXIT = '''
atexit.register(send_sigint)  # while Python shuts down after the command
interrupt_here = None
'''


def _fit(tmp_path: Path, preamble: str, *, on_forward: bool = True, json_output: bool = False):
    (tmp_path / "mynet.py").write_text(USER_FILE.format(preamble=preamble, on_forward=on_forward))
    torch.save({"fc.weight": 0.1 * torch.randn(10, 64), "fc.bias": torch.zeros(10)}, tmp_path / "net.pt")
    args = ["fit", "net.pt", "--arch", "mynet.py:Net", "--data", "digits", "--limit", "64", "--method", "diag",
            "-o", "f.h5", *(["--json"] if json_output else [])]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-m", "uncert_cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    return done.stdout, done.stderr.strip().splitlines()[-1]


def test_ctrl_c_inside_a_finalizer_stops_the_command(tmp_path):
    _, last = _fit(tmp_path, IN_A_FINALIZER)
    assert last == "uncert: interrupted; nothing was written"
    assert not (tmp_path / "f.h5").exists()


def test_ctrl_c_kept_by_a_bare_except_still_exits_130(tmp_path):
    # Nothing can stop the command where the exception vanished; it stops as soon as it returns, and the
    # line says truthfully what was written by then.
    _, last = _fit(tmp_path, IN_A_BARE_EXCEPT)
    assert last.startswith("uncert: interrupted; written before that: f.h5")


def test_ctrl_c_while_python_shuts_down_is_one_line_and_keeps_stdout(tmp_path):
    # It used to print a KeyboardInterrupt traceback from the atexit callback and exit 0.
    out, last = _fit(tmp_path, AT_EXIT, on_forward=False, json_output=True)
    assert last == "uncert: interrupted as the command finished; what it wrote is complete"
    assert json.loads(out)["method"] == "diag"  # the document printed before still comes out whole
    assert (tmp_path / "f.h5").is_file()


def test_a_file_renamed_into_place_just_before_ctrl_c_counts_as_written(tmp_path, monkeypatch):
    # The signal can land between the rename and the line that records the output; the interrupted
    # command must still name the file it leaves behind (it said "nothing was written").
    from uncert_cli.core import file_session
    from uncert_cli.core.atomic import write_bytes

    record = file_session.note_output

    def interrupted_first(path):
        monkeypatch.setattr(file_session, "note_output", record)
        raise KeyboardInterrupt

    target = tmp_path / "f.bin"
    with file_session.command_session():
        monkeypatch.setattr(file_session, "note_output", interrupted_first)
        with pytest.raises(KeyboardInterrupt):
            write_bytes(target, b"complete")
        assert file_session.written_files() == [target]
    assert target.read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]

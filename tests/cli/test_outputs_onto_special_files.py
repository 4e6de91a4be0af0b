"""An output path that names a named pipe or a device (``--html /dev/null``) is refused, and left as it was.

Every output is written to a temporary file and renamed onto its path. Renamed onto a FIFO or a device
node, that replaced the node itself with a regular file: ``uncert report f.h5 --html /dev/null``, run as
root, turned the machine's ``/dev/null`` into an HTML page for every other program. The nodes here are
made in the test's folder (a FIFO always; a character device like ``/dev/null``'s where the user may
create one, i.e. as root), also reached through a symbolic link.
"""

from __future__ import annotations

import os
import stat

import pytest


@pytest.fixture(scope="module")
def factor_file(digits_checkpoint, tmp_path_factory):
    from uncert_cli.cli.main import main

    out = tmp_path_factory.mktemp("special") / "f.h5"
    assert main(["fit", str(digits_checkpoint), "--data", "digits", "--limit", "64", "-o", str(out), "--quiet"]) == 0
    return out


def _nodes(folder, suffix: str):
    """``(path, S_IS* test)`` for each special file this user can make in ``folder``, named ``*suffix``."""
    fifo = folder / f"pipe{suffix}"
    os.mkfifo(fifo)
    nodes = [(fifo, stat.S_ISFIFO)]
    try:
        os.mknod(folder / f"null{suffix}", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        nodes.append((folder / f"null{suffix}", stat.S_ISCHR))
    except PermissionError:
        pass
    link = folder / f"link{suffix}"
    link.symlink_to(nodes[-1][0])
    nodes.append((link, nodes[-1][1]))
    return nodes


@pytest.mark.parametrize("suffix, command", [
    (".html", ("report", "{factors}", "--html", "{out}")),
    (".html", ("ood", "{factors}", "--against", "photo-patches", "--limit", "16", "--no-tune", "--html", "{out}")),
    (".safetensors", ("prune", "{factors}", "--fraction", "0.3", "-o", "{out}")),
    (".h5", ("fit", "{checkpoint}", "--data", "digits", "--limit", "16", "-o", "{out}")),
    (".json", ("toy", "--methods", "diag", "--no-tune", "--png", "{folder}/toy.png", "--json-out", "{out}")),
])
def test_an_output_onto_a_pipe_or_device_is_refused(run_cli, factor_file, digits_checkpoint, tmp_path, suffix, command):
    for node, is_kind in _nodes(tmp_path, suffix):
        words = [w.format(factors=factor_file, checkpoint=digits_checkpoint, out=node, folder=tmp_path) for w in command]
        r = run_cli(*words, "--quiet")
        assert r.code == 2, (node, r.code, r.err)
        lines = [line for line in r.err.splitlines() if line.strip()]
        assert len(lines) == 1 and "not a regular file" in lines[0], r.err
        assert is_kind(os.stat(node).st_mode), f"{node} was replaced"

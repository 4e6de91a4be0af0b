"""HDF5 files whose group heap is damaged: h5py raises RuntimeError, which every reader must refuse as damage.

An HDF5 group of the default (compact, symbol-table) layout keeps its member names in a local heap
(signature ``HEAP``); a bad sector or a hostile edit of the heap's data address makes every walk over the
group fail with ``RuntimeError: Link visitation failed (addr overflow ...)``, not the ``OSError`` the
readers expected. A data file read by ``fit --data`` / ``ood --against`` and a factor file read by
``compare`` (and ``ood``/``attack`` of several files, which read provenance first) used to end in an
internal error; now each is one line naming the file, exit 2, with nothing written.
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest


def _break_first_heap(path) -> None:
    """Point the first local heap's data segment far past the end of the file (8-byte address at offset 24)."""
    raw = bytearray(path.read_bytes())
    at = raw.index(b"HEAP")
    raw[at + 24 : at + 32] = (2**40).to_bytes(8, "little")
    path.write_bytes(bytes(raw))


def _assert_one_line(r, name: str) -> None:
    assert r.code == 2, (r.code, r.err)
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("uncert: error:") and name in lines[0], r.err
    assert "internal error" not in r.err


@pytest.fixture(scope="module")
def good_factors(digits_checkpoint, tmp_path_factory):
    from uncert_cli.cli.main import main

    out = tmp_path_factory.mktemp("heap") / "good.h5"
    assert main(["fit", str(digits_checkpoint), "--data", "digits", "--limit", "64", "-o", str(out), "--quiet"]) == 0
    return out


def test_a_data_file_with_a_broken_heap_is_refused(run_cli, digits_checkpoint, good_factors, tmp_path):
    data = tmp_path / "broken.h5"
    with h5py.File(data, "w") as f:
        f["images"] = np.zeros((8, 1, 8, 8), np.float32)
        f["labels"] = np.arange(8) % 10
    _break_first_heap(data)
    out = tmp_path / "f.h5"
    for spec in (str(data), f"{data}:images,labels"):
        _assert_one_line(run_cli("fit", digits_checkpoint, "--data", spec, "-o", out, "--quiet"), "broken.h5")
        assert not out.exists()
    _assert_one_line(run_cli("ood", good_factors, "--against", data, "--no-tune", "--quiet"), "broken.h5")


@pytest.mark.parametrize("command", [
    ("report",), ("tune", "--objective", "marglik"), ("compare", "{good}"), ("compare", "{good}", "--first"),
    ("ood", "{good}", "--no-tune"), ("attack", "{good}", "--no-tune"),
])
def test_a_factor_file_with_a_broken_heap_is_refused(run_cli, good_factors, tmp_path, command):
    broken = tmp_path / "broken.h5"
    shutil.copyfile(good_factors, broken)
    _break_first_heap(broken)
    words = [w.format(good=good_factors) for w in command if w != "--first"]
    if "--first" in command:  # the damaged file second
        words = [words[0], *words[1:], str(broken)]
    else:
        words = [words[0], str(broken), *words[1:]]
    _assert_one_line(run_cli(*words, "--quiet"), "broken.h5")

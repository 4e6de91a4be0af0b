"""Damaged ``.npz`` data files: one line, exit 2, no factor file, whichever way the bytes are broken.

numpy raises more than ``OSError``/``ValueError`` for a broken archive: ``zipfile.BadZipFile`` for a
truncated or overwritten zip (and a bad CRC), ``zlib.error`` for a corrupt compressed member, a tokenizer
error for a garbled array header. Each used to end ``fit --data`` and ``ood --against`` with an internal
error (exit 1). The fuzz below flips and cuts bytes of a real compressed npz with a fixed seed.
"""

from __future__ import annotations

import random

import numpy as np
import pytest


@pytest.fixture
def good_npz(tmp_path):
    path = tmp_path / "good.npz"
    rng = np.random.default_rng(0)
    np.savez_compressed(path, x=rng.random((32, 1, 8, 8), dtype=np.float32) * 16, y=np.arange(32) % 10)
    return path


def _assert_refused_or_read(r, out) -> None:
    assert r.code in (0, 2), (r.code, r.err)
    assert "Traceback" not in r.err and "internal error" not in r.err, r.err
    if r.code == 2:
        lines = [line for line in r.err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("uncert: error:"), r.err
        assert out is None or not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbled-header"])
def test_a_damaged_npz_is_one_line_naming_the_file(run_cli, digits_checkpoint, good_npz, tmp_path, damage):
    raw = good_npz.read_bytes()
    bad = tmp_path / "bad.npz"
    if damage == "truncated":
        bad.write_bytes(raw[: len(raw) // 3])
    else:  # the array header's Python literal cut by zeros (an uncompressed npz, so it is found as text)
        np.savez(bad, x=np.zeros((2, 1, 8, 8), np.float32), y=np.zeros(2, np.int64))
        plain = bytearray(bad.read_bytes())
        at = plain.index(b"{'descr'")
        plain[at + 5 : at + 30] = b"\x00" * 25
        bad.write_bytes(bytes(plain))
    out = tmp_path / "f.h5"
    r = run_cli("fit", digits_checkpoint, "--data", bad, "-o", out, "--quiet")
    _assert_refused_or_read(r, out)
    assert r.code == 2 and "bad.npz" in r.err
    r = run_cli("ood", _fit(run_cli, digits_checkpoint, tmp_path), "--against", bad, "--no-tune", "--json")
    _assert_refused_or_read(r, None)
    assert r.code == 2 and r.out == ""


def _fit(run_cli, checkpoint, folder):
    out = folder / "good.h5"
    if not out.exists():
        assert run_cli("fit", checkpoint, "--data", "digits", "--limit", "64", "-o", out, "--quiet").code == 0
    return out


def test_bytes_flipped_and_cut_anywhere_never_crash(run_cli, digits_checkpoint, good_npz, tmp_path):
    raw = good_npz.read_bytes()
    rnd = random.Random(0)
    bad = tmp_path / "fuzz.npz"
    out = tmp_path / "f.h5"
    refused = 0
    for _ in range(24):
        data = bytearray(raw)
        for _ in range(rnd.randint(1, 8)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        if rnd.random() < 0.3:
            data = data[: rnd.randrange(len(data))]
        bad.write_bytes(bytes(data))
        r = run_cli("fit", digits_checkpoint, "--data", bad, "--limit", "16", "-o", out, "--quiet")
        _assert_refused_or_read(r, out)
        refused += r.code == 2
        out.unlink(missing_ok=True)
    assert refused > 0  # the damage is real: some of it must be noticed

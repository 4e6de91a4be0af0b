"""``--arch-kwargs`` takes one ``key=value`` per use; a second one after it lands among the positional
arguments (``--arch-kwargs width=4 classes=10``). Whichever argument takes it (a checkpoint of ``fit`` or
``track``, a factor file of ``ood``, an extra argument of ``info``), the one-line error says how to pass
several constructor arguments, instead of asking for an output folder for "2 checkpoints" or telling the
user to fit a factor file called ``classes=10``.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def factor_file(run_cli, digits_checkpoint, tmp_path):
    out = tmp_path / "f.h5"
    assert run_cli("fit", digits_checkpoint, "--limit", "32", "--method", "diag", "-o", out, "--quiet").code == 0
    return out


def _says_repeat(err: str, word: str) -> None:
    line = err.strip().splitlines()[-1]
    assert line.startswith("uncert: error:")
    assert "--arch-kwargs takes one key=value each" in line and f"--arch-kwargs {word}" in line


def test_fit_and_track_name_the_stray_word(run_cli, digits_checkpoint, tmp_path):
    r = run_cli("fit", digits_checkpoint, "--arch-kwargs", "hidden=16", "classes=10", "--data", "digits",
                "-o", tmp_path / "f.h5")
    assert r.code == 2
    _says_repeat(r.err, "classes=10")
    assert "factor files" not in r.err and not (tmp_path / "f.h5").exists()
    r = run_cli("track", digits_checkpoint, "--arch-kwargs", "hidden=16", "classes=10", "--data", "digits")
    assert r.code == 2
    _says_repeat(r.err, "classes=10")


def test_a_missing_checkpoint_among_several_is_named_before_the_output_folder(run_cli, digits_checkpoint, tmp_path):
    r = run_cli("fit", digits_checkpoint, tmp_path / "gone.pt", "--data", "digits", "-o", tmp_path / "f.h5")
    assert r.code == 2 and "no such checkpoint" in r.err and "gone.pt" in r.err


def test_ood_and_info_name_the_stray_word(run_cli, digits_checkpoint, factor_file):
    r = run_cli("ood", factor_file, "--arch-kwargs", "hidden=16", "classes=10", "--against", "iris")
    assert r.code == 2
    _says_repeat(r.err, "classes=10")
    r = run_cli("info", digits_checkpoint, "--arch-kwargs", "hidden=16", "classes=10")
    assert r.code == 2
    _says_repeat(r.err, "classes=10")
    assert "uncert info --help" in r.err  # the running command's help, not the top level's


def test_a_command_without_arch_kwargs_does_not_suggest_it(run_cli, factor_file):
    r = run_cli("report", factor_file, "width=4")
    assert r.code == 2 and "--arch-kwargs" not in r.err and "uncert report --help" in r.err

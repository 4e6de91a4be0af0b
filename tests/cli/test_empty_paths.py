"""An empty path (``--png ''``, ``--html=``, ``-o ''``, ``report ''``) is refused at the option: it would become
``Path('')``, the current folder, so ``report --png ''`` wrote its figures there without a word and
``report --html ''`` was refused as "--html . is a directory", a name the user never typed."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def factor_file(run_cli, digits_checkpoint, tmp_path):
    out = tmp_path / "f.h5"
    assert run_cli("fit", digits_checkpoint, "--limit", "32", "--method", "diag", "-o", out, "--quiet").code == 0
    return out


@pytest.mark.parametrize("args, named", [
    (["report", "{f}", "--png", ""], "--png"),
    (["report", "{f}", "--html="], "--html"),
    (["prune", "{f}", "--fraction", "0.1", "-o", ""], "-o"),
    (["report", ""], "a path argument"),
])
def test_an_empty_path_is_refused_and_nothing_is_written(run_cli, factor_file, tmp_path, monkeypatch, args, named):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    r = run_cli(*[a.format(f=factor_file) for a in args])
    assert r.code == 2 and r.out == ""
    assert r.err.strip() == f"uncert: error: {named} is empty; give a file or folder name ('.' for the current folder)"
    assert os.listdir(work) == []


def test_an_empty_value_of_another_option_keeps_its_own_message(run_cli, factor_file):
    r = run_cli("ood", factor_file, "--predictive", "")
    assert r.code == 2 and "--predictive is empty; pass e.g." in r.err

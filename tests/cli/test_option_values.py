"""Nonsensical option values stop at the option, for every command, before any work (issue 21)."""

from __future__ import annotations

import io
import zipfile

import h5py
import numpy as np
import pytest
import torch
import typer

from uncert_cli.checkpoint import ModelMeta, save_model
from uncert_cli.cli.main import app
from uncert_cli.cli.validate import INT_LIMIT, number_kind
from uncert_cli.models import MLP
from uncert_cli.store import read_factor_file

HUGE = 64 * 10**12


def one_error_line(r, *, contains: str) -> str:
    assert r.code == 2, (r.code, r.err)
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("uncert: error:"), r.err
    assert "Traceback" not in r.err
    assert contains in lines[0], lines[0]
    return lines[0]


def number_options() -> list[tuple[str, str, type]]:
    """(command, flag, int|float) for every number option of every command, read from the app."""
    group = typer.main.get_command(app)
    found = []
    for name, command in group.commands.items():
        for param in command.params:
            kind = number_kind(param)
            if kind is not None and param.opts[0].startswith("-"):
                found.append((name, max(param.opts, key=len), kind))
    return found


OPTIONS = number_options()


def test_every_command_with_number_options_is_covered():
    commands = {c for c, _, _ in OPTIONS}
    assert {"fit", "report", "ood", "attack", "prune", "track", "tune", "toy"} <= commands
    assert ("fit", "--prior-precision", float) in OPTIONS and ("ood", "--batch-size", int) in OPTIONS


@pytest.mark.parametrize("command,flag,kind", OPTIONS, ids=[f"{c}{f}" for c, f, _ in OPTIONS])
def test_non_finite_and_overflowing_numbers_are_refused_at_the_option(run_cli, tmp_path, command, flag, kind):
    # The positional argument need not exist: the option is refused while the command line is parsed.
    positional = [] if command == "toy" else [str(tmp_path / "missing.h5")]
    # Options with their own min/max may refuse ±inf and nan there first; the others say "finite".
    checks = {"nan": "", "inf": "", "-inf": ""} if kind is float else {
        "118059162071": "out of range", str(10**30): "out of range"}
    for value, why in checks.items():
        r = run_cli(command, *positional, flag, value)
        line = one_error_line(r, contains=flag)
        assert why in line, line
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("flag", ["--prior-precision", "--n-data"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_fit_refuses_non_finite_prior_and_n(run_cli, digits_checkpoint, tmp_path, flag, value):
    out = tmp_path / "f.h5"
    one_error_line(run_cli("fit", digits_checkpoint, "--data", "digits", flag, value, "-o", out), contains="finite")
    assert not out.exists()


@pytest.mark.parametrize("command,flag", [("fit", "--seed"), ("ood", "--seed"), ("attack", "--target"), ("prune", "--top")])
def test_negative_counts_are_refused(run_cli, tmp_path, command, flag):
    one_error_line(run_cli(command, tmp_path / "x.h5", flag, "-1"), contains=flag)


def test_largest_allowed_int_passes_the_option_check(run_cli, digits_checkpoint, tmp_path):
    # 2³¹ - 1 is a valid --batch-size (larger than the data: one batch); the fit runs.
    out = tmp_path / "f.h5"
    r = run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "64", "--batch-size", INT_LIMIT, "-o", out, "-q")
    assert r.code == 0, r.err
    assert out.exists()


@pytest.mark.parametrize("value", ["", " ", "0", "-1GiB", "lots"])
def test_bad_max_memory_is_refused(run_cli, digits_checkpoint, tmp_path, value):
    out = tmp_path / "f.h5"
    one_error_line(run_cli("fit", digits_checkpoint, "--data", "digits", "--max-memory", value, "-o", out),
                   contains="--max-memory")
    assert not out.exists()


@pytest.mark.parametrize("method,most", [("lowrank", 1_210), ("kfac-diag", 1_040)])
def test_rank_above_the_parameter_count_is_refused(run_cli, digits_checkpoint, tmp_path, method, most):
    # digits_checkpoint: 64-16-10 MLP, 1,210 parameters; its largest layer has 16·(64+1) = 1,040.
    out = tmp_path / "f.h5"
    r = run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "64", "--method", method,
                "--rank", most + 1, "-o", out)
    line = one_error_line(r, contains="--rank")
    assert f"{most:,}" in line
    assert not out.exists()
    r = run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "64", "--method", method,
                "--rank", most, "-o", out, "-q")
    assert r.code == 0, r.err
    assert read_factor_file(out).fit["rank"] == most


def test_default_rank_recorded_as_used_on_a_model_smaller_than_it(run_cli, tmp_path):
    # 2 inputs, 3 classes: 9 parameters, below the default rank 20 (used to be recorded as 20).
    kwargs = {"in_features": 2, "hidden": [], "out_features": 3}
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(2,), task="classification",
                     num_outputs=3)
    ckpt = tmp_path / "tiny.safetensors"
    torch.manual_seed(0)
    save_model(MLP(**kwargs), meta, ckpt)
    data = tmp_path / "tiny.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((30, 2)).astype("float32"), y=np.arange(30) % 3)
    out = tmp_path / "f.h5"
    r = run_cli("fit", ckpt, "--data", data, "--method", "lowrank", "-o", out, "-q")
    assert r.code == 0, r.err
    assert read_factor_file(out).fit["rank"] == 9


def test_step_sizes_must_be_finite(run_cli, tmp_path):
    one_error_line(run_cli("attack", tmp_path / "x.h5", "--step-sizes", "0,inf"), contains="--step-sizes")


def _npz_declaring(path, shape):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    labels = io.BytesIO()
    np.save(labels, np.zeros(4, dtype=np.int64))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + b"\0" * 64)
        archive.writestr("y.npy", labels.getvalue())


def test_data_files_declaring_huge_arrays_are_user_errors(run_cli, digits_checkpoint, tmp_path):
    npz = tmp_path / "huge.npz"
    _npz_declaring(npz, (HUGE,))
    out = tmp_path / "f.h5"
    line = one_error_line(run_cli("fit", digits_checkpoint, "--data", npz, "-o", out), contains="huge.npz")
    assert "declares shape" in line
    h5 = tmp_path / "huge.h5"
    with h5py.File(h5, "w") as f:  # a chunked dataset costs nothing on disk until written
        f.create_dataset("images", shape=(HUGE, 1, 8, 8), dtype="f4", chunks=(64, 1, 8, 8))
        f.create_dataset("labels", data=np.zeros(4, dtype=np.int64))
    line = one_error_line(run_cli("fit", digits_checkpoint, "--data", h5, "-o", out), contains="huge.h5")
    assert "--limit" in line and "available" in line
    assert not out.exists()
    # With --limit the same file is only as large as the rows read: that check passes.
    r = run_cli("fit", digits_checkpoint, "--data", h5, "--limit", "4", "-o", out)
    assert "declares" not in r.err

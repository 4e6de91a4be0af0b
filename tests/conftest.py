"""Shared fixtures: the genuine data root, the real CLI entry point and a tiny real checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from uncert_cli.checkpoint import ModelMeta, save_model
from uncert_cli.cli.main import main
from uncert_cli.models import MLP

REPO = Path(__file__).resolve().parents[1]


def _shared_data_root() -> Path | None:
    candidates = [os.environ.get("UNCERT_DATA"), str(REPO.parent / "shared" / "data")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "MNIST").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The genuine datasets (``$UNCERT_DATA`` or ``../shared/data``); tests skip when absent."""
    root = _shared_data_root()
    if root is None:
        pytest.skip("genuine datasets not found: set UNCERT_DATA to the shared data folder")
    return root


@dataclass
class Run:
    code: int
    out: str
    err: str

    def __iter__(self):  # ``code, out, err = run_cli(...)``
        return iter((self.code, self.out, self.err))


@pytest.fixture
def run_cli(capfd):
    """Run ``uncert ARGS`` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> Run:
        capfd.readouterr()
        code = main([str(a) for a in args])
        captured = capfd.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    """A small (untrained but real) digits MLP with full uncert metadata."""
    torch.manual_seed(0)
    kwargs = {"in_features": 64, "hidden": [16], "out_features": 10}
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(1, 8, 8),
                     task="classification", num_outputs=10, dataset="digits")
    path = tmp_path_factory.mktemp("ckpt") / "digits_small.safetensors"
    save_model(MLP(**kwargs), meta, path)
    return path


@pytest.fixture(scope="session")
def digits_diag_factors(digits_checkpoint, tmp_path_factory) -> Path:
    """A real diag factor file of :func:`digits_checkpoint` fitted on 64 digits (read it; copy it to edit it)."""
    out = tmp_path_factory.mktemp("factors") / "diag.h5"
    code = main(["fit", str(digits_checkpoint), "--data", "digits", "--limit", "64", "--method", "diag",
                 "-o", str(out), "--quiet"])
    assert code == 0
    return out


@pytest.fixture
def ref_case(request):
    """A row of the declared reference table (``tests/reference/cases.py``), named by indirect
    parametrisation: ``@pytest.mark.parametrize("ref_case", ["mlp-cls", ...], indirect=True)``."""
    from tests.reference.cases import case

    return case(request.param)

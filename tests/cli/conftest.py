"""CLI tests drive the real entry point (``uncert_cli.cli.main.main``) on real files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from uncert_cli.checkpoint import ModelMeta, save_model
from uncert_cli.cli.main import main
from uncert_cli.models import MLP


@dataclass
class Run:
    code: int
    out: str
    err: str


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

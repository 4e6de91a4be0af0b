"""Scale-out: ``torchrun --nproc-per-node 2 -m uncert_cli fit`` equals the single-process fit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from uncert_cli.curvature import KroneckerBlock
from uncert_cli.store import read_factor_file


def _tensors(path):
    out = []
    for block in read_factor_file(path).curvature.blocks:
        if isinstance(block, KroneckerBlock):
            out += [block.input_factor, block.output_factor]
        else:
            out += list(block.diagonal)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kfac", "diag"])
def test_two_processes_match_one(run_cli, digits_checkpoint, tmp_path, method):
    single, double = tmp_path / "one.h5", tmp_path / "two.h5"
    common = ["--data", "digits", "--limit", "301", "--batch-size", "64", "--method", method, "--quiet"]
    assert run_cli("fit", digits_checkpoint, *common, "-o", single).code == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "uncert_cli", "fit", str(digits_checkpoint), *common, "-o", str(double)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_factor_file(double).curvature.n_data == 301  # both shards counted (151 + 150)
    assert read_factor_file(double).fit["world_size"] == 2
    for a, b in zip(_tensors(single), _tensors(double), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().max()))

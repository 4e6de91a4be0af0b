"""Write the checked-in factor files and their expected numbers (run by hand, never by the tests).

    PYTHONPATH=$PWD/src python -m tests.compat.make_files

Writes ``tests/compat/files/<method>.h5`` (one per structure: diag, kfac, ekfac, kfac-diag, lowrank, vi,
full) by running the real ``uncert fit`` on 60 iris examples with a seeded 4-5-4-3 MLP (64
parameters, float32), and ``tests/compat/files/<method>.json``: what :func:`tests.compat.numbers.posterior_numbers`
and ``uncert report --json`` answer for that file. The files are a compatibility contract: rerun this
only when the factor-file format or a JSON schema changes on purpose, never to make a test pass.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import torch

from tests.compat.numbers import FILES, METHODS, posterior_numbers, report_document
from uncert_cli.checkpoint import ModelMeta, save_model
from uncert_cli.cli.main import main
from uncert_cli.models import MLP

ARCH_KWARGS = {"in_features": 4, "hidden": [5, 4], "out_features": 3}
RANK = {"lowrank": ["--rank", "6"], "kfac-diag": ["--rank", "4"]}


def _checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=ARCH_KWARGS, input_shape=(4,),
                     task="classification", num_outputs=3, dataset="iris")
    path = folder / "iris_mlp.safetensors"
    save_model(MLP(**ARCH_KWARGS), meta, path)
    return path


def _fit(checkpoint: Path, method: str, out: Path) -> None:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["fit", str(checkpoint), "--data", "iris", "--limit", "60", "--method", method,
                     *RANK.get(method, []), "--prior-precision", "0.5", "-o", str(out), "--json", "--quiet"])
    if code != 0:
        sys.exit(f"fit --method {method} failed with exit code {code}")


def main_() -> None:
    FILES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = _checkpoint(Path(tmp))
        for method in METHODS:
            factors = FILES / f"{method}.h5"
            _fit(checkpoint, method, factors)
            expected = {"posterior": posterior_numbers(factors), "report": report_document(factors)}
            (FILES / f"{method}.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
            print(f"{factors}: {factors.stat().st_size} bytes")


if __name__ == "__main__":
    main_()

"""``uncert fit``, ``track``, ``tune`` and ``prune`` as one library call each, and several checkpoints read once each.

The user's class counts its constructions in a file beside it, so the tests see how often a checkpoint is
read (each read builds the network once) through the real entry point, on real files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.reference.user_files import import_user_file
from uncert_cli.core.errors import UserError
from uncert_cli.render.fit import fit_summary
from uncert_cli.render.report import track_document
from uncert_cli.storage.factor_file import read_factor_file
from uncert_cli.workflows import fit_checkpoints as workflow
from uncert_cli.workflows.fit import FitOptions
from uncert_cli.workflows.fit_checkpoints import CheckpointLoading, FitData, fit_checkpoints
from uncert_cli.workflows.prune import prune_factor_file
from uncert_cli.workflows.track import track_checkpoints
from uncert_cli.workflows.tune import HeldOutRequest, tune_factor_file

USER_FILE = '''
import pathlib

from torch import nn


class Net(nn.Module):
    def __init__(self, hidden=8):
        super().__init__()
        with pathlib.Path(__file__).with_name("BUILDS").open("a") as log:
            log.write("built\\n")
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.fc2(self.fc1(x.flatten(1)).relu())
'''
ARCH = ("--arch", "counted.py:Net")


def _forget_user_modules() -> None:
    for name in [n for n in sys.modules if n.startswith("uncert_user_arch_")]:
        del sys.modules[name]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """counted.py, three checkpoints of one run (seed0, seed1, seed2) and train.npz with splits."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("UNCERT_TRUST_ARCH", raising=False)
    (tmp_path / "counted.py").write_text(USER_FILE)
    counted = import_user_file(tmp_path, "counted")
    for seed in range(3):
        torch.manual_seed(seed)
        torch.save(counted.Net().state_dict(), tmp_path / f"seed{seed}.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x_train=rng.random((48, 1, 8, 8), dtype=np.float32),
             y_train=rng.integers(0, 10, 48), x_test=rng.random((16, 1, 8, 8), dtype=np.float32),
             y_test=rng.integers(0, 10, 16))
    (tmp_path / "BUILDS").unlink()
    _forget_user_modules()
    yield tmp_path
    _forget_user_modules()


def _builds(folder: Path) -> int:
    path = folder / "BUILDS"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_several_checkpoints_are_each_read_once(run_cli, project) -> None:
    r = run_cli("fit", "seed0.pt", "seed1.pt", "seed2.pt", *ARCH, "--data", "train.npz", "--method", "diag",
                "-o", "out", "--json", "--quiet")
    assert r.code == 0, r.err
    assert [Path(d["output"]).name for d in json.loads(r.out)] == ["seed0.h5", "seed1.h5", "seed2.h5"]
    assert _builds(project) == 3  # compared and fitted from one read each
    for seed in range(3):  # each file holds its own checkpoint's weights
        stored = read_factor_file(project / "out" / f"seed{seed}.h5").state_dict["fc1.weight"]
        assert torch.equal(torch.as_tensor(stored), torch.load(f"seed{seed}.pt", weights_only=True)["fc1.weight"])


def test_large_checkpoints_are_not_all_held_at_once(run_cli, project, monkeypatch) -> None:
    """Beyond the budget only the first checkpoint is kept from the comparison; the others are read again."""
    monkeypatch.setattr(workflow, "KEEP_LOADED_BYTES", 0)
    r = run_cli("fit", "seed0.pt", "seed1.pt", "seed2.pt", *ARCH, "--data", "train.npz", "--method", "diag",
                "-o", "out", "--quiet")
    assert r.code == 0, r.err
    assert _builds(project) == 5


def test_the_python_call_does_what_the_command_does(run_cli, project) -> None:
    r = run_cli("fit", "seed0.pt", *ARCH, "--data", "train.npz", "--method", "diag", "--normalize", "0.5,0.25",
                "--limit", "32", "-o", "cli.h5", "--json", "--quiet")
    assert r.code == 0, r.err
    (fitted,) = fit_checkpoints(
        ["seed0.pt"], "py.h5", FitOptions(method="diag"), loading=CheckpointLoading(arch="counted.py:Net"),
        data=FitData(spec="train.npz", normalize="0.5,0.25", limit=32),
    )
    assert fitted.output == Path("py.h5") and fitted.checkpoint == Path("seed0.pt")
    by_cli, by_python = json.loads(r.out), fit_summary(fitted.result, fitted.output, fitted.conversion)
    for key in ("method", "n_data", "parameters", "layers", "dataset", "split", "log_likelihood", "input_conversion"):
        assert by_python[key] == by_cli[key], key
    cli_file, py_file = read_factor_file("cli.h5"), read_factor_file("py.h5")
    assert py_file.model_meta == cli_file.model_meta  # input shape, normalisation, class: recorded alike
    assert list(py_file.model_meta.normalize_mean) == [0.5]
    for a, b in zip(cli_file.curvature.blocks, py_file.curvature.blocks, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a.diagonal, b.diagonal, strict=True))


def test_the_python_call_names_parameters(project) -> None:
    with pytest.raises(UserError) as caught:
        fit_checkpoints(["seed0.pt", "seed1.pt"], "out.h5", FitOptions(method="diag"))
    assert "name a folder for them with output (e.g. output factors/)" in str(caught.value)


def test_the_command_shows_the_flag(run_cli, project) -> None:
    r = run_cli("fit", "seed0.pt", "seed1.pt", *ARCH, "--data", "train.npz", "-o", "one.h5")
    assert r.code == 2 and "name a folder for them with --output (e.g. --output factors/)" in r.err
    assert _builds(project) == 0  # refused before any checkpoint was read


def test_track_reads_each_checkpoint_once(run_cli, project) -> None:
    r = run_cli("track", "seed2.pt", "seed0.pt", "seed1.pt", *ARCH, "--data", "train.npz", "--method", "diag", "--json")
    assert r.code == 0, r.err
    assert _builds(project) == 3
    by_cli = json.loads(r.out)
    result = track_checkpoints(["seed2.pt", "seed0.pt", "seed1.pt"], FitOptions(method="diag"),
                               data=FitData(spec="train.npz"), loading=CheckpointLoading(arch="counted.py:Net"))
    assert [p.checkpoint for p in result.points] == ["seed0.pt", "seed1.pt", "seed2.pt"]  # by the number in the name
    assert track_document(result, []) == {**by_cli, "pngs": []}


def test_tune_in_one_python_call_chooses_what_the_command_chooses(run_cli, project) -> None:
    r = run_cli("fit", "seed0.pt", *ARCH, "--data", "train.npz", "--method", "diag", "-o", "f.h5", "--quiet")
    assert r.code == 0, r.err
    r = run_cli("tune", "f.h5", *ARCH, "--val-from", "test", "--val-size", "8", "--dry-run", "--json")
    assert r.code == 0, r.err
    outcome = tune_factor_file("f.h5", objective="widest", held_out=HeldOutRequest(val_from="test", val_size=8),
                               arch="counted.py:Net", write=False)
    by_cli = json.loads(r.out)
    assert by_cli["validation"]["examples"] == "test[0:8]"
    assert {k: by_cli[k] for k in outcome.to_dict()} == json.loads(json.dumps(outcome.to_dict()))


def test_prune_in_one_python_call_does_what_the_command_does(run_cli, project) -> None:
    r = run_cli("fit", "seed0.pt", *ARCH, "--data", "train.npz", "--method", "diag", "-o", "f.h5", "--quiet")
    assert r.code == 0, r.err
    r = run_cli("prune", "f.h5", *ARCH, "--fraction", "0.5", "-o", "cli.safetensors", "--evaluate", "--fractions",
                "0.3,0.6", "--data", "train.npz", "--json")
    assert r.code == 0, r.err
    by_cli = json.loads(r.out)
    outcome = prune_factor_file("f.h5", fraction=0.5, output="py.safetensors", evaluate=[0.3, 0.6], data="train.npz",
                                arch="counted.py:Net")
    assert outcome.selection is not None and outcome.evaluation is not None
    assert outcome.selection.pruned == by_cli["selection"]["pruned"] > 0
    assert [p.nll for p in outcome.evaluation.points] == [p["nll"] for p in by_cli["evaluation"]["points"]]
    cli_weights, py_weights = load_file("cli.safetensors"), load_file("py.safetensors")
    assert all(torch.equal(cli_weights[k], py_weights[k]) for k in cli_weights)
    with pytest.raises(UserError) as caught:  # the library names its parameters
        prune_factor_file("f.h5", output="x.safetensors")
    assert str(caught.value).startswith("give fraction F (e.g. fraction 0.5) to choose weights, or evaluate")
    r = run_cli("prune", "f.h5", "-o", "x.safetensors")
    assert r.code == 2 and "give --fraction F (e.g. --fraction 0.5) to choose weights, or --evaluate" in r.err

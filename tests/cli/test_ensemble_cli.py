"""Several checkpoints at once: ``uncert fit A B -o folder``, ``uncert ood A.h5 B.h5`` (deep ensemble and
mixture of Laplace) and ``uncert attack A.h5 B.h5``, through the real entry point on real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from uncert_cli.checkpoint import ModelMeta, save_model
from uncert_cli.cli.main import main
from uncert_cli.models import MLP

KWARGS = {"in_features": 64, "hidden": [16], "out_features": 10}


def _checkpoint(path: Path, seed: int, kwargs: dict = KWARGS) -> Path:
    torch.manual_seed(seed)
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(1, 8, 8),
                     task="classification", num_outputs=10, dataset="digits")
    save_model(MLP(**kwargs), meta, path)
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> dict[str, Path]:
    """Two checkpoints of one architecture fitted in one call, a kfac file of the first, one of another
    architecture, and an OOD set of noise images."""
    folder = tmp_path_factory.mktemp("ensemble")
    a, b = _checkpoint(folder / "seed0.safetensors", 0), _checkpoint(folder / "seed1.safetensors", 1)
    other = _checkpoint(folder / "narrow.safetensors", 2, {**KWARGS, "hidden": [8]})
    code = main(["fit", str(a), str(b), "--data", "digits", "--limit", "64", "--method", "diag",
                 "-o", str(folder / "factors"), "--quiet"])
    assert code == 0
    for source, name in ((a, "seed0_kfac.h5"), (other, "narrow.h5")):
        assert main(["fit", str(source), "--data", "digits", "--limit", "64", "-o", str(folder / name), "--quiet"]) == 0
    rng = np.random.default_rng(0)
    noise = folder / "noise.npz"
    np.savez(noise, x=rng.uniform(0, 16, size=(48, 1, 8, 8)).astype(np.float32), y=np.zeros(48, dtype=np.int64))
    return {"a": folder / "factors" / "seed0.h5", "b": folder / "factors" / "seed1.h5", "a_kfac": folder / "seed0_kfac.h5",
            "other": folder / "narrow.h5", "noise": noise, "checkpoints": folder}


OOD = ("--limit", "64", "--no-tune", "--predictive", "map,probit", "--json")


def test_fit_writes_one_file_per_checkpoint_into_the_folder(members, run_cli, tmp_path) -> None:
    folder = members["checkpoints"]
    r = run_cli("fit", folder / "seed0.safetensors", folder / "seed1.safetensors", "--data", "digits", "--limit", "32",
                "--method", "diag", "-o", tmp_path / "out", "--json", "--quiet")
    assert r.code == 0, r.err
    outputs = [d["output"] for d in json.loads(r.out)]
    assert outputs == [str(tmp_path / "out" / "seed0.h5"), str(tmp_path / "out" / "seed1.h5")]
    assert all(Path(p).is_file() for p in outputs)


def test_ood_reports_members_ensemble_and_mixture(members, run_cli) -> None:
    r = run_cli("ood", members["a"], members["b"], "--against", members["noise"], *OOD)
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["predictives"] == ["map-1", "probit-1", "map-2", "probit-2", "ensemble", "mixture-probit"]
    assert doc["members"] == [str(members["a"]), str(members["b"])]
    ind = doc["in_distribution"]
    # averaging predictive distributions: the entropy of the average is at least the average entropy,
    # and its NLL at most the average NLL (log is concave), example by example and so on the mean
    for combined, kind in (("ensemble", "map"), ("mixture-probit", "probit")):
        parts = [ind[f"{kind}-{m}"] for m in (1, 2)]
        assert ind[combined]["mean_entropy"] >= np.mean([p["mean_entropy"] for p in parts]) - 1e-12
        assert ind[combined]["nll"] <= np.mean([p["nll"] for p in parts]) + 1e-12
        assert ind[combined]["n"] == parts[0]["n"] == 64
    (ood,) = doc["ood"].values()
    assert set(ood) == set(doc["predictives"])


def test_an_ensemble_of_one_network_is_that_network(members, run_cli) -> None:
    """Two posteriors (diag, kfac) of the same checkpoint: their MAPs agree, so the ensemble must equal
    each member's MAP exactly."""
    r = run_cli("ood", members["a"], members["a_kfac"], "--against", members["noise"], *OOD)
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    for section in ("in_distribution", "misclassification"):
        assert doc[section]["ensemble"] == pytest.approx(doc[section]["map-1"])
    (ood,) = doc["ood"].values()
    assert ood["ensemble"] == pytest.approx(ood["map-2"])


def test_attack_goes_through_the_ensemble_and_the_mixture(members, run_cli) -> None:
    r = run_cli("attack", members["a"], members["b"], "--limit", "16", "--no-tune", "--mode", "untargeted",
                "--step-sizes", "0,0.1", "--samples", "2", "--predictive", "map,glm", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["predictives"] == ["map-1", "ensemble", "glm-1", "mixture-glm"]
    for curve in doc["untargeted"].values():
        assert curve["step_sizes"] == [0.0, 0.1] and curve["n"] == 16


def test_attack_reports_every_members_hyperparameters(members, run_cli, tmp_path) -> None:
    """The mixture attacks each member with its own N and τ, so the several-file document lists them all;
    the single-file document keeps its keys."""
    tuned = tmp_path / "seed1_tuned.h5"
    tuned.write_bytes(members["b"].read_bytes())
    r = run_cli("tune", tuned, "--objective", "marglik", "--json", "--quiet")
    assert r.code == 0, r.err
    tau = json.loads(r.out)["prior_precision"]
    attack = ("--limit", "8", "--no-tune", "--mode", "untargeted", "--step-sizes", "0,0.1", "--samples", "2",
              "--predictive", "map,glm", "--json")
    r = run_cli("attack", members["a"], tuned, *attack)
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    first, second = doc["member_hyperparameters"]
    assert first == doc["hyperparameters"] and set(first) == {"map-1", "glm-1"} and set(second) == {"map-2", "glm-2"}
    assert first["map-1"] is None and second["map-2"] is None
    assert second["glm-2"]["prior_precision"] == pytest.approx(tau) != first["glm-1"]["prior_precision"]
    r = run_cli("attack", members["a"], *attack)
    assert r.code == 0, r.err
    assert "member_hyperparameters" not in json.loads(r.out)


def test_attack_of_several_files_refuses_a_target_the_model_lacks(members, run_cli) -> None:
    """One run_attack for one file or several: the members' model is checked like a single file's."""
    r = run_cli("attack", members["a"], members["b"], "--limit", "16", "--no-tune", "--mode", "targeted",
                "--target", "10")
    assert r.code == 2 and r.out == ""
    errors = [line for line in r.err.splitlines() if line.startswith("uncert: error:")]
    assert len(errors) == 1 and "--target 10 is not a class of this model" in errors[0] and "Traceback" not in r.err


@pytest.mark.parametrize("command", ["ood", "attack"])
def test_mixed_architectures_are_refused(members, run_cli, command) -> None:
    r = run_cli(command, members["a"], members["other"], "--limit", "16", "--json")
    assert r.code == 2 and r.out == ""
    assert "another architecture" in r.err and "narrow.h5" in r.err and len(r.err.strip().splitlines()) == 1


def test_fit_refuses_mixed_architectures_before_writing(members, run_cli, tmp_path) -> None:
    folder = members["checkpoints"]
    r = run_cli("fit", folder / "seed0.safetensors", folder / "narrow.safetensors", "--data", "digits",
                "-o", tmp_path / "out")
    assert r.code == 2 and "another architecture" in r.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("output", "needle"),
    [(None, "name a folder"), ("one.h5", "name a folder")],
)
def test_fit_of_several_checkpoints_needs_a_folder(members, run_cli, tmp_path, output, needle) -> None:
    folder = members["checkpoints"]
    extra = ("-o", tmp_path / output) if output else ()
    r = run_cli("fit", folder / "seed0.safetensors", folder / "seed1.safetensors", "--data", "digits", *extra)
    assert r.code == 2 and needle in r.err and len(r.err.strip().splitlines()) == 1


def test_members_evaluated_on_other_examples_are_refused(members, run_cli, tmp_path) -> None:
    """Same set, same count, other examples: a member tuned by `uncert tune` is not tuned again, so it is
    evaluated from the first test example, while the other holds the first ones out to tune on."""
    tuned = tmp_path / "seed1_tuned.h5"
    tuned.write_bytes(members["b"].read_bytes())
    r = run_cli("tune", tuned, "--objective", "marglik", "--quiet")
    assert r.code == 0, r.err
    same = ("--limit", "16", "--val-from", "test", "--val-size", "20", "--predictive", "map,probit", "--json")
    r = run_cli("ood", members["a"], tuned, "--against", members["noise"], *same)
    assert r.code == 2 and r.out == ""
    # one error; the first member's tuning may warn before it of a value on the grid's edge
    (line,) = [line for line in r.err.strip().splitlines() if "edge of the searched grid" not in line]
    assert line.startswith(f"uncert: error: '{tuned}' evaluates on other examples of digits than '{members['a']}'")
    assert "give both --tune or both --no-tune" in line
    r = run_cli("ood", members["a"], tuned, "--against", members["noise"], *same, "--no-tune")
    assert r.code == 0, r.err


def test_the_same_file_twice_is_refused(members, run_cli) -> None:
    r = run_cli("ood", members["a"], members["a"], "--limit", "16")
    assert r.code == 2 and "given twice" in r.err


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_shipped_seeds_on_genuine_mnist(shared_data, run_cli, tmp_path) -> None:
    """The README's flow on two of the shipped seeds: one fit call, then the ensemble and the mixture."""
    seeds = sorted((Path(__file__).resolve().parents[2] / "sample_models" / "mnist_ensemble").glob("*.safetensors"))
    assert len(seeds) == 5
    r = run_cli("fit", *seeds[:2], "--data", "mnist", "--data-root", shared_data, "--limit", "1000", "-o", tmp_path / "ens",
                "--quiet")
    assert r.code == 0, r.err
    r = run_cli("ood", *sorted((tmp_path / "ens").glob("*.h5")), "--data-root", shared_data, "--against", "notmnist",
                "--limit", "300", "--val-size", "200", "--tune-samples", "5", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["in_distribution"]["ensemble"]["accuracy"] > 0.9
    assert doc["ood"]["notmnist"]["mixture-probit"]["auroc_entropy"] > 0.5

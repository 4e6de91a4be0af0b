"""`uncert ood` and `uncert attack` end to end: real checkpoint, `uncert fit`, real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uncert_cli.checkpoint import ModelMeta, save_model
from uncert_cli.cli.main import main
from uncert_cli.data import adapt_to_model, load_dataset
from uncert_cli.models import MLP

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    model.train()
    for _ in range(steps):  # full batch: quick and deterministic
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def digits_factors(tmp_path_factory) -> Path:
    """A trained digits MLP fitted with `uncert fit` (KFAC)."""
    folder = tmp_path_factory.mktemp("ood_cli")
    torch.manual_seed(0)
    kwargs = {"in_features": 64, "hidden": [32], "out_features": 10, "dropout": 0.1}
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(1, 8, 8),
                     task="classification", num_outputs=10, dataset="digits")
    model = MLP(**kwargs)
    train = adapt_to_model(load_dataset("digits", split="train"), (1, 8, 8), num_outputs=10)
    _train(model, train.inputs, train.targets, 150)
    checkpoint = folder / "digits.safetensors"
    save_model(model, meta, checkpoint)
    factors = folder / "digits.h5"
    assert main(["fit", str(checkpoint), "-o", str(factors), "--json", "-q"]) == 0
    return factors


@pytest.fixture(scope="module")
def ood_files(tmp_path_factory) -> dict[str, Path]:
    """OOD sets as files: inverted digits, uniform noise; and broken ones (wrong shape, empty, NaN)."""
    folder = tmp_path_factory.mktemp("ood_sets")
    digits = load_dataset("digits", split="test")
    pixels = digits.inputs.numpy()  # uint8 (N, 1, 8, 8) meaning pixel/255
    labels = np.zeros(len(pixels), np.int64)
    rng = np.random.default_rng(0)
    files = {
        "inverted": (255 - pixels, labels),
        "noise": (rng.integers(0, 256, size=(200, 1, 8, 8)).astype(np.uint8), np.zeros(200, np.int64)),
        "wrong_shape": (rng.random((20, 1, 28, 28)).astype(np.float32), np.zeros(20, np.int64)),
        "empty": (np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, np.int64)),
        "nan": (np.full((5, 1, 8, 8), np.nan, np.float32), np.zeros(5, np.int64)),
    }
    out = {}
    for name, (x, y) in files.items():
        out[name] = folder / f"{name}.npz"
        np.savez(out[name], x=x, y=y)
    return out


def _json(result) -> dict:
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_ood_json_keys_ranges_and_pngs(run_cli, digits_factors, ood_files, tmp_path) -> None:
    png = tmp_path / "plots"
    doc = _json(run_cli(
        "ood", digits_factors, "--against", ood_files["inverted"], "--against", ood_files["noise"],
        "--predictive", "map,mc,glm", "--samples", "10", "--tune-samples", "5", "--val-size", "100",
        "--png", png, "--json",
    ))
    kinds = ["map", "mc", "glm"]
    assert doc["predictives"] == kinds
    assert doc["n_validation"] == 100 and doc["n_eval"] > 200
    for kind in kinds:
        d = doc["in_distribution"][kind]
        assert 0.8 <= d["accuracy"] <= 1 and d["nll"] > 0 and 0 <= d["brier"] <= 2 and 0 <= d["ece"] <= 1
        m = doc["misclassification"][kind]
        assert m["n_correct"] + m["n_wrong"] == doc["n_eval"]
        assert 0 <= m["auroc_entropy"] <= 1
        assert len(doc["reliability"][kind]["counts"]) == 15
        for name in (str(ood_files["inverted"]), str(ood_files["noise"])):
            o = doc["ood"][name][kind]
            for key in ("auroc_entropy", "aupr_entropy", "fpr95_entropy", "auroc_max_prob", "aupr_max_prob",
                        "fpr95_max_prob"):
                assert 0.0 <= o[key] <= 1.0, (name, kind, key)
            assert 0 <= o["mean_entropy"] <= np.log(10) + 1e-9
        assert doc["ood"][str(ood_files["noise"])][kind]["auroc_entropy"] > 0.5
    assert doc["hyperparameters"]["map"] is None
    assert doc["hyperparameters"]["glm"]["source"] == "tuned"
    # Default laplace predictive keeps accuracy (the tuned glm never collapses).
    assert abs(doc["in_distribution"]["glm"]["accuracy"] - doc["in_distribution"]["map"]["accuracy"]) <= 0.02
    assert sorted(Path(p).name for p in doc["pngs"]) == ["entropy_hist.png", "entropy_icdf.png", "reliability.png"]
    for path in doc["pngs"]:
        assert Path(path).read_bytes()[:8] == PNG_MAGIC
        image = plt_imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 300


def plt_imread(path: str) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.imread(path)


def test_ood_default_predictives_and_table(run_cli, digits_factors, ood_files) -> None:
    result = run_cli("ood", digits_factors, "--against", ood_files["noise"], "--samples", "10",
                     "--tune-samples", "5", "--val-size", "100", "-q")
    assert result.code == 0, result.err
    assert "probit" in result.out and "AUROC" in result.out and "Misclassification" in result.out


def test_ood_with_fixed_prior_skips_tuning(run_cli, digits_factors, ood_files) -> None:
    doc = _json(run_cli("ood", digits_factors, "--against", ood_files["noise"], "--predictive", "glm",
                        "--prior-precision", "5", "--samples", "5", "--limit", "50", "--json"))
    assert doc["n_validation"] == 0 and doc["n_eval"] == 50
    hp = doc["hyperparameters"]["glm"]
    assert hp["source"] == "override" and hp["prior_precision"] == 5.0


@pytest.mark.parametrize(
    "name, message",
    [("wrong_shape", "expects"), ("empty", "empty"), ("nan", "NaN")],
)
def test_ood_bad_sets_are_clear_errors(run_cli, digits_factors, ood_files, name, message) -> None:
    result = run_cli("ood", digits_factors, "--against", ood_files[name], "--predictive", "map", "--json")
    assert result.code == 2
    assert "--against" in result.err and message in result.err
    assert "Traceback" not in result.err and result.out == ""


@pytest.mark.parametrize("layout", ["x", "images", "single", "h5", "pt"])
def test_ood_sets_need_no_labels(run_cli, digits_factors, ood_files, tmp_path, layout) -> None:
    """An OOD set is inputs alone; it scores exactly as the same inputs saved with labels."""
    x = np.load(ood_files["noise"])["x"]
    if layout == "h5":
        import h5py

        path = tmp_path / "unlabelled.h5"
        with h5py.File(path, "w") as h5:
            h5["images"] = x
    elif layout == "pt":
        path = tmp_path / "unlabelled.pt"
        torch.save({"inputs": torch.from_numpy(x)}, path)
    else:
        path = tmp_path / "unlabelled.npz"
        np.savez(path, **{"noise_images" if layout == "single" else layout: x})
    args = ("--predictive", "map", "--limit", "40", "--json")
    alone = _json(run_cli("ood", digits_factors, "--against", path, *args))
    labelled = _json(run_cli("ood", digits_factors, "--against", ood_files["noise"], *args))
    assert alone["ood"][str(path)] == labelled["ood"][str(ood_files["noise"])]


def test_a_bad_ood_set_is_refused_before_tuning(run_cli, digits_factors, tmp_path) -> None:
    """A file with several arrays and no input array is named before the (slow) tuning starts."""
    path = tmp_path / "ambiguous.npz"
    np.savez(path, a=np.zeros((4, 1, 8, 8), np.float32), b=np.zeros((4, 1, 8, 8), np.float32))
    result = run_cli("ood", digits_factors, "--against", path, "--predictive", "glm", "--limit", "40")
    assert result.code == 2 and "INPUTS,LABELS" in result.err
    assert "tuning" not in result.err, result.err


def test_ood_bad_options(run_cli, digits_factors, ood_files) -> None:
    result = run_cli("ood", digits_factors, "--against", ood_files["noise"], "--predictive", "map,lasso")
    assert result.code == 2 and "unknown predictive 'lasso'" in result.err
    result = run_cli("ood", digits_factors, "--against", ood_files["noise"], "--against", ood_files["noise"])
    assert result.code == 2 and "twice" in result.err


@pytest.fixture(scope="module")
def rgb16_file(tmp_path_factory) -> Path:
    """A 16x16 RGB OOD set: the genuine digits test images, upscaled 2x and tinted differently per channel."""
    pixels = load_dataset("digits", split="test").inputs.numpy()[:, 0]  # uint8 (N, 8, 8)
    big = np.kron(pixels, np.ones((1, 2, 2), np.uint8))  # (N, 16, 16), each pixel a 2x2 block
    images = np.stack([big, 255 - big, big // 2], axis=1)  # (N, 3, 16, 16) channel-first
    path = tmp_path_factory.mktemp("rgb16") / "rgb16.npz"
    np.savez(path, images=images, labels=np.zeros(len(images), np.int64))
    return path


def test_ood_against_other_image_size_needs_resize_and_grayscale(run_cli, digits_factors, rgb16_file, ood_files) -> None:
    common = ("--predictive", "map", "--limit", "100", "--json")
    refused = run_cli("ood", digits_factors, "--against", rgb16_file, *common)
    assert refused.code == 2 and refused.out == "" and "Traceback" not in refused.err
    assert refused.err.count("\n") == 1 and "(3, 16, 16)" in refused.err
    assert "--channels 1 --resize 8,8" in refused.err and f"--against {rgb16_file}" in refused.err

    doc = _json(run_cli("ood", digits_factors, "--against", rgb16_file, "--resize", "8,8", "--grayscale", *common))
    name = str(rgb16_file)
    assert list(doc["ood"]) == [name] and doc["ood"][name]["map"]["n"] == 100
    assert 0.0 <= doc["ood"][name]["map"]["auroc_entropy"] <= 1.0
    assert doc["ood_resize"] == [8, 8] and doc["ood_grayscale"] is True

    # The in-distribution data is not converted: same metrics as a run without the options.
    plain = _json(run_cli("ood", digits_factors, "--against", ood_files["noise"], *common))
    assert plain["ood_resize"] is None and plain["ood_grayscale"] is False
    assert doc["n_eval"] == plain["n_eval"] and doc["in_distribution"] == plain["in_distribution"]


@pytest.mark.parametrize("text", ["8x8", "8", "8,8,8", "a,b", "0,8"])
def test_ood_malformed_resize_is_a_usage_error(run_cli, digits_factors, rgb16_file, text) -> None:
    result = run_cli("ood", digits_factors, "--against", rgb16_file, "--resize", text, "--predictive", "map")
    assert result.code == 2 and result.out == "" and "Traceback" not in result.err
    assert result.err.count("\n") == 1 and "--resize" in result.err and "28,28" in result.err


def test_ood_grayscale_refuses_non_image_sets(run_cli, digits_factors, tmp_path) -> None:
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=np.zeros((10, 64), np.float32), y=np.zeros(10, np.int64))
    result = run_cli("ood", digits_factors, "--against", flat, "--grayscale", "--predictive", "map")
    assert result.code == 2 and result.err.count("\n") == 1
    assert "not images" in result.err and f"--against {flat}" in result.err


def test_ood_genuine_fashionmnist_resized_to_digits(run_cli, digits_factors, shared_data) -> None:
    """Genuine 28x28 FashionMNIST against the 8x8 digits model, brought to 8x8 by --resize."""
    common = ("--data-root", shared_data, "--predictive", "map", "--limit", "200", "--json")
    refused = run_cli("ood", digits_factors, "--against", "fashionmnist", *common)
    assert refused.code == 2 and "--resize 8,8" in refused.err and "--grayscale" not in refused.err
    doc = _json(run_cli("ood", digits_factors, "--against", "fashionmnist", "--resize", "8,8", *common))
    assert doc["ood"]["fashionmnist"]["map"]["n"] == 200
    assert doc["ood"]["fashionmnist"]["map"]["auroc_entropy"] > 0.5  # clothes look unlike digits


def test_attack_json(run_cli, digits_factors, tmp_path) -> None:
    png = tmp_path / "attack"
    doc = _json(run_cli(
        "attack", digits_factors, "--predictive", "map,glm", "--samples", "4", "--steps", "3", "--step-size", "0.1",
        "--step-sizes", "0,0.3", "--limit", "60", "--prior-precision", "1", "--png", png, "--json",
    ))
    assert doc["predictives"] == ["map", "glm"] and doc["n"] == 60
    for kind in ("map", "glm"):
        u = doc["untargeted"][kind]
        assert u["step_sizes"] == [0.0, 0.3] and u["accuracy"][1] < u["accuracy"][0]
        t = doc["targeted"][kind]
        assert t["steps"] == [0, 1, 2, 3] and t["target_rate"][0] == 0.0
        assert all(0 <= v <= 1 for v in t["accuracy"] + t["target_rate"])
    assert all(Path(p).read_bytes()[:8] == PNG_MAGIC for p in doc["pngs"])
    bad = run_cli("attack", digits_factors, "--predictive", "probit")
    assert bad.code == 2 and "probit" in bad.err
    # A target that is no class is refused before the (default) tuning runs.
    bad = run_cli("attack", digits_factors, "--target", "10")
    assert bad.code == 2 and "--target 10" in bad.err and "tuning" not in bad.err


def test_mnist_vs_notmnist(run_cli, shared_data, tmp_path) -> None:
    """Genuine data: a small MNIST MLP, fitted on 2,000 training images, against notMNIST."""
    torch.manual_seed(0)
    kwargs = {"in_features": 784, "hidden": [32], "out_features": 10}
    norm = ((0.1307,), (0.3081,))
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(1, 28, 28),
                     normalize_mean=norm[0], normalize_std=norm[1], task="classification", num_outputs=10,
                     dataset="mnist")
    train = adapt_to_model(load_dataset("mnist", split="train", root=shared_data, limit=2000), (1, 28, 28),
                           normalize=norm, num_outputs=10)
    model = MLP(**kwargs)
    _train(model, train.inputs, train.targets, 100)
    checkpoint = tmp_path / "mnist_small.safetensors"
    save_model(model, meta, checkpoint)
    factors = tmp_path / "mnist_small.h5"
    assert run_cli("fit", checkpoint, "-o", factors, "--limit", "2000", "--data-root", shared_data, "--json").code == 0
    doc = _json(run_cli(
        "ood", factors, "--against", "notmnist", "--data-root", shared_data, "--limit", "400", "--val-size", "200",
        "--samples", "10", "--tune-samples", "5", "--json",
    ))
    # Default: map and the closed-form linearised predictive (every block is a Linear one).
    assert doc["predictives"] == ["map", "probit"]
    assert doc["n_eval"] == 400 and doc["ood"]["notmnist"]["probit"]["n"] == 400
    assert doc["in_distribution"]["map"]["accuracy"] > 0.8
    assert abs(doc["in_distribution"]["probit"]["accuracy"] - doc["in_distribution"]["map"]["accuracy"]) <= 0.02
    auroc = {k: doc["ood"]["notmnist"][k]["auroc_entropy"] for k in ("map", "probit")}
    assert all(0.0 <= v <= 1.0 for v in auroc.values())
    # A tiny MLP separates notMNIST poorly (Ritter Fig. 2: the MAP is confident on letters); the
    # Laplace predictive must not make it worse.
    assert auroc["probit"] >= auroc["map"] - 0.01, auroc


def _edges(hp: dict) -> list[str]:
    """Which of N and τ the tuned ``hp`` chose on an edge of its own searched grid."""
    return [key for key in ("n_data", "prior_precision")
            if hp[key] in (min(g[key] for g in hp["grid"]), max(g[key] for g in hp["grid"]))]


@pytest.mark.parametrize("command", ["ood", "attack"])
def test_a_tuned_value_on_the_grid_edge_is_warned_about(run_cli, digits_checkpoint, ood_files, tmp_path, command):
    """As `uncert tune` does: a warning on stderr (never in --json's stdout) and `at_grid_edge` in the JSON.
    The untrained digits MLP fitted on 64 examples chooses the smallest N of the grid."""
    factors = tmp_path / "f.h5"
    assert run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "64", "-o", factors, "-q").code == 0
    extra = ["--against", ood_files["noise"]] if command == "ood" else ["--steps", "1", "--step-sizes", "0,0.1"]
    args = [command, factors, *extra, "--predictive", "map,glm", "--limit", "32", "--val-size", "32",
            "--samples", "2", "--tune-samples", "2"]
    r = run_cli(*args, "--json")
    doc = _json(r)
    hp = doc["hyperparameters"]["glm"]
    assert hp["source"] == "tuned" and hp["at_grid_edge"] == _edges(hp) and "n_data" in hp["at_grid_edge"]
    warning = [line for line in r.err.splitlines() if "edge of the searched grid" in line]
    assert len(warning) == 1 and "glm predictive's best n_data" in warning[0] and "--n-data" in warning[0], r.err
    shown = run_cli(*args)  # the tables: the same warning on stderr, none on stdout
    assert shown.code == 0 and "edge of the searched grid" in shown.err and "edge of" not in shown.out
    fixed = _json(run_cli(*args, "--prior-precision", "1", "--json"))  # nothing tuned: nothing on an edge
    assert fixed["hyperparameters"]["glm"]["at_grid_edge"] == []

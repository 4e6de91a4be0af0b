"""`--split` on data files (issue 20): a file that holds splits gives the one asked for, a file
without splits is used whole only when no split was asked for, and the JSON says which it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uncert_cli.data import load_dataset
from uncert_cli.data.file_splits import split_was_given
from uncert_cli.errors import UserError


def _digits_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 1, 8, 8)).astype(np.uint8), rng.integers(0, 10, size=n).astype(np.int64)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    x_tr, y_tr = _digits_like(40, 0)
    x_te, y_te = _digits_like(30, 1)
    np.savez(tmp_path / "split.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    np.savez(tmp_path / "one.npz", x=x_tr, y=y_tr)
    import h5py

    with h5py.File(tmp_path / "grouped.h5", "w") as f:
        f["train/images"], f["train/labels"] = x_tr, y_tr
        f["test/images"], f["test/labels"] = x_te, y_te
    for split, n in (("train", 4), ("test", 3)):
        for cls in ("a", "b"):
            folder = tmp_path / "folder" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")
    return {p.stem if p.is_file() else p.name: p for p in tmp_path.iterdir()}


@pytest.mark.parametrize("name, train, test", [("split", 40, 30), ("grouped", 40, 30), ("folder", 8, 6)])
def test_a_file_with_splits_gives_the_split_asked_for(files, name: str, train: int, test: int) -> None:
    for split, n in (("train", train), ("test", test)):
        data = load_dataset(str(files[name]), split=split)
        assert (len(data), data.split) == (n, split)
    with pytest.raises(UserError, match="no 'val'.*pass split train or split test"):  # the CLI says --split
        load_dataset(str(files[name]), split="val")


def test_a_file_without_splits_is_whole_unless_a_split_is_required(files) -> None:
    data = load_dataset(str(files["one"]), split="test")
    assert (len(data), data.split) == (40, None)
    # The library names the parameter; the CLI (test_cli_split_on_a_file) shows the flag.
    with pytest.raises(UserError, match="^split test was given, but .*one.npz holds one set of examples") as caught:
        load_dataset(str(files["one"]), split="test", split_required_by=split_was_given("test"))
    assert "--" not in str(caught.value)


def test_cli_split_on_a_file(run_cli, digits_checkpoint, files, tmp_path) -> None:
    out = tmp_path / "f.h5"
    r = run_cli("fit", digits_checkpoint, "--data", files["one"], "--split", "test", "-o", out, "-q")
    assert r.code == 2 and "holds one set of examples" in r.err and not out.exists()
    assert "uncert: error: --split test was given, but" in r.err and "or drop --split to use" in r.err

    r = run_cli("fit", digits_checkpoint, "--data", files["one"], "-o", out, "--json", "-q")
    assert r.code == 0, r.err
    assert json.loads(r.out)["split"] is None  # the whole file, and the JSON says so

    # ood without --data evaluates the fit's data: a file without a test split would be the
    # examples the posterior was fitted on, so it is refused
    r = run_cli("ood", out, "--against", files["split"], "--json")
    assert r.code == 2 and "needs its test split" in r.err, r.err

    split_fit = tmp_path / "s.h5"
    r = run_cli("fit", digits_checkpoint, "--data", files["split"], "-o", split_fit, "--json", "-q")
    assert r.code == 0, r.err
    fit = json.loads(r.out)
    assert (fit["split"], fit["n_data"]) == ("train", 40)
    r = run_cli("ood", split_fit, "--against", files["one"], "--val-size", "10", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["in_distribution_split"] == "test" and doc["n_eval"] + doc["n_validation"] == 30
    assert doc["ood_splits"] == {str(files["one"]): None}


def test_a_failed_download_leaves_no_folder_behind(tmp_path) -> None:
    from uncert_cli.data.download import download_with_torchvision

    existing = tmp_path / "data"
    existing.mkdir()
    target = existing / "MNIST" / "raw"

    def fetch() -> None:  # what torchvision does when the network fails mid-way
        (target / "train-images-idx3-ubyte.gz").write_bytes(b"partial")
        raise OSError("connection reset")

    with pytest.raises(UserError, match="downloading 'mnist'.*connection reset"):
        download_with_torchvision("mnist", target, fetch)
    assert existing.is_dir() and list(existing.iterdir()) == []


def test_a_failed_cli_download_leaves_no_folder_behind(run_cli, digits_checkpoint, tmp_path, monkeypatch) -> None:
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", offline)  # never touch the network here
    root = tmp_path / "fresh"
    r = run_cli("fit", digits_checkpoint, "--data", "kmnist", "--data-root", root, "--download", "-o", tmp_path / "k.h5")
    assert r.code == 2 and "downloading 'kmnist'" in r.err, r.err
    assert not root.exists()


def test_ood_on_a_file_without_splits_names_its_held_out_rows_as_the_files(run_cli, digits_checkpoint, files,
                                                                         tmp_path) -> None:
    # The first rows tune N and τ and the rest are evaluated; they were labelled "test[0:8]", a split
    # the file does not have.
    factors = tmp_path / "f.h5"
    assert run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "32", "--method", "diag", "-o", factors,
                   "--quiet").code == 0
    r = run_cli("ood", factors, "--data", files["one"], "--against", files["split"], "--val-from", "test",
                "--val-size", "8", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["in_distribution_split"] is None
    assert doc["validation_examples"] == "file[0:8]" and doc["n_eval"] == 32

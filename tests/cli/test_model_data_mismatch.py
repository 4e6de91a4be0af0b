"""A model that cannot run on the data is one line (exit 2); --channels/--grayscale/--resize fix it (issue 11).

Through the real CLI with real models: torchvision's resnet18 on genuine MNIST, an MLP given RGB
images, an embedding given token ids beyond its vocabulary. The conversion given to ``fit`` is
recorded in the factor file and replayed by ood, attack, tune and prune --evaluate.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from uncert_cli.checkpoint import ModelMeta, save_model
from uncert_cli.data import ArrayDataset
from uncert_cli.errors import UserError
from uncert_cli.forward_check import check_model_runs
from uncert_cli.models import MLP
from uncert_cli.store import read_factor_file

RGB_MLP = {"in_features": 3 * 6 * 6, "hidden": [16], "out_features": 10}


def one_line_refusal(run, output: Path | None = None) -> str:
    """The error line of a refused command (exit 2, nothing on stdout, no traceback, no output file)."""
    assert run.code == 2, run.err
    assert run.out == "" and "Traceback" not in run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uncert: error:"), run.err
    assert output is None or not output.exists()
    return lines[0]


@pytest.fixture(scope="module")
def rgb_mlp_checkpoint(tmp_path_factory) -> Path:
    """An MLP on 3×6×6 images whose metadata names the digits set (1×8×8): it needs a conversion."""
    torch.manual_seed(0)
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=RGB_MLP, input_shape=(3, 6, 6),
                     task="classification", num_outputs=10, dataset="digits")
    path = tmp_path_factory.mktemp("rgb_mlp") / "rgb_mlp.safetensors"
    save_model(MLP(**RGB_MLP), meta, path)
    return path


def test_resnet18_on_mnist_says_channels_then_fits_with_them(run_cli, tmp_path, shared_data) -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    checkpoint = tmp_path / "resnet18.safetensors"
    meta = ModelMeta(arch="torchvision:resnet18", arch_kwargs={"num_classes": 10}, task="classification", num_outputs=10)
    save_model(torchvision.models.resnet18(num_classes=10), meta, checkpoint)
    out = tmp_path / "f.h5"
    common = ("--data", "mnist", "--data-root", shared_data, "--limit", "64", "--method", "diag", "-o", out)
    line = one_line_refusal(run_cli("fit", checkpoint, *common), out)
    assert "(1, 28, 28)" in line and "RuntimeError" in line and "to have 3 channels" in line  # the model's words
    assert "internal error" not in line and "--channels 3" in line

    # Only the last layer's curvature: the conversion is what is tested, not a deep diagonal (minutes).
    fitted = run_cli("fit", checkpoint, *common, "--channels", "3", "--resize", "32,32", "--subset", "fc", "--json")
    assert fitted.code == 0, fitted.err
    assert json.loads(fitted.out)["input_conversion"] == {"channels": 3, "size": [32, 32]}
    stored = read_factor_file(out).model_meta
    assert (stored.convert_channels, stored.convert_size) == (3, (32, 32))


def test_mlp_given_rgb_images_names_the_shape_and_the_conversion(run_cli, tmp_path) -> None:
    kwargs = {"in_features": 64, "hidden": [16], "out_features": 10}
    checkpoint = tmp_path / "mlp64.safetensors"  # no input shape recorded: the data's is tried
    save_model(MLP(**kwargs), ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, num_outputs=10), checkpoint)
    data = tmp_path / "rgb32.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.random((40, 3, 32, 32)).astype("float32"), y=rng.integers(0, 10, 40))
    out = tmp_path / "f.h5"
    line = one_line_refusal(run_cli("fit", checkpoint, "--data", data, "--method", "diag", "-o", out), out)
    assert "(3, 32, 32)" in line and "mat1 and mat2 shapes cannot be multiplied" in line
    assert "--channels 1 --resize 8,8" in line and "--input-shape" in line

    fitted = run_cli("fit", checkpoint, "--data", data, "--method", "diag", "--grayscale", "--resize", "8,8",
                     "-o", out, "--json")
    assert fitted.code == 0, fitted.err
    assert json.loads(fitted.out)["input_conversion"] == {"channels": 1, "size": [8, 8]}


BAG_OF_WORDS = '''
import torch
from torch import nn


class Bag(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, ids):
        return self.head(self.embed(ids).mean(dim=1))
'''


def test_token_ids_beyond_the_vocabulary_name_their_dtype(run_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bagnet.py").write_text(BAG_OF_WORDS)
    torch.manual_seed(0)
    embed, head = nn.Embedding(10, 4), nn.Linear(4, 3)
    checkpoint = tmp_path / "bag.pt"
    torch.save({"embed.weight": embed.weight.detach(), "head.weight": head.weight.detach(),
                "head.bias": head.bias.detach()}, checkpoint)
    data = tmp_path / "tokens.npz"
    np.savez(data, x=np.full((20, 7), 50, dtype=np.int64), y=np.zeros(20, dtype=np.int64))
    out = tmp_path / "f.h5"
    line = one_line_refusal(run_cli("fit", checkpoint, "--arch", "bagnet.py:Bag", "--data", data, "-o", out), out)
    assert "(7,) (int64 token ids)" in line and "IndexError" in line and "ids up to 50" in line


def test_conversion_is_recorded_and_replayed_by_later_commands(run_cli, rgb_mlp_checkpoint, tmp_path) -> None:
    out = tmp_path / "f.h5"
    refused = run_cli("fit", rgb_mlp_checkpoint, "--method", "kfac", "-o", out)
    line = one_line_refusal(refused, out)
    assert "(1, 8, 8)" in line and "--channels 3 --resize 6,6" in line  # digits are gray 8×8

    fitted = run_cli("fit", rgb_mlp_checkpoint, "--method", "kfac", "--channels", "3", "--resize", "6,6", "-o", out,
                     "--json")
    assert fitted.code == 0, fitted.err
    assert json.loads(fitted.out)["input_conversion"] == {"channels": 3, "size": [6, 6]}
    info = run_cli("info", out, "--json")
    assert info.code == 0 and json.loads(info.out)["input_conversion"] == {"channels": 3, "size": [6, 6]}
    assert "3 channels, 6×6" in run_cli("info", out).out

    # Every later command converts its data as the fit did, with no flag given.
    ood = run_cli("ood", out, "--against", "photo-patches", "--limit", "40", "--json")
    assert ood.code == 0, ood.err
    doc = json.loads(ood.out)
    assert doc["input_conversion"] == {"channels": 3, "size": [6, 6]} and doc["ood"]["photo-patches"]
    attack = run_cli("attack", out, "--predictive", "map", "--limit", "20", "--steps", "2", "--json")
    assert attack.code == 0, attack.err
    assert json.loads(attack.out)["input_conversion"] == {"channels": 3, "size": [6, 6]}
    tune = run_cli("tune", out, "--objective", "val-nll", "--samples", "5", "--dry-run", "--json")
    assert tune.code == 0, tune.err
    assert json.loads(tune.out)["validation"]["n"] > 0
    prune = run_cli("prune", out, "--evaluate", "--fractions", "0.5", "--limit", "40", "--json")
    assert prune.code == 0, prune.err

    # A flag replaces the recorded field: one channel is not what this model takes.
    line = one_line_refusal(run_cli("ood", out, "--against", "photo-patches", "--channels", "1", "--limit", "40"))
    assert "(1, 6, 6)" in line and "(3, 6, 6)" in line


def test_track_converts_with_the_flags(run_cli, rgb_mlp_checkpoint, tmp_path) -> None:
    common = ("--method", "diag", "--limit", "64", "--json")
    one_line_refusal(run_cli("track", rgb_mlp_checkpoint, *common))
    tracked = run_cli("track", rgb_mlp_checkpoint, *common, "--channels", "3", "--resize", "6,6")
    assert tracked.code == 0, tracked.err


def test_grayscale_and_three_channels_contradict(run_cli, rgb_mlp_checkpoint, tmp_path) -> None:
    out = tmp_path / "f.h5"
    line = one_line_refusal(run_cli("fit", rgb_mlp_checkpoint, "--grayscale", "--channels", "3", "-o", out), out)
    assert "--grayscale" in line and "--channels 3" in line
    line = one_line_refusal(run_cli("fit", rgb_mlp_checkpoint, "--channels", "2", "-o", out), out)
    assert "--channels 1" in line and "not 2" in line


def test_old_factor_files_without_the_record_open_unconverted(run_cli, digits_checkpoint, tmp_path) -> None:
    out = tmp_path / "f.h5"
    assert run_cli("fit", digits_checkpoint, "--method", "diag", "-o", out, "--quiet").code == 0
    with h5py.File(out) as f:  # nothing written when nothing was converted: the layout older files have
        stored = json.loads(f["model"].attrs["meta"])
    assert "convert_channels" not in stored and "convert_size" not in stored
    assert json.loads(run_cli("info", out, "--json").out)["input_conversion"] is None
    meta = ModelMeta.from_dict(stored)
    assert meta.convert_channels is None and meta.convert_size is None


def _dataset(inputs: torch.Tensor) -> ArrayDataset:
    return ArrayDataset("x", inputs, torch.zeros(len(inputs), dtype=torch.int64), "classification", 2, None)


class _Raises(nn.Module):
    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.error


def test_only_the_models_own_failures_become_user_errors() -> None:
    data = _dataset(torch.zeros(5, 4))
    with pytest.raises(UserError, match=r"shape \(4,\): its forward raised ValueError: bad input"):
        check_model_runs(_Raises(ValueError("bad input")), data)
    with pytest.raises(MemoryError):  # the sizes chosen, not the data: the CLI says which to lower
        check_model_runs(_Raises(MemoryError()), data)
    long = _Raises(RuntimeError("x" * 5000))
    with pytest.raises(UserError) as caught:
        check_model_runs(long, data)
    assert len(str(caught.value)) < 500  # quoted, shortened
    model = nn.Linear(4, 2).train()
    check_model_runs(model, data)  # runs: nothing raised, and its mode is restored
    assert model.training


def test_recorded_conversion_on_data_that_is_not_images_names_the_record(run_cli, rgb_mlp_checkpoint, tmp_path) -> None:
    out = tmp_path / "f.h5"
    fitted = run_cli("fit", rgb_mlp_checkpoint, "--method", "diag", "--channels", "3", "--resize", "6,6", "-o", out, "--quiet")
    assert fitted.code == 0, fitted.err
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=np.zeros((10, 100), np.float32), y=np.zeros(10, np.int64))
    line = one_line_refusal(run_cli("ood", out, "--against", flat, "--predictive", "map"))
    assert "not images" in line and "3 channels, 6×6" in line and "recorded" in line
    # Flat examples already of the model's input size need no conversion.
    np.savez(flat, x=np.zeros((10, 108), np.float32), y=np.zeros(10, np.int64))
    assert run_cli("ood", out, "--against", flat, "--predictive", "map", "--limit", "20").code == 0


def test_later_commands_refuse_data_their_model_cannot_run(run_cli, tmp_path, monkeypatch) -> None:
    """Token ids beyond the vocabulary reach ood, tune, prune --evaluate and attack as one line each."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UNCERT_TRUST_ARCH", "1")  # the factor file names bagnet.py:Bag
    (tmp_path / "bagnet.py").write_text(BAG_OF_WORDS)
    torch.manual_seed(0)
    embed, head = nn.Embedding(10, 4), nn.Linear(4, 3)
    checkpoint = tmp_path / "bag.pt"
    torch.save({"embed.weight": embed.weight.detach(), "head.weight": head.weight.detach(),
                "head.bias": head.bias.detach()}, checkpoint)
    rng = np.random.default_rng(0)
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, x=rng.integers(0, 10, (60, 7)), y=rng.integers(0, 3, 60))
    np.savez(bad, x=rng.integers(0, 40, (60, 7)), y=rng.integers(0, 3, 60))
    out = tmp_path / "f.h5"
    fitted = run_cli("fit", checkpoint, "--arch", "bagnet.py:Bag", "--data", good, "--method", "diag", "-o", out, "--quiet")
    assert fitted.code == 0, fitted.err
    for args in (("ood", out, "--data", bad, "--against", good, "--predictive", "map"),
                 ("ood", out, "--data", good, "--against", bad, "--predictive", "map"),
                 ("tune", out, "--objective", "val-nll", "--data", bad, "--dry-run"),
                 ("prune", out, "--evaluate", "--data", bad, "--fractions", "0.5")):
        line = one_line_refusal(run_cli(*args))
        assert "(7,) (int64 token ids)" in line and "IndexError" in line and "ids up to 3" in line, args


@pytest.mark.parametrize("recorded", [5, 12])
def test_metadata_num_outputs_that_the_model_contradicts_is_named_as_such(run_cli, tmp_path, recorded) -> None:
    # A 10-output MLP whose metadata says 5 (the digits' labels then look out of range) or 12 (they fit, and
    # the record would be written into the factor file): the record is to blame, not the data.
    torch.manual_seed(0)
    kwargs = {"in_features": 64, "hidden": [16], "out_features": 10}
    checkpoint = tmp_path / "wrong_width.safetensors"
    save_model(MLP(**kwargs), ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(1, 8, 8),
                                        task="classification", num_outputs=recorded, dataset="digits"), checkpoint)
    out = tmp_path / "f.h5"
    line = one_line_refusal(run_cli("fit", checkpoint, "--data", "digits", "--limit", "64", "-o", out), out)
    assert "the checkpoint's metadata and the model disagree" in line
    assert f"num_outputs {recorded}" in line and "computes 10 outputs" in line and "num_outputs 10" in line
    assert "dataset" not in line and "labels" not in line
    # The same through the library: load_model_data with the model checks its width before the labels.
    from uncert_cli.inputs import load_checkpoint_model, load_model_data

    loaded = load_checkpoint_model(checkpoint)
    with pytest.raises(UserError, match="metadata records num_outputs"):
        load_model_data(loaded.meta, "digits", limit=16, model=loaded.module)


def test_labels_beyond_a_correct_record_still_blame_the_data(run_cli, digits_checkpoint, tmp_path) -> None:
    labels = tmp_path / "labels12.npz"
    np.savez(labels, x=np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32), y=np.full(20, 12))
    line = one_line_refusal(run_cli("fit", digits_checkpoint, "--data", labels, "-o", tmp_path / "f.h5"))
    assert "has labels up to 12 but the model has only 10 outputs" in line

"""safetensors round trips, metadata, fingerprints, and broken safetensors files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.checkpoint.ckpt_helpers import MLP_ARCH, MLP_KWARGS
from uncert_cli.checkpoint import ModelMeta, load_model, save_model, weights_fingerprint
from uncert_cli.checkpoint.meta import HEADER_KEY
from uncert_cli.models import LeNet


def full_meta() -> ModelMeta:
    return ModelMeta(
        arch=MLP_ARCH,
        arch_kwargs=dict(MLP_KWARGS),
        input_shape=(12,),
        normalize_mean=(0.5,),
        normalize_std=(0.25,),
        task="classification",
        num_outputs=3,
        dataset="toy",
        noise_std=None,
        extra={"train_accuracy": 0.93, "seed": 0},
    )


def test_round_trip_keeps_weights_meta_and_fingerprint(tmp_path: Path, mlp) -> None:
    path = tmp_path / "model.safetensors"
    meta = full_meta()
    save_model(mlp, meta, path)
    loaded = load_model(path)

    assert loaded.meta == meta
    assert loaded.source == path
    assert loaded.fingerprint == weights_fingerprint(mlp) == weights_fingerprint(loaded.module)
    original = mlp.state_dict()
    assert all(torch.equal(original[k], v) for k, v in loaded.module.state_dict().items())
    assert not loaded.module.training
    assert all(p.device.type == "cpu" for p in loaded.module.parameters())
    # Atomic write: nothing but the model is left in the folder.
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_round_trip_with_buffers_and_regression_meta(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    model.train()(torch.randn(8, 3))  # moves the running statistics away from their defaults
    meta = ModelMeta(
        arch="torch.nn:Identity", task="regression", num_outputs=2, noise_std=0.1, input_shape=(3,)
    )
    path = tmp_path / "reg.safetensors"
    save_model(model, meta, path)
    # The stored arch (Identity) cannot hold these weights, so the explicit --arch must win.
    rebuilt_file = tmp_path / "regnet.py"
    rebuilt_file.write_text(
        "import torch\n"
        "def Net():\n"
        "    nn = torch.nn\n"
        "    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))\n"
    )
    loaded = load_model(path, arch=f"{rebuilt_file}:Net")
    assert loaded.fingerprint == weights_fingerprint(model)
    assert loaded.meta.task == "regression" and loaded.meta.noise_std == 0.1
    assert loaded.meta.arch == f"{rebuilt_file}:Net"


def test_meta_header_is_one_json_key_and_tolerates_foreign_headers() -> None:
    header = full_meta().to_header()
    assert list(header) == [HEADER_KEY] and isinstance(header[HEADER_KEY], str)
    assert ModelMeta.from_header(header) == full_meta()
    assert ModelMeta.from_header(None) == ModelMeta()
    assert ModelMeta.from_header({"format": "pt"}) == ModelMeta()


def test_meta_keeps_unknown_keys_from_newer_versions() -> None:
    header = {HEADER_KEY: '{"arch": "x:Y", "calibration": "temperature", "format_version": 9}'}
    meta = ModelMeta.from_header(header)
    assert meta.arch == "x:Y" and meta.extra == {"calibration": "temperature"}


def test_bad_meta_json_and_task_are_user_errors(user_error) -> None:
    assert "not valid JSON" in user_error(ModelMeta.from_header, {HEADER_KEY: "{oops"})
    assert "unknown task" in user_error(ModelMeta.from_header, {HEADER_KEY: '{"task": "ranking"}'})


def test_fingerprint_changes_with_weights_and_ignores_order(mlp) -> None:
    state = mlp.state_dict()
    reordered = dict(reversed(list(state.items())))
    assert weights_fingerprint(state) == weights_fingerprint(reordered) == weights_fingerprint(mlp)
    changed = {k: v.clone() for k, v in state.items()}
    changed["fc1.bias"][0] += 1e-6
    assert weights_fingerprint(changed) != weights_fingerprint(state)
    as_double = {k: v.double() for k, v in state.items()}
    assert weights_fingerprint(as_double) != weights_fingerprint(state)


def test_tied_weights_can_be_saved(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    model[1].weight = model[0].weight
    save_model(model, ModelMeta(), tmp_path / "tied.safetensors")
    file_arch = tmp_path / "tied.py"
    file_arch.write_text(
        "import torch\n"
        "def Tied():\n"
        "    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))\n"
        "    m[1].weight = m[0].weight\n"
        "    return m\n"
    )
    loaded = load_model(tmp_path / "tied.safetensors", arch=f"{file_arch}:Tied")
    assert loaded.fingerprint == weights_fingerprint(model)


def test_weights_only_safetensors_needs_arch(tmp_path: Path, mlp, user_error) -> None:
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, str(path))
    message = user_error(load_model, path)
    assert "only weights" in message and "pass arch " in message and "torchvision:resnet18" in message
    loaded = load_model(path, arch="MLP", arch_kwargs=dict(MLP_KWARGS))
    assert loaded.fingerprint == weights_fingerprint(mlp)


def test_overrides_for_input_shape_and_task(tmp_path: Path, user_error) -> None:
    path = tmp_path / "lenet.safetensors"
    save_model(LeNet(), ModelMeta(arch="uncert_cli.models:LeNet"), path)
    loaded = load_model(path, input_shape=[1, 28, 28], task="classification")
    assert loaded.meta.input_shape == (1, 28, 28)
    assert "unknown task" in user_error(load_model, path, task="clustering")
    assert "positive integers" in user_error(load_model, path, input_shape=(1, 0, 28))


@pytest.mark.parametrize("content", [b"\x00" * 3, b"this is not a tensor file at all" * 8])
def test_garbage_safetensors_is_rejected(tmp_path: Path, content: bytes, user_error) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    assert "not a valid safetensors file" in user_error(load_model, path, arch=MLP_ARCH)


def test_truncated_safetensors_is_rejected(tmp_path: Path, mlp, user_error) -> None:
    path = tmp_path / "model.safetensors"
    save_model(mlp, ModelMeta(arch=MLP_ARCH, arch_kwargs=dict(MLP_KWARGS)), path)
    path.write_bytes(path.read_bytes()[:-100])
    assert "not a valid safetensors file" in user_error(load_model, path)


def test_save_model_rejects_wrong_suffix_and_missing_folder(tmp_path: Path, mlp, user_error) -> None:
    assert "safetensors" in user_error(save_model, mlp, ModelMeta(), tmp_path / "m.pt")
    assert "does not exist" in user_error(save_model, mlp, ModelMeta(), tmp_path / "no" / "m.safetensors")


def test_save_model_replaces_existing_file(tmp_path: Path, mlp) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"old")
    save_model(mlp, ModelMeta(arch=MLP_ARCH, arch_kwargs=dict(MLP_KWARGS)), path)
    assert load_model(path).fingerprint == weights_fingerprint(mlp)

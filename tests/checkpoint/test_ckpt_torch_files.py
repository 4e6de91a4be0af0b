"""``.pt``/``.pth``/``.bin`` checkpoints: wrappers, prefixes, pickles, garbage."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tests.checkpoint.ckpt_helpers import MLP_ARCH, MLP_KWARGS
from tests.reference.user_files import import_user_file
from uncert_cli.checkpoint import ModelMeta, load_model, weights_fingerprint


def load_mlp(path: Path, **kwargs):
    return load_model(path, arch=MLP_ARCH, arch_kwargs=dict(MLP_KWARGS), **kwargs)


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model", "model_state_dict", "net", "module"])
@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod."])
def test_state_dict_wrappers_and_prefixes(tmp_path: Path, mlp, wrapper: str | None, prefix: str) -> None:
    state = {prefix + k: v for k, v in mlp.state_dict().items()}
    payload = state if wrapper is None else {wrapper: state, "epoch": 7, "optimizer": {"lr": 0.1}}
    path = tmp_path / "ckpt.pt"
    torch.save(payload, path)
    loaded = load_mlp(path)
    assert loaded.fingerprint == weights_fingerprint(mlp)
    assert loaded.meta.arch == MLP_ARCH and loaded.meta.arch_kwargs == MLP_KWARGS
    assert not loaded.module.training


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".weights"])
def test_other_suffixes(tmp_path: Path, mlp, suffix: str) -> None:
    path = tmp_path / f"ckpt{suffix}"
    torch.save(mlp.state_dict(), path)
    assert load_mlp(path).fingerprint == weights_fingerprint(mlp)


def test_legacy_torch_format(tmp_path: Path, mlp) -> None:
    path = tmp_path / "old.pt"
    torch.save(mlp.state_dict(), path, _use_new_zipfile_serialization=False)
    assert load_mlp(path).fingerprint == weights_fingerprint(mlp)


def test_lightning_style_prefix_is_stripped(tmp_path: Path, mlp) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in mlp.state_dict().items()}}, path)
    assert load_mlp(path).fingerprint == weights_fingerprint(mlp)


def test_uncert_meta_inside_pt_dict_is_used(tmp_path: Path, mlp) -> None:
    meta = ModelMeta(arch=MLP_ARCH, arch_kwargs=dict(MLP_KWARGS), dataset="toy")
    path = tmp_path / "with_meta.pt"
    torch.save({"state_dict": mlp.state_dict(), "uncert": meta.to_header()["uncert"]}, path)
    loaded = load_model(path)  # no --arch: it comes from the embedded metadata
    assert loaded.meta == meta and loaded.fingerprint == weights_fingerprint(mlp)


def test_state_dict_without_arch_is_refused(tmp_path: Path, mlp, user_error) -> None:
    path = tmp_path / "sd.pt"
    torch.save(mlp.state_dict(), path)
    message = user_error(load_model, path)
    assert "only weights" in message and "pass arch " in message and "with arch_kwargs " in message


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_random_bytes_are_not_a_checkpoint(tmp_path: Path, suffix: str, user_error) -> None:
    path = tmp_path / f"noise{suffix}"
    # Deterministic "random" bytes: a leading 0x80 would look like a pickle header.
    path.write_bytes(bytes((i * 97 + 13) % 256 for i in range(1, 4000)).replace(b"\x80", b"\x81"))
    assert "not a PyTorch checkpoint" in user_error(load_mlp, path)


def test_empty_file_is_not_a_checkpoint(tmp_path: Path, user_error) -> None:
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    assert "not a PyTorch checkpoint" in user_error(load_mlp, path)


def test_unknown_extension_with_garbage(tmp_path: Path, user_error) -> None:
    path = tmp_path / "model.dat"
    path.write_bytes(b"hello" * 50)
    assert "neither a safetensors file nor a PyTorch checkpoint" in user_error(load_mlp, path)


def test_unknown_extension_holding_safetensors(tmp_path: Path, mlp) -> None:
    from uncert_cli.checkpoint import save_model

    path = tmp_path / "model.safetensors"
    save_model(mlp, ModelMeta(arch=MLP_ARCH, arch_kwargs=dict(MLP_KWARGS)), path)
    renamed = path.rename(tmp_path / "model.weights")
    assert load_model(renamed).fingerprint == weights_fingerprint(mlp)


def test_non_state_dict_contents(tmp_path: Path, user_error) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.ones(2)], path)
    assert "holds a list" in user_error(load_mlp, path)
    torch.save({"epoch": 3, "lr": 0.1}, path)
    assert "no state dict" in user_error(load_mlp, path)


def test_missing_file_and_directory(tmp_path: Path, user_error) -> None:
    missing = tmp_path / "nope.pt"
    assert user_error(load_model, missing) == f"no such file: {missing}"
    assert "is a directory" in user_error(load_model, tmp_path)


# --- pickles -------------------------------------------------------------------------------

EVIL_SOURCE = '''
import os
from pathlib import Path

import torch


class EvilNet(torch.nn.Module):
    """A full module whose unpickling has a visible side effect."""

    def __init__(self, marker):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.marker = str(marker)

    def __setstate__(self, state):
        Path(state["marker"]).write_text("unpickled")
        super().__setstate__(state)

    def forward(self, x):
        return self.fc(x)


class Payload:
    """Classic exploit shape: unpickling calls os.mkdir."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.mkdir, (self.target,))
'''


@pytest.fixture
def evil_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Import a throwaway module defining EvilNet/Payload, as a user's training script would."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "uncert_test_evil.py").write_text(EVIL_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    import uncert_test_evil

    yield uncert_test_evil
    sys.modules.pop("uncert_test_evil", None)


def test_pickled_module_refused_without_trust(tmp_path: Path, evil_module, user_error) -> None:
    marker = tmp_path / "marker.txt"
    torch.manual_seed(0)
    path = tmp_path / "full.pt"
    torch.save(evil_module.EvilNet(marker), path)
    assert not marker.exists()

    message = user_error(load_model, path)
    assert "pickle" in message and "arbitrary code" in message and "Pass trust_pickle only if" in message
    assert "uncert_test_evil.EvilNet" in message
    assert not marker.exists(), "the pickle's code ran although trust_pickle was False"

    loaded = load_model(path, trust_pickle=True)
    assert marker.exists()  # proves the marker would have shown a run above
    assert type(loaded.module).__name__ == "EvilNet" and not loaded.module.training
    assert loaded.meta.arch is None
    assert loaded.fingerprint == weights_fingerprint(loaded.module)


def test_exploit_payload_in_wrapper_never_runs(tmp_path: Path, mlp, evil_module, user_error) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": mlp.state_dict(), "extra": evil_module.Payload(target)}, path)
    message = user_error(load_mlp, path)
    assert "Pass trust_pickle only if" in message and "mkdir" in message
    assert not target.exists()


def test_trusted_pickle_with_state_dict_and_namespace(tmp_path: Path, mlp) -> None:
    import argparse

    path = tmp_path / "train.pt"
    torch.save({"args": argparse.Namespace(lr=0.1), "model": mlp.state_dict()}, path)
    assert load_mlp(path, trust_pickle=True).fingerprint == weights_fingerprint(mlp)


def test_trusted_pickle_whose_class_is_gone(tmp_path: Path, user_error) -> None:
    folder = tmp_path / "gone"
    folder.mkdir()
    (folder / "uncert_test_gone.py").write_text(
        "import torch\nclass Gone(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = torch.nn.Linear(2, 2)\n"
    )
    gone = import_user_file(folder, "uncert_test_gone", forget=False)
    try:  # pickling the instance looks its class up in sys.modules
        torch.save(gone.Gone(), tmp_path / "gone.pt")
    finally:
        sys.modules.pop("uncert_test_gone", None)
    message = user_error(load_model, tmp_path / "gone.pt", trust_pickle=True)
    assert "not importable" in message


def test_truncated_torch_file(tmp_path: Path, mlp, user_error) -> None:
    path = tmp_path / "cut.pt"
    torch.save(mlp.state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    assert "not a PyTorch checkpoint" in user_error(load_mlp, path)


def test_safetensors_file_named_bin_still_loads(tmp_path: Path, mlp) -> None:
    from uncert_cli.checkpoint import save_model

    path = tmp_path / "model.safetensors"
    save_model(mlp, ModelMeta(arch=MLP_ARCH, arch_kwargs=dict(MLP_KWARGS)), path)
    renamed = path.rename(tmp_path / "pytorch_model.bin")
    assert load_model(renamed).fingerprint == weights_fingerprint(mlp)

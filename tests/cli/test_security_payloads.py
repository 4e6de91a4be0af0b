"""Hostile files: no checkpoint, factor file or payload in their metadata makes uncert run code.

Each payload names, in the file's metadata, a callable that would create a marker file if it were
ever called (a shell command, an unpickled file, a Python file's import).  Every command that opens
a checkpoint or a factor file is run on each payload through the real CLI; the marker must never
appear. Commands that load a checkpoint or run the network end in a one-line user error (exit 2);
those that answer from a factor file's weights alone (report, tune by the evidence, prune -o) never
look at the name, and answer (exit 0) unless the metadata itself is malformed.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import pytest
import torch
from safetensors.torch import save_file

from uncert_cli.checkpoint.arch import build_file_module, is_builtin_arch
from uncert_cli.errors import UserError
from uncert_cli.models import MLP

MLP_KWARGS = {"in_features": 64, "hidden": [8], "out_features": 10}


class _TouchOnUnpickle:
    """Unpickling this object creates ``path``: the classic pickle payload."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _payloads(tmp: Path, marker: Path) -> dict[str, tuple[object, dict]]:
    """Architecture names (and keyword arguments) that would run code if followed."""
    pickled = tmp / "evil.pkl"
    pickled.write_bytes(pickle.dumps(_TouchOnUnpickle(str(marker))))
    script = tmp / "payload.py"
    script.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nimport torch\nNet = torch.nn.Linear\n")
    shell = {"command": f"touch {marker}"}
    return {
        "attribute-path-to-os.system": ("uncert_cli.models:torch.os.system", shell),
        "spaces-around-colon": ("uncert_cli.models : torch.os.system", shell),
        "space-after-colon": ("uncert_cli.models: torch.os.system", shell),
        "torch.load-of-a-pickle": ("uncert_cli.models:torch.load", {"f": str(pickled), "weights_only": False}),
        "torch.hub.load": ("uncert_cli.models:torch.hub.load", {"repo_or_dir": str(tmp), "model": "x"}),
        "os.system": ("os:system", shell),
        "builtins.exec": ("builtins:exec", {"source": f"open({str(marker)!r}, 'w')"}),
        "python-file": (f"{script}:Net", {"in_features": 64, "out_features": 10}),
        "imported-name-in-models": ("uncert_cli.models:nn.Module", {}),
        "dunder-path": ("uncert_cli.models:MLP.__init__.__globals__", {}),
        "torchvision-path": ("torchvision:models.resnet18", {}),
        "torchvision-unknown": ("torchvision:os", shell),
        "not-a-string": (["uncert_cli.models", "MLP"], {}),
        "nested-kwargs": ("uncert_cli.models:MLP", {**MLP_KWARGS, "hidden": {"__class__": "x"}}),
    }


PAYLOAD_NAMES = [
    "attribute-path-to-os.system", "spaces-around-colon", "space-after-colon", "torch.load-of-a-pickle",
    "torch.hub.load", "os.system", "builtins.exec", "python-file", "imported-name-in-models", "dunder-path",
    "torchvision-path", "torchvision-unknown", "not-a-string", "nested-kwargs",
]


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "RAN.marker"


def _meta(arch: object, kwargs: dict) -> dict:
    return {"arch": arch, "arch_kwargs": kwargs, "input_shape": [1, 8, 8], "task": "classification",
            "num_outputs": 10, "dataset": "digits"}


def _weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in MLP(**MLP_KWARGS).state_dict().items()}


@pytest.fixture(scope="module")
def factor_file(tmp_path_factory) -> Path:
    """A real factor file of a digits MLP, to be forged below."""
    from uncert_cli.cli.main import main

    folder = tmp_path_factory.mktemp("factors")
    ckpt = folder / "m.safetensors"
    save_file(_weights(), str(ckpt), metadata={"uncert": json.dumps(_meta("uncert_cli.models:MLP", MLP_KWARGS))})
    out = folder / "f.h5"
    assert main(["fit", str(ckpt), "--data", "digits", "--limit", "64", "--method", "diag", "-o", str(out), "--quiet"]) == 0
    return out


def _checkpoint_commands(path: Path, out: Path) -> list[list[str]]:
    return [
        ["info", str(path)],
        ["fit", str(path), "--data", "digits", "--limit", "32", "-o", str(out / "fit.h5")],
        ["track", str(path), str(path), "--data", "digits", "--limit", "32"],
    ]


def _factor_commands(path: Path, out: Path) -> list[list[str]]:
    """Commands that need the network's class (they run it, or describe its layers)."""
    return [
        ["info", str(path)],
        ["tune", str(path)],
        ["tune", str(path), "--objective", "val-nll", "--data", "digits", "--split", "val", "--limit", "32"],
        ["tune", str(path), "--objective", "marglik", "--data", "digits"],  # held-out check asked for: runs it
        ["prune", str(path), "--evaluate", "--data", "digits", "--limit", "32"],
        ["ood", str(path), "--data", "digits", "--limit", "32", "--against", "iris"],
        ["attack", str(path), "--data", "digits", "--limit", "32"],
    ]


def _no_code_commands(path: Path, out: Path) -> list[list[str]]:
    """Commands that answer from the stored factors and weights, never importing the named class."""
    return [
        ["report", str(path), "--json"],
        ["tune", str(path), "--objective", "marglik", "--dry-run"],
        ["prune", str(path), "--fraction", "0.5", "-o", str(out / "pruned.safetensors")],
    ]


# Payloads whose metadata is itself refused when the file is read (not a string; a builtin class with
# structured keyword arguments), so even the commands that need no code end in exit 2.
MALFORMED = ("not-a-string", "nested-kwargs")


def _assert_refused(run_cli, args: list[str], marker: Path) -> None:
    r = run_cli(*args)
    assert not marker.exists(), f"{args[0]} ran the payload"
    assert r.code == 2, (args, r.code, r.err)
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_checkpoint_metadata_payload_never_runs(run_cli, tmp_path, marker, name):
    payloads = _payloads(tmp_path, marker)
    assert sorted(payloads) == sorted(PAYLOAD_NAMES)
    arch, kwargs = payloads[name]
    path = tmp_path / "evil.safetensors"
    save_file(_weights(), str(path), metadata={"uncert": json.dumps(_meta(arch, kwargs))})
    for args in _checkpoint_commands(path, tmp_path):
        _assert_refused(run_cli, args, marker)
    assert not (tmp_path / "fit.h5").exists()


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_factor_file_metadata_payload_never_runs(run_cli, tmp_path, marker, factor_file, name, monkeypatch):
    monkeypatch.delenv("UNCERT_TRUST_ARCH", raising=False)
    payloads = _payloads(tmp_path, marker)
    assert sorted(payloads) == sorted(PAYLOAD_NAMES)
    arch, kwargs = payloads[name]
    path = tmp_path / "evil.h5"
    path.write_bytes(factor_file.read_bytes())
    with h5py.File(path, "r+") as f:
        f["model"].attrs["meta"] = json.dumps(_meta(arch, kwargs))
    before = path.read_bytes()
    for args in _factor_commands(path, tmp_path):
        _assert_refused(run_cli, args, marker)
    for args in _no_code_commands(path, tmp_path):
        if name in MALFORMED:
            _assert_refused(run_cli, args, marker)
        else:
            r = run_cli(*args)
            assert not marker.exists(), f"{args[0]} ran the payload"
            assert r.code == 0, (args, r.err)
    assert path.read_bytes() == before, "a command changed the file"
    assert (tmp_path / "pruned.safetensors").exists() is (name not in MALFORMED)


def test_file_arch_allow_list_is_exact():
    assert is_builtin_arch("uncert_cli.models:MLP") and is_builtin_arch(" MLP ") and is_builtin_arch("lenet")
    assert is_builtin_arch("torchvision:resnet18")
    for name in ["uncert_cli.models:torch", "uncert_cli.models:ACTIVATIONS", "uncert_cli.models:Sequence",
                 "uncert_cli.models.torch:nn", "torchvision:resnet18.__call__", "uncert_cli.models::MLP",
                 "uncert_cli.models:MLP:x", "uncert_cli.models:MLP ", "torchvision: resnet18"]:
        canonical_ok = name.strip() in ("uncert_cli.models:MLP",)
        assert is_builtin_arch(name) is canonical_ok, name


def test_file_kwargs_are_plain_values():
    module = build_file_module("uncert_cli.models:MLP", MLP_KWARGS)
    assert sum(p.numel() for p in module.parameters()) == 64 * 8 + 8 + 8 * 10 + 10
    for bad in [{"hidden": [[8]]}, {"hidden": {"a": 1}}, {"activation": "x" * 1000}, {"hidden": list(range(100))}]:
        with pytest.raises(UserError):
            build_file_module("uncert_cli.models:MLP", {**MLP_KWARGS, **bad})


def test_the_user_can_still_name_a_class_explicitly(run_cli, tmp_path, marker):
    """Consent is the user's flag: naming the file's class with --arch imports it."""
    arch, kwargs = _payloads(tmp_path, marker)["python-file"]
    path = tmp_path / "evil.safetensors"
    weights = {k: v.contiguous() for k, v in torch.nn.Linear(64, 10).state_dict().items()}
    save_file(weights, str(path), metadata={"uncert": json.dumps(_meta(arch, kwargs))})
    assert run_cli("info", path).code == 2 and not marker.exists()
    r = run_cli("info", path, "--arch", arch)
    assert r.code == 0, r.err
    assert marker.exists()

"""A checkpoint or factor file must not run code by being opened: its metadata names the class to
import, so only uncert's and torchvision's architectures are followed without the user's word."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import save_file

from uncert_cli.models import MLP

PAYLOAD = "import pathlib\npathlib.Path(__file__).with_name('RAN').touch()\nimport torch\nNet = torch.nn.Linear\n"


@pytest.fixture
def forged(tmp_path):
    payload = tmp_path / "payload.py"
    payload.write_text(PAYLOAD)
    weights = {k: v.contiguous() for k, v in torch.nn.Linear(4, 3).state_dict().items()}
    meta = {"arch": f"{payload}:Net", "arch_kwargs": {"in_features": 4, "out_features": 3}, "input_shape": [4],
            "task": "classification", "num_outputs": 3}
    path = tmp_path / "evil.safetensors"
    save_file(weights, str(path), metadata={"uncert": json.dumps(meta)})
    return path, tmp_path / "RAN"


def test_checkpoint_metadata_is_not_followed_outside_uncert_and_torchvision(run_cli, forged):
    path, marker = forged
    r = run_cli("info", path)
    assert r.code == 2 and "--arch" in r.err and "Traceback" not in r.err
    assert not marker.exists()
    # Naming the class yourself is the explicit trust.
    r = run_cli("info", path, "--arch", f"{path.parent / 'payload.py'}:Net")
    assert r.code == 0, r.err
    assert marker.exists()


def test_system_call_in_metadata_is_refused(run_cli, tmp_path):
    weights = {k: v.contiguous() for k, v in MLP(4, [3], 2).state_dict().items()}
    path = tmp_path / "sys.safetensors"
    marker = tmp_path / "PWNED"
    meta = {"arch": "os:system", "arch_kwargs": {"command": f"touch {marker}"}}
    save_file(weights, str(path), metadata={"uncert": json.dumps(meta)})
    assert run_cli("info", path).code == 2
    assert not marker.exists()


def test_factor_file_metadata_is_not_followed(run_cli, forged, tmp_path, monkeypatch):
    import h5py

    path, marker = forged
    out = tmp_path / "f.h5"
    # Fitting with an explicit --arch is the user's own choice ...
    r = run_cli("fit", path, "--arch", f"{path.parent / 'payload.py'}:Net", "--data", "iris", "--task",
                "classification", "--limit", "20", "-o", out, "--quiet")
    assert r.code == 0, r.err
    marker.unlink()
    for name in [n for n in sys.modules if n.startswith("uncert_user_arch_")]:
        del sys.modules[name]  # so that importing the file again would touch the marker again
    # ... but opening the file later must not import it without being told to: a report needs only
    # the stored weights, and a command that runs the network asks for --arch.
    r = run_cli("report", out, "--json")
    assert r.code == 0, r.err
    assert not marker.exists()
    r = run_cli("ood", out, "--data", "iris", "--limit", "8", "--no-tune")
    assert r.code == 2 and "--arch" in r.err and "UNCERT_TRUST_ARCH" in r.err
    assert not marker.exists()
    with h5py.File(out) as f:
        assert "payload.py" in f["model"].attrs["meta"]


def test_the_refusal_never_suggests_the_files_own_text_as_a_command(tmp_path, run_cli):
    """A file's architecture text (here with a newline and a shell command) is quoted once, never offered
    as an `--arch` value to paste, and the error stays one line."""
    from safetensors.torch import save_file

    path = tmp_path / "lure.safetensors"
    lure = "evil.py:Net\n--arch $(touch pwned)"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"uncert": json.dumps({"arch": lure, "arch_kwargs": {}})})
    result = run_cli("info", path)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert "--arch MODULE:CLASS" in result.err and "--arch evil.py" not in result.err

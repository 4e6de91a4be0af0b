"""timm architectures (``--arch timm:NAME``) and ``--subset`` glob patterns, through the real CLI (issue 15)."""

from __future__ import annotations

import json

import h5py
import pytest
import torch

from uncert_cli.checkpoint import ModelMeta, save_model
from uncert_cli.checkpoint.arch import build_file_module, file_arch_target

timm = pytest.importorskip("timm", reason="timm is an optional extra (pip install -e '.[timm]')")

# timm's own test network: a real ResNet (stem, 4 stages, pooled head) with 0.37M parameters.
TIMM_ARCH = ["--arch", "timm:test_resnet", "--arch-kwargs", "num_classes=10,in_chans=1"]


@pytest.fixture
def timm_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10, in_chans=1)
    path = tmp_path / "resnet.pt"
    torch.save(model.state_dict(), path)
    return path


def test_timm_model_fits_and_every_later_command_rebuilds_it_from_the_file(run_cli, timm_checkpoint, tmp_path):
    factors = tmp_path / "f.h5"
    fitted = run_cli("fit", timm_checkpoint, *TIMM_ARCH, "--data", "digits", "--limit", "64", "--method", "diag",
                     "--subset", "fc", "-o", factors, "--json")
    assert fitted.code == 0, fitted.err
    with h5py.File(factors) as f:
        recorded = json.loads(f["model"].attrs["meta"])
    assert recorded["arch"] == "timm:test_resnet" and recorded["arch_kwargs"] == {"num_classes": 10, "in_chans": 1}
    # No --arch: the file names a builder timm lists, which a file may name.
    ood = run_cli("ood", factors, "--against", "digits", "--limit", "64", "--no-tune", "--predictive", "map", "--json")
    assert ood.code == 0, ood.err
    assert 0.0 <= json.loads(ood.out)["in_distribution"]["map"]["accuracy"] <= 1.0


def test_timm_names_from_files_are_builders_timm_lists_never_attribute_paths():
    assert file_arch_target("timm:test_resnet") == ("timm", "test_resnet")
    assert file_arch_target("timm:no_such_model") is None
    assert file_arch_target("timm:models.os.system") is None
    assert file_arch_target("timm:create_model") is None


@pytest.mark.parametrize("kwargs, word", [
    ({"pretrained": True}, "pretrained"),
    ({"checkpoint_path": "/etc/passwd"}, "checkpoint_path"),
    ({"pretrained_cfg_overlay": "x"}, "pretrained_cfg_overlay"),
])
def test_timm_never_loads_weights_itself(kwargs, word, user_error):
    message = user_error(build_file_module, "timm:test_resnet", kwargs)
    assert word in message and "checkpoint" in message


def test_pretrained_false_is_the_default_and_accepted():
    model = build_file_module("timm:test_resnet", {"pretrained": False, "num_classes": 3})
    assert model.fc.out_features == 3


def test_timm_bad_name_and_bad_keyword_are_one_line(run_cli, timm_checkpoint, tmp_path):
    r = run_cli("fit", timm_checkpoint, "--arch", "timm:test_resnt", "--data", "digits", "-o", tmp_path / "f.h5")
    assert r.code == 2 and "timm has no model 'test_resnt'" in r.err and "test_resnet" in r.err
    assert len(r.err.strip().splitlines()) == 1
    r = run_cli("fit", timm_checkpoint, "--arch", "timm:test_resnet", "--arch-kwargs", "pretrained=true",
                "--data", "digits", "-o", tmp_path / "f.h5")
    assert r.code == 2 and "pretrained" in r.err and not (tmp_path / "f.h5").exists()


@pytest.fixture
def user_error():
    from uncert_cli.errors import UserError

    def run(fn, *args):
        with pytest.raises(UserError) as info:
            fn(*args)
        assert "\n" not in str(info.value)
        return str(info.value)

    return run


# --subset glob patterns, on the digits MLP (units fc1, fc2 or net.0 ...) and on the timm ResNet.


def test_glob_selects_the_head_and_the_last_stage(run_cli, timm_checkpoint, tmp_path):
    factors = tmp_path / "g.h5"
    r = run_cli("fit", timm_checkpoint, *TIMM_ARCH, "--data", "digits", "--limit", "32", "--method", "diag",
                "--subset", "fc.*,layer4.0.conv*", "-o", factors, "--json")
    assert r.code == 0, r.err
    report = run_cli("report", factors, "--json")
    assert report.code == 0, report.err
    layers = {row["name"] for row in json.loads(report.out)["layers"]}
    assert layers == {"fc", "layer4.0.conv1", "layer4.0.conv2"}


def test_glob_matching_nothing_is_one_line_listing_module_names(run_cli, timm_checkpoint, tmp_path):
    r = run_cli("fit", timm_checkpoint, *TIMM_ARCH, "--data", "digits", "--subset", "classifier.*",
                "-o", tmp_path / "g.h5")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "--subset pattern 'classifier.*' matches no module" in r.err
    assert "conv1" in r.err and "more)" in r.err and not (tmp_path / "g.h5").exists()


def test_without_timm_the_error_says_how_to_install_it(run_cli, timm_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "timm", None)  # what `import timm` meets where it is absent
    r = run_cli("fit", timm_checkpoint, *TIMM_ARCH, "--data", "digits", "-o", tmp_path / "f.h5")
    assert r.code == 2 and "timm is not installed" in r.err and "uncert-cli[timm]" in r.err


def test_report_on_a_timm_factor_file_needs_no_timm(run_cli, timm_checkpoint, tmp_path, monkeypatch):
    factors = tmp_path / "f.h5"
    r = run_cli("fit", timm_checkpoint, *TIMM_ARCH, "--data", "digits", "--limit", "32", "--method", "diag",
                "--subset", "fc", "-o", factors, "--json")
    assert r.code == 0, r.err
    with_timm = run_cli("report", factors, "--json")
    monkeypatch.setitem(__import__("sys").modules, "timm", None)
    without = run_cli("report", factors, "--json")
    assert without.code == 0, without.err
    assert json.loads(without.out)["layers"] == json.loads(with_timm.out)["layers"]
    r = run_cli("ood", factors, "--against", "digits", "--limit", "32", "--no-tune")
    assert r.code == 2 and "timm is not installed" in r.err

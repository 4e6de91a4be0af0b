"""Architecture specs (--arch) and keyword parsing (--arch-kwargs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.checkpoint.ckpt_helpers import MLP_ARCH, MLP_KWARGS
from uncert_cli.checkpoint import build_module, load_model, parse_arch_kwargs, weights_fingerprint
from uncert_cli.models import MLP, LeNet


def test_parse_arch_kwargs_literals_and_strings() -> None:
    parsed = parse_arch_kwargs(
        ["num_classes=10", "hidden=[1024,1024]", "dropout=0.5", "name=foo", "bias=false", "act='relu'"]
    )
    assert parsed == {
        "num_classes": 10,
        "hidden": [1024, 1024],
        "dropout": 0.5,
        "name": "foo",
        "bias": False,
        "act": "relu",
    }
    assert parse_arch_kwargs([]) == {} and parse_arch_kwargs(None) == {}


def test_parse_arch_kwargs_comma_separated_pairs() -> None:
    assert parse_arch_kwargs(["num_classes=10,hidden=[64, 32],tag=a,b"]) == {
        "num_classes": 10,
        "hidden": [64, 32],
        "tag": "a,b",
    }


@pytest.mark.parametrize("bad", [["novalue"], ["=3"], ["2x=1"], ["a=1", "a=2"]])
def test_parse_arch_kwargs_rejects_malformed(bad: list[str], user_error) -> None:
    message = user_error(parse_arch_kwargs, bad)
    assert "arch_kwargs" in message and "--" not in message  # the parameter, not the CLI flag


def test_build_shipped_models_by_full_name_and_shorthand() -> None:
    assert isinstance(build_module(MLP_ARCH, dict(MLP_KWARGS)), MLP)
    assert isinstance(build_module("mlp", dict(MLP_KWARGS)), MLP)
    assert isinstance(build_module("LeNet", {"num_classes": 4}), LeNet)


def test_build_from_python_file(tmp_path: Path) -> None:
    (tmp_path / "blocks.py").write_text("import torch\nWIDTH = 5\n")
    source = tmp_path / "my_net.py"
    # The file imports a sibling module, as real project code does.
    source.write_text(
        "import torch\nfrom blocks import WIDTH\n\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self, n_in=3, n_out=2):\n"
        "        super().__init__()\n"
        "        self.body = torch.nn.Linear(n_in, WIDTH)\n"
        "        self.head = torch.nn.Linear(WIDTH, n_out)\n"
        "    def forward(self, x):\n"
        "        return self.head(torch.relu(self.body(x)))\n"
    )
    module = build_module(f"{source}:Net", {"n_out": 4})
    assert module.head.out_features == 4
    # Importing the same file again must yield the same class (stable for isinstance/pickle).
    assert type(build_module(f"{source}:Net", {})) is type(module)


def test_load_with_arch_from_python_file(tmp_path: Path) -> None:
    source = tmp_path / "tiny.py"
    source.write_text(
        "import torch\n"
        "class Tiny(torch.nn.Module):\n"
        "    def __init__(self, width=4):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(2, width)\n"
    )
    torch.manual_seed(0)
    weights = {"fc.weight": torch.randn(6, 2), "fc.bias": torch.randn(6)}
    torch.save(weights, tmp_path / "tiny.pt")
    loaded = load_model(tmp_path / "tiny.pt", arch=f"{source}:Tiny", arch_kwargs={"width": 6})
    assert loaded.fingerprint == weights_fingerprint(weights)


def test_torchvision_resnet18_state_dict_round_trip(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    original = torchvision.models.resnet18(weights=None, num_classes=10)
    path = tmp_path / "resnet18.pt"
    torch.save(original.state_dict(), path)
    loaded = load_model(
        path, arch="torchvision:resnet18", arch_kwargs=parse_arch_kwargs(["num_classes=10"])
    )
    assert loaded.fingerprint == weights_fingerprint(original)
    assert loaded.module.fc.out_features == 10 and not loaded.module.training
    assert loaded.meta.arch == "torchvision:resnet18" and loaded.meta.arch_kwargs == {"num_classes": 10}


def test_torchvision_unknown_name_suggests(user_error) -> None:
    message = user_error(build_module, "torchvision:resnet19", {})
    assert "resnet18" in message


def test_torchvision_pretrained_weights_refused(user_error) -> None:
    assert "never downloads" in user_error(build_module, "torchvision:resnet18", {"weights": "DEFAULT"})


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("MLPX", "names no class"),
        ("uncert_cli.no_such_module:Net", "cannot import module"),
        ("uncert_cli.models:MPL", "did you mean MLP"),
        ("uncert_cli.models:ACTIVATIONS", "not a class or function"),
        ("missing_dir/net.py:Net", "no such file"),
        ("torch.nn:Linear", "do not fit"),
    ],
)
def test_bad_arch_specs(arch: str, expected: str, user_error) -> None:
    kwargs = {"bogus": 1} if arch == "torch.nn:Linear" else {}
    assert expected in user_error(build_module, arch, kwargs)


def test_constructor_failure_and_non_module(tmp_path: Path, user_error) -> None:
    assert "building" in user_error(build_module, "mlp", {**MLP_KWARGS, "activation": "nope"})
    source = tmp_path / "odd.py"
    source.write_text("def not_a_model():\n    return 42\n\nraise_later = None\n")
    assert "not a torch.nn.Module" in user_error(build_module, f"{source}:not_a_model", {})
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nraise RuntimeError('boom')\n")
    assert "importing" in user_error(build_module, f"{broken}:Net", {})


def test_wrong_hidden_sizes_list_shape_mismatches(tmp_path: Path, mlp, user_error) -> None:
    path = tmp_path / "mlp.pt"
    torch.save(mlp.state_dict(), path)
    message = user_error(
        load_model, path, arch=MLP_ARCH, arch_kwargs={**MLP_KWARGS, "hidden": [9, 6]}
    )
    assert "shape mismatches" in message
    assert "fc1.weight: checkpoint (8, 12) vs model (9, 12)" in message
    assert "are arch and arch_kwargs right?" in message


def test_wrong_depth_lists_missing_and_unexpected(tmp_path: Path, mlp, user_error) -> None:
    path = tmp_path / "mlp.pt"
    torch.save(mlp.state_dict(), path)
    message = user_error(load_model, path, arch=MLP_ARCH, arch_kwargs={**MLP_KWARGS, "hidden": [8]})
    assert "unexpected keys" in message and "fc3.weight" in message
    message = user_error(load_model, path, arch="torchvision:resnet18", arch_kwargs={"num_classes": 3})
    assert "missing keys" in message and "more)" in message  # long lists are truncated with a count


def test_batchnorm_checkpoint_without_num_batches_tracked(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old_bn.pt")
    source = tmp_path / "bn.py"
    source.write_text(
        "import torch\n"
        "def Net():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))\n"
    )
    loaded = load_model(tmp_path / "old_bn.pt", arch=f"{source}:Net")
    assert torch.equal(loaded.module[1].running_var, state["1.running_var"])

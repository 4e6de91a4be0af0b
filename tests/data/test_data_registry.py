"""Name resolution, suggestions, the data root precedence, and --normalize parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from uncert_cli.data import KNOWN_DATASETS, data_root, load_dataset, parse_normalize
from uncert_cli.errors import UserError


def test_known_datasets_lists_every_builtin() -> None:
    assert KNOWN_DATASETS == [
        "mnist", "fashionmnist", "kmnist", "emnist-letters", "notmnist",
        "cifar10", "cifar100", "svhn", "digits", "iris", "toy-regression", "photo-patches",
    ]  # fmt: skip


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(UserError) as caught:
        load_dataset("mnsit")
    message = str(caught.value)
    assert message.startswith("unknown dataset 'mnsit'; did you mean 'mnist'")
    assert "Known: mnist, fashionmnist" in message and "\n" not in message
    with pytest.raises(UserError, match="did you mean 'cifar10'"):
        load_dataset("cifar-10")


def test_names_are_case_insensitive_and_bad_arguments_refused(tmp_path: Path) -> None:
    assert load_dataset("IRIS", split="test").name == "iris"
    with pytest.raises(UserError, match="unknown split 'dev'"):
        load_dataset("iris", split="dev")
    with pytest.raises(UserError, match="limit must be a whole number >= 1"):
        load_dataset("iris", limit=0)
    with pytest.raises(UserError, match="no dataset given"):
        load_dataset("  ")


def test_data_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNCERT_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("UNCERT_DATA")
    assert data_root() == tmp_path / "xdg" / "uncert" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "uncert" / "data"


def test_parse_normalize_syntax() -> None:
    assert parse_normalize("0.1307,0.3081") == ([0.1307], [0.3081])
    assert parse_normalize(" 0.5, 0.5, 0.5 ; 0.2,0.2,0.2 ") == ([0.5] * 3, [0.2] * 3)
    assert parse_normalize("0.5;0.25") == ([0.5], [0.25])
    assert parse_normalize("imagenet")[0] == [0.485, 0.456, 0.406]
    for bad, reason in [
        ("0.5,0.5,0.5,0.2", "4 numbers without ';'"),
        ("0.5,0.5;0.2", "2 means but 1 stds"),
        ("0.5,0", "std must be > 0"),
        ("mean,std", "could not convert"),
        ("nan,1", "finite"),
    ]:
        with pytest.raises(UserError, match=reason):
            parse_normalize(bad)

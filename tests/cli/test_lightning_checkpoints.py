"""Lightning ``.ckpt`` files and other training-framework layouts (issue 15.3), through the real CLI.

A Lightning checkpoint is what ``torch.save`` writes for a dict: the LightningModule's ``state_dict``
(the network under its attribute name, ``model.``, beside the module's other state such as a loss's
class weights), ``hyper_parameters``, optimizer and loop state. The files here are written with plain
``torch.save`` in that layout, no lightning needed.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from uncert_cli.checkpoint import weights_fingerprint
from uncert_cli.models import MLP
from uncert_cli.store import read_factor_file

KWARGS = {"in_features": 64, "hidden": [16], "out_features": 10}
ARCH = ["--arch", "MLP", "--arch-kwargs", "in_features=64,hidden=[16],out_features=10"]


def _network(seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(**KWARGS)


def _lightning(state: dict, **extra) -> dict:
    """The keys a Lightning 2.x checkpoint has, with ``state`` as the LightningModule's state dict."""
    return {
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0", "state_dict": state,
        "hyper_parameters": {"hidden": 16, "lr": 0.01, "optimizer": "adam"},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1, 2, 3]}]}],
        "lr_schedulers": [], "loops": {"fit_loop": {"epoch_progress": {"total": {"completed": 3}}}},
        "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.31), "best_model_path": "a.ckpt"}},
        **extra,
    }


def _prefixed(module: torch.nn.Module, prefix: str) -> dict:
    return {prefix + k: v for k, v in module.state_dict().items()}


def _fit(run_cli, checkpoint, out, *extra):
    return run_cli("fit", checkpoint, *ARCH, "--data", "digits", "--limit", "64", "--method", "diag", "-o", out, *extra)


def test_the_network_prefix_is_found_when_only_it_fits(run_cli, tmp_path):
    network = _network(0)
    state = {**_prefixed(network, "model."), "criterion.weight": torch.ones(10), "val_acc.total": torch.tensor(5)}
    torch.save(_lightning(state), tmp_path / "last.ckpt")
    r = _fit(run_cli, tmp_path / "last.ckpt", tmp_path / "f.h5")
    assert r.code == 0, r.err
    assert "took the weights under 'model.'" in r.err and "left out 2 other entries: criterion.weight" in r.err
    assert read_factor_file(tmp_path / "f.h5").fingerprint == weights_fingerprint(network)
    # --json keeps stdout to the document; the note stays on stderr
    r = _fit(run_cli, tmp_path / "last.ckpt", tmp_path / "g.h5", "--json")
    assert r.code == 0 and json.loads(r.out) and "took the weights" in r.err


def test_two_prefixes_that_fit_are_refused_until_one_is_named(run_cli, tmp_path):
    network, ema = _network(0), _network(1)
    torch.save(_lightning({**_prefixed(network, "model."), **_prefixed(ema, "ema_model.")}), tmp_path / "ema.ckpt")
    r = _fit(run_cli, tmp_path / "ema.ckpt", tmp_path / "f.h5")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "model., ema_model." in r.err and "--strip-prefix" in r.err and not (tmp_path / "f.h5").exists()
    r = _fit(run_cli, tmp_path / "ema.ckpt", tmp_path / "f.h5", "--strip-prefix", "ema_model.")
    assert r.code == 0, r.err
    assert read_factor_file(tmp_path / "f.h5").fingerprint == weights_fingerprint(ema)
    r = _fit(run_cli, tmp_path / "ema.ckpt", tmp_path / "g.h5", "--strip-prefix", "student.")
    assert r.code == 2 and "--strip-prefix 'student.'" in r.err and "ema_model." in r.err


def test_state_key_chooses_the_dict_entry(run_cli, tmp_path):
    network, ema = _network(0), _network(1)
    torch.save(_lightning(_prefixed(network, "model."), ema_state_dict=ema.state_dict()), tmp_path / "two.ckpt")
    r = _fit(run_cli, tmp_path / "two.ckpt", tmp_path / "f.h5", "--state-key", "ema_state_dict")
    assert r.code == 0, r.err
    assert read_factor_file(tmp_path / "f.h5").fingerprint == weights_fingerprint(ema)
    r = _fit(run_cli, tmp_path / "two.ckpt", tmp_path / "f.h5")  # default: Lightning's state_dict
    assert r.code == 0, r.err
    assert read_factor_file(tmp_path / "f.h5").fingerprint == weights_fingerprint(network)
    r = _fit(run_cli, tmp_path / "two.ckpt", tmp_path / "g.h5", "--state-key", "weights")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "--state-key 'weights'" in r.err and "'state_dict'" in r.err and not (tmp_path / "g.h5").exists()
    r = _fit(run_cli, tmp_path / "two.ckpt", tmp_path / "g.h5", "--state-key", "hyper_parameters")
    assert r.code == 2 and "not a state dict" in r.err


def test_info_reads_a_lightning_checkpoint(run_cli, tmp_path):
    torch.save(_lightning(_prefixed(_network(0), "model.")), tmp_path / "last.ckpt")
    r = run_cli("info", tmp_path / "last.ckpt", *ARCH, "--strip-prefix", "model.", "--json")
    assert r.code == 0, r.err
    assert "fc1" in r.out


class _Payload:
    """What a hostile checkpoint hides in its hyper_parameters: unpickling it would create a file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_object_inside_is_refused_and_never_runs(run_cli, tmp_path):
    marker = tmp_path / "PWNED"
    checkpoint = _lightning(_prefixed(_network(0), "model."))
    checkpoint["hyper_parameters"] = {"hidden": 16, "hook": _Payload(str(marker))}
    torch.save(checkpoint, tmp_path / "hostile.ckpt")
    assert not marker.exists()
    r = _fit(run_cli, tmp_path / "hostile.ckpt", tmp_path / "f.h5")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "pickle" in r.err and "references io.open" in r.err and "--trust-pickle" in r.err
    assert not marker.exists() and not (tmp_path / "f.h5").exists()
    assert not any(name.startswith(".f.h5") for name in os.listdir(tmp_path))

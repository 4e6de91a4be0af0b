"""Checkpoint ordering and the in-memory fit of one checkpoint for ``uncert track``."""

from __future__ import annotations

from pathlib import Path

import pytest

from uncert_cli.analysis.tracking import TrackPoint, check_same_layers, checkpoint_step, order_checkpoints
from uncert_cli.errors import UserError


def test_step_is_the_last_number_in_the_name() -> None:
    assert checkpoint_step("run/lenet_epoch8.safetensors") == 8
    assert checkpoint_step("ckpt-3-step120.pt") == 120
    assert checkpoint_step("final.safetensors") is None


def test_checkpoints_are_ordered_numerically_when_all_have_numbers() -> None:
    paths = [Path("e10.pt"), Path("e2.pt"), Path("e1.pt")]
    assert order_checkpoints(paths) == [Path("e1.pt"), Path("e2.pt"), Path("e10.pt")]
    mixed = [Path("b.pt"), Path("e1.pt")]
    assert order_checkpoints(mixed) == mixed


def test_different_architectures_are_refused() -> None:
    from tests.reference.small_posterior import small
    from uncert_cli.analysis import analyse_posterior
    from uncert_cli.posterior import LaplacePosterior

    s = small()
    layers = analyse_posterior(LaplacePosterior(s.curvature, s.model)).layers
    a = TrackPoint("a.pt", 1, None, 1.0, layers)
    b = TrackPoint("b.pt", 2, None, 1.0, layers[:1])
    assert check_same_layers([a, a]) == ["fc1", "fc2"]
    with pytest.raises(UserError, match="one architecture"):
        check_same_layers([a, b])

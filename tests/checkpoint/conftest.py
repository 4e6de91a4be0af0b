"""Shared helpers for the checkpoint tests: small real models and a UserError checker."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from tests.checkpoint.ckpt_helpers import MLP_KWARGS
from uncert_cli.errors import UserError
from uncert_cli.models import MLP


@pytest.fixture
def mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(**MLP_KWARGS)


@pytest.fixture
def user_error() -> Callable[..., str]:
    """``user_error(fn, *args, **kw)``: run fn, assert a one-line UserError, return its message."""

    def run(fn: Callable[..., object], *args: object, **kwargs: object) -> str:
        with pytest.raises(UserError) as info:
            fn(*args, **kwargs)
        message = str(info.value)
        assert message and "\n" not in message, message
        return message

    return run

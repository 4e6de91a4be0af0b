"""``--device auto|cpu|cuda`` and ``--dtype`` resolution."""

from __future__ import annotations

import torch

from uncert_cli.core.errors import UserError

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(choice: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without one is a user error."""
    choice = getattr(choice, "value", choice)
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("{param} cuda was requested but no CUDA GPU is available; use {param} cpu or auto", param="device")
    if choice not in ("cpu", "cuda"):
        raise UserError(f"unknown device '{choice}'; use auto, cpu or cuda", param="device")
    return torch.device(choice)


def resolve_dtype(name: str) -> torch.dtype:
    name = getattr(name, "value", name)
    if name not in _DTYPES:
        raise UserError(f"unknown dtype '{name}'; use float32 or float64", param="dtype")
    return _DTYPES[name]

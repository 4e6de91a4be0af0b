"""The embedded default, end to end: fit → report → OOD on the shipped digits MLP, offline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from uncert_cli.fitting import FitOptions, fit_to_file
from uncert_cli.inputs import load_checkpoint_model, load_model_data
from uncert_cli.samples import sample_path


def run_demo(out_dir: Path, on_step: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run every stage that exists and return where each output went."""
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = sample_path("digits_mlp.safetensors")
    loaded = load_checkpoint_model(checkpoint)
    data = load_model_data(loaded.meta, "digits", split="train")
    factors = out_dir / "digits_kfac.h5"
    result = fit_to_file(loaded, data, FitOptions(method="kfac", device=torch.device("cpu")), factors)
    on_step(f"fit: KFAC Laplace of {checkpoint.name} on {len(data)} digits → {factors}")
    return {"checkpoint": str(checkpoint), "factors": str(factors), "fit_seconds": result.info["seconds"]}

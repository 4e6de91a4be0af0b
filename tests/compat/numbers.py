"""What the compatibility tests ask of a checked-in factor file (shared by the tests and ``make_files``)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from uncert_cli.cli.main import main
from uncert_cli.factors import open_posterior

FILES = Path(__file__).resolve().parent / "files"
METHODS = ("diag", "kfac", "ekfac", "kfac-diag", "lowrank", "full", "vi")
# Keys of `report --json` that name this machine or this moment rather than the posterior.
VOLATILE_KEYS = frozenset({"file", "factors", "path", "created", "checkpoint", "written_by", "seconds"})


def _numbers(value: Any) -> Any:
    """Tensors and dicts of tensors as plain (nested) lists of floats."""
    if isinstance(value, torch.Tensor):
        return value.detach().double().cpu().tolist()
    if isinstance(value, dict):
        return {str(k): _numbers(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_numbers(v) for v in value]
    return value


def probe_inputs() -> torch.Tensor:
    """Four iris-like inputs (4 features), fixed by a seed: ``(4, 4)`` float32."""
    g = torch.Generator().manual_seed(7)
    return torch.randn(4, 4, generator=g) * torch.tensor([0.8, 0.4, 1.7, 0.7]) + torch.tensor([5.8, 3.0, 3.8, 1.2])


def posterior_numbers(path: Path) -> dict[str, Any]:
    """Marginal variances, log-dets, evidence, predictive values and samples of the file's posterior,
    at its stored hyperparameters and at a second setting (``prior_mode="factor"``, other N and τ)."""
    x = probe_inputs()
    out: dict[str, Any] = {}
    for label, overrides in (("stored", {}), ("factor", {"prior_mode": "factor", "n_data": 200.0,
                                                          "prior_precision": 2.0})):
        post = open_posterior(path, **overrides).posterior  # type: ignore[arg-type]
        numbers: dict[str, Any] = {
            "marginal_variance": _numbers(post.marginal_variance()),
            "log_det_precision": post.log_det_precision(),
            "entropy": post.entropy(),
            "effective_params": post.effective_params(),
            "log_marginal_likelihood": post.log_marginal_likelihood(-50.0),
            "functional_variance": _numbers(post.functional_variance(x)),
            "predict": {kind: _numbers(post.predict(x, kind, samples=16)) for kind in ("map", "probit", "glm", "mc")},
            "samples": _numbers(post.sample(2, torch.Generator().manual_seed(3))),
        }
        out[label] = numbers
    return out


def _drop_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_volatile(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_drop_volatile(v) for v in value]
    return value


def report_document(path: Path) -> dict[str, Any]:
    """``uncert report FILE --json`` through the real entry point, without machine-specific keys."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["report", str(path), "--json"])
    if code != 0:
        raise RuntimeError(f"report failed ({code}): {stderr.getvalue()}")
    return _drop_volatile(json.loads(stdout.getvalue()))

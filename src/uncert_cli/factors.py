"""Open a factor file for analysis: the model at its MAP weights, rebuilt from the file alone."""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch

from uncert_cli.checkpoint import LoadedModel, build_module, weights_fingerprint
from uncert_cli.checkpoint.arch import build_file_module, is_builtin_arch
from uncert_cli.curvature.blocks import curvature_to
from uncert_cli.errors import UserError
from uncert_cli.posterior import LaplacePosterior
from uncert_cli.store import FactorFile, read_factor_file
from uncert_cli.store_checks import check_stored_prior

TRUST_ARCH_ENV = "UNCERT_TRUST_ARCH"
# The flags with which commands override a hyperparameter stored in the file.
OVERRIDE_FLAGS = {"prior_precision": "--prior-precision", "n_data": "--n-data", "prior_mode": "--prior-mode"}


def model_from_factor_file(factors: FactorFile) -> LoadedModel:
    """Rebuild the network from the architecture spec and the MAP weights stored in the file."""
    meta = factors.model_meta
    if not meta.arch:
        raise UserError(
            f"'{factors.path}' does not record an importable architecture; refit it from a checkpoint that "
            "records one, or name the class when fitting (`uncert fit CHECKPOINT --arch package.module:Class`)"
        )
    if os.environ.get(TRUST_ARCH_ENV) == "1":
        module = build_module(meta.arch, dict(meta.arch_kwargs))
    elif is_builtin_arch(meta.arch):
        # The file names the class; only uncert's models and torchvision builders are followed.
        module = build_file_module(meta.arch, dict(meta.arch_kwargs), f"'{factors.path}'")
    else:
        raise UserError(
            f"'{factors.path}' names its architecture '{meta.arch}', which would import and run code from "
            f"outside uncert and torchvision; if you trust it, rerun with {TRUST_ARCH_ENV}=1"
        )
    missing, unexpected = module.load_state_dict(factors.state_dict, strict=False)
    if missing or unexpected:
        raise UserError(
            f"the architecture '{meta.arch}' does not match the weights in '{factors.path}' "
            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}); refit the factors"
        )
    module.eval()
    fingerprint = weights_fingerprint(module)
    if fingerprint != factors.fingerprint:
        raise UserError(f"the weights in '{factors.path}' do not match its recorded fingerprint; the file is damaged, refit it")
    return LoadedModel(module=module, meta=meta, source=Path(factors.checkpoint_path), fingerprint=fingerprint)


def open_factor_model(path: str | Path) -> LoadedModel:
    return model_from_factor_file(read_factor_file(path))


@dataclass
class OpenedFactors:
    """A factor file with its model rebuilt and its posterior ready."""

    factors: FactorFile
    model: LoadedModel
    posterior: LaplacePosterior


def open_posterior(
    path: str | Path,
    *,
    prior_precision: float | dict[str, float] | None = None,
    n_data: float | None = None,
    prior_mode: str | None = None,
    noise_std: float | None = None,
    device: torch.device | str = "cpu",
    flags: Collection[str] = (),
) -> OpenedFactors:
    """Read a factor file and build its posterior; ``None`` means the file's own (possibly tuned) value.

    ``flags``: which hyperparameters the calling command can override with a flag (keys of
    :data:`OVERRIDE_FLAGS`); an unusable stored value is refused naming the file and those flags.
    """
    factors = read_factor_file(path)
    loaded = model_from_factor_file(factors)
    prior = factors.prior
    from_file = {
        name: stored
        for name, stored, given in (
            ("prior_precision", prior.prior_precision, prior_precision),
            ("n_data", prior.n_data, n_data),
            ("prior_mode", prior.prior_mode, prior_mode),
            ("noise_std", prior.noise_std if prior.noise_std is not None else loaded.meta.noise_std, noise_std),
        )
        if given is None
    }
    check_stored_prior(factors.path, from_file, regression=factors.curvature.task == "regression",
                       flags={name: OVERRIDE_FLAGS[name] for name in flags})
    noise = noise_std or prior.noise_std or loaded.meta.noise_std or 1.0
    device = torch.device(device)
    curvature = factors.curvature if device.type == "cpu" else curvature_to(factors.curvature, device)
    loaded.module.to(device)
    posterior = LaplacePosterior(
        curvature,
        loaded.module,
        prior_precision=prior.prior_precision if prior_precision is None else prior_precision,
        n_data=n_data if n_data is not None else prior.n_data,
        prior_mode=prior_mode or prior.prior_mode,
        noise_std=noise if factors.curvature.task == "regression" else 1.0,
    )
    return OpenedFactors(factors=factors, model=loaded, posterior=posterior)

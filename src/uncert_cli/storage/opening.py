"""Open a factor file for analysis: the model at its MAP weights, rebuilt from the file alone.

Which module a command gets (:func:`model_from_factor_file`):

* ``--arch`` given (``arch``): that class, imported because the user named it, with ``--arch-kwargs``
  (default: the keyword arguments recorded at fit); it must reproduce the stored weight fingerprint.
* ``UNCERT_TRUST_ARCH=1``: the class the file names, whatever it is (for scripts).
* the file names one of uncert's models or a torchvision builder: that one (a file may name only these).
* otherwise, for commands that never run the network (``runs_model=False``: report, tune by the
  evidence, prune -o): a module tree of the stored weights alone (:mod:`uncert_cli.checkpoint.stored`),
  without importing anything; commands that run it are refused with a line naming ``--arch``.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from uncert_cli.checkpoint import LoadedModel, build_module, parse_arch_kwargs, weights_fingerprint
from uncert_cli.checkpoint.arch import build_file_module, canonical_arch, check_file_arch_kwargs, is_builtin_arch
from uncert_cli.checkpoint.hf_folder import hf_module_from_meta, is_hf_arch
from uncert_cli.checkpoint.outputs import select_output
from uncert_cli.checkpoint.stored import StoredModule, guess_kinds, guess_parameter_names, module_from_weights
from uncert_cli.core.errors import UserError
from uncert_cli.curvature.blocks import Curvature, curvature_to
from uncert_cli.posterior import LaplacePosterior
from uncert_cli.storage.checks import check_stored_prior
from uncert_cli.storage.factor_file import FactorFile, json_attribute, read_factor_file

TRUST_ARCH_ENV = "UNCERT_TRUST_ARCH"
_SHOWN = 120  # characters of a file-chosen architecture name quoted in a message


def model_from_factor_file(
    factors: FactorFile,
    *,
    arch: str | None = None,
    arch_kwargs: Sequence[str] | None = None,
    runs_model: bool = True,
) -> LoadedModel:
    """The network at the file's MAP weights (see the module docstring for which module).

    ``arch``/``arch_kwargs``: ``--arch`` and ``--arch-kwargs`` as typed. ``runs_model=False``: the
    caller never calls the network, so a file naming a user's class is answered from its weights alone.
    A posterior with its own mean (``--method vi``) has it in place of the covered weights, after the
    stored weights were checked against the fingerprint: that mean is the posterior's "MAP".

    Returns:
        The module at the MAP weights (or the posterior's own mean), its metadata and fingerprint.
    """
    loaded = _checkpoint_model(factors, arch=arch, arch_kwargs=arch_kwargs, runs_model=runs_model)
    apply_posterior_means(loaded.module, factors.curvature)
    return loaded


def apply_posterior_means(module: nn.Module, curvature: Curvature) -> None:
    """Put the blocks' own means (``--method vi``) in place of ``module``'s covered weights; blocks
    whose mean is the checkpoint's weights (every Laplace structure) leave them as they are.
    """
    params = dict(module.named_parameters())
    with torch.no_grad():
        for block in curvature.blocks:
            for name, mean in zip(block.param_names, block.posterior_mean() or ()):
                params[name].copy_(mean.to(params[name]))


def _checkpoint_model(factors: FactorFile, *, arch: str | None, arch_kwargs: Sequence[str] | None,
                      runs_model: bool) -> LoadedModel:
    """The network at the stored weights, checked against the fingerprint."""
    meta = factors.model_meta
    if arch is None and arch_kwargs:
        raise UserError("{param} needs {arch}: name the class they are for ({arch} path/to/file.py:Class)",
                        param="arch_kwargs", mentions=("arch",))
    if arch is not None:
        return _with_weights(factors, _given_module(factors, arch, arch_kwargs), given=arch)
    if meta.arch and os.environ.get(TRUST_ARCH_ENV) == "1":
        module = build_module(meta.arch, dict(meta.arch_kwargs))
    elif is_hf_arch(meta.arch) and (runs_model or _hf_available()):
        module = hf_module_from_meta(meta, f"'{factors.path}'")
    elif meta.arch and _names_builtin(meta.arch, runs_model):
        # The file names the class; only uncert's models and torchvision builders are followed.
        module = build_file_module(meta.arch, dict(meta.arch_kwargs), f"'{factors.path}'")
    elif not runs_model:
        return _weights_only(factors)
    elif not meta.arch:
        raise UserError(
            f"'{factors.path}' does not record an importable architecture, and this command runs the network; "
            "name its class with {param} path/to/file.py:Class (or package.module:Class, torchvision:NAME) and {arch_kwargs}",
            param="arch", mentions=("arch_kwargs",),
        )
    else:
        raise UserError(
            f"'{factors.path}' was fitted on {meta.arch[:_SHOWN]!r}, a class outside uncert and torchvision, and "
            "this command runs the network; a file never makes uncert import code: if you trust that class, name "
            f"it with {{param}} (and {{arch_kwargs}} as at fit), or set {TRUST_ARCH_ENV}=1 in scripts",
            param="arch", mentions=("arch_kwargs",),
        )
    return _with_weights(factors, module, given=None)


def _hf_available() -> bool:
    """Whether transformers can be imported (a report on a Hugging Face fit works from the weights without it)."""
    import importlib.util

    return importlib.util.find_spec("transformers") is not None


def _names_builtin(arch: str, runs_model: bool) -> bool:
    """:func:`is_builtin_arch`, except that a command running no network answers a file naming a timm model
    from its weights alone where timm is not installed (rather than asking to install it).

    Returns:
        Whether the name is one uncert builds itself.

    Raises:
        UserError: a timm name without timm, when the network is to run.
    """
    try:
        return is_builtin_arch(arch)
    except UserError:
        if runs_model:
            raise
        return False


def _given_module(factors: FactorFile, arch: str, arch_kwargs: Sequence[str] | None) -> nn.Module:
    """The class named by ``--arch`` (the user's consent to import it).

    Its keyword arguments: those recorded at fit when ``--arch`` names the recorded class (plain values only:
    they come from the file), updated by ``--arch-kwargs`` -- as ``uncert fit`` treats a checkpoint's recorded
    ones.

    Returns:
        The module, built but without the stored weights.
    """
    meta = factors.model_meta
    given = parse_arch_kwargs(list(arch_kwargs or []))
    same = bool(meta.arch) and canonical_arch(arch) == canonical_arch(str(meta.arch))
    kept = {k: v for k, v in meta.arch_kwargs.items() if k not in given} if same else {}
    return build_module(arch, {**check_file_arch_kwargs(kept, f"'{factors.path}'"), **given})


def _with_weights(factors: FactorFile, module: nn.Module, given: str | None) -> LoadedModel:
    """Load the stored weights into ``module`` and check them against the recorded fingerprint."""
    meta = factors.model_meta
    try:
        missing, unexpected = module.load_state_dict(factors.state_dict, strict=False)
        problem = f"missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}" if missing or unexpected else ""
    except RuntimeError as exc:  # shapes differ: torch lists one mismatch per line after a heading
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()] or [str(exc).strip()]
        more = f" and {len(lines) - 1} more" if len(lines) > 1 else ""
        problem = " ".join(lines[0].split())[:200].rstrip(".") + more
    if not problem:
        module.eval()
        fingerprint = weights_fingerprint(module)
        if fingerprint == factors.fingerprint:
            select_output(module, meta.output)  # the part of a structured result that fit analysed
            return LoadedModel(module=module, meta=meta, source=Path(factors.checkpoint_path), fingerprint=fingerprint)
        if given is None:
            raise UserError(
                f"the weights in '{factors.path}' do not match its recorded fingerprint; the file is damaged, refit it"
            )
        problem = "the weights it holds once loaded differ from the stored ones (dtype or buffers)"
    if given is not None:
        recorded = f"; the file was fitted on {meta.arch[:_SHOWN]!r}" if meta.arch else ""
        raise UserError(f"{{param}} {given} does not match the weights in '{factors.path}' ({problem}){recorded}: "
                        "name the class it was fitted with and the same {arch_kwargs}", param="arch", mentions=("arch_kwargs",))
    raise UserError(f"the architecture {str(meta.arch)[:_SHOWN]!r} does not match the weights in '{factors.path}' "
                    f"({problem}); refit the factors")


def _weights_only(factors: FactorFile) -> LoadedModel:
    """The stored weights as a module tree without code (:func:`module_from_weights`)."""
    frozen = json_attribute(factors.fit.get("frozen_parameters")) or []
    frozen = [n for n in frozen if isinstance(n, str)] if isinstance(frozen, list) else []
    blocks = factors.curvature.blocks
    names = factors.parameter_names
    if names is None:  # written before the names were recorded
        covered = [n for b in blocks for n in b.param_names] + frozen
        names = guess_parameter_names(factors.state_dict, covered, complete=factors.fit.get("subset") in (None, "all"))
    kinds = factors.module_kinds
    if kinds is None:
        kinds = guess_kinds({b.module: (tuple(b.param_shapes[0]), b.linear_conv) for b in blocks})
    module = module_from_weights(factors.state_dict, names, kinds, frozen=frozen, where=f"'{factors.path}'")
    module.eval()
    fingerprint = weights_fingerprint(module)
    if fingerprint != factors.fingerprint:
        raise UserError(f"the weights in '{factors.path}' do not match its recorded fingerprint; the file is damaged, refit it")
    return LoadedModel(module=module, meta=factors.model_meta, source=Path(factors.checkpoint_path), fingerprint=fingerprint)


def open_factor_model(path: str | Path, *, arch: str | None = None, arch_kwargs: Sequence[str] | None = None) -> LoadedModel:
    """The network of the factor file at ``path`` at its MAP weights (:func:`model_from_factor_file`)."""
    return model_from_factor_file(read_factor_file(path), arch=arch, arch_kwargs=arch_kwargs)


@dataclass
class OpenedFactors:
    """A factor file with its model rebuilt and its posterior ready."""

    factors: FactorFile
    model: LoadedModel
    posterior: LaplacePosterior

    @property
    def weights_only(self) -> bool:
        """The network's class was not imported: its weights are there, running it is an error."""
        return isinstance(self.model.module, StoredModule)


def open_posterior(
    path: str | Path,
    *,
    prior_precision: float | dict[str, float] | None = None,
    n_data: float | None = None,
    prior_mode: str | None = None,
    noise_std: float | None = None,
    device: torch.device | str = "cpu",
    flags: Collection[str] = (),
    arch: str | None = None,
    arch_kwargs: Sequence[str] | None = None,
    runs_model: bool = True,
) -> OpenedFactors:
    """Read a factor file and build its posterior; ``None`` means the file's own (possibly tuned) value.

    ``flags``: which of ``prior_precision``, ``n_data``, ``prior_mode`` the caller lets its user
    override; an unusable stored value is refused naming the file and, where it is one of these, the
    parameter to pass instead (the CLI shows the command's flag).
    ``arch``, ``arch_kwargs``, ``runs_model``: see :func:`model_from_factor_file`.

    Returns:
        The file, its model and its posterior.

    Raises:
        UserError: a damaged file, an unusable stored value, or N and τ whose precision overflows.
    """
    factors = read_factor_file(path)
    loaded = model_from_factor_file(factors, arch=arch, arch_kwargs=arch_kwargs, runs_model=runs_model)
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
                       overridable=flags)
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
    if not posterior.precision_is_finite():
        taus = sorted(set(posterior.prior_precision.values()))
        raise UserError(
            f"with N = {posterior.n_data:g} and τ = {', '.join(f'{t:g}' for t in taus)} the posterior precision "
            f"N·λ + τ of '{factors.path}' overflows its floating-point type (float32 ends at 3.4e38), and every "
            "answer would be NaN; give a smaller {n_data} or {prior_precision}",
            mentions=("n_data", "prior_precision"),
        )
    return OpenedFactors(factors=factors, model=loaded, posterior=posterior)

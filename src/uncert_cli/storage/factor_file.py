"""The HDF5 factor file: one versioned schema, written and read only here.

Layout (documented for plain-h5py readers in ``docs/factors-format.md``)::

    /                     attrs: format="uncert-factors", format_version, uncert_version, created
    /model                attrs: fingerprint, checkpoint_path, meta (JSON of ModelMeta),
                                 parameter_names (JSON: which state-dict entries are parameters, in
                                 the model's order), module_kinds (JSON: {module: "linear" | "conv" |
                                 class name}); both optional, so that a file is answered without its class
    /model/state_dict/<name>      every parameter and buffer of the model at the MAP (the weights)
    /fit                  attrs: dataset, split, n_data, task, method, fisher_type, mc_samples, subset,
                                 dtype, batch_size, seconds, peak_memory_bytes, log_likelihood
    /prior                attrs: prior_precision (JSON: number or {module: number}), prior_mode,
                                 n_data (the N used in the posterior), noise_std
    /tuning               attrs (optional, written by `uncert tune`): objective, result (JSON), history (JSON)
    /blocks/<k>           one group per block, k = 0, 1, ... in network order
                          attrs: module, structure (the block's storage tag), param_names (JSON),
                                 param_shapes (JSON); datasets: those of the tag's codec
                                 (``storage.codecs``: kronecker, diagonal, dense, lowrank, ekfac, kron-diag)

All factors are means over the data (see ``uncert_cli.curvature.blocks``). A block is written, read
and checked by the codec of its tag (:data:`~uncert_cli.storage.codecs.CODECS`); this module does the
rest of the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from uncert_cli import __version__
from uncert_cli.checkpoint import ModelMeta
from uncert_cli.checkpoint.meta import HEADER_KEY
from uncert_cli.core.atomic import FileIdentity, check_unchanged, in_memory_output, locked_update, write_bytes
from uncert_cli.core.errors import UserError
from uncert_cli.core.hdf5_contained import outside_reference
from uncert_cli.core.input_files import check_input_file
from uncert_cli.curvature.blocks import Curvature, CurvatureBlock
from uncert_cli.storage.arrays import read_tensor, write_array
from uncert_cli.storage.checks import check_attribute_types, check_layout, check_prior_to_write, check_values
from uncert_cli.storage.codecs import CODECS, Header

FORMAT_NAME = "uncert-factors"
FORMAT_VERSION = 1


@dataclass
class PriorSettings:
    """Hyperparameters of the posterior; later commands may override every one of them."""

    prior_precision: float | dict[str, float] = 1.0
    prior_mode: str = "eigen"
    n_data: float | None = None  # None: the number of data points the curvature was averaged over
    noise_std: float | None = None  # None: the checkpoint's noise_std, else 1


@dataclass
class FactorFile:
    """Everything a factor file holds, in memory."""

    path: Path
    curvature: Curvature
    model_meta: ModelMeta
    fingerprint: str
    checkpoint_path: str
    state_dict: dict[str, torch.Tensor]
    fit: dict[str, Any]
    prior: PriorSettings
    tuning: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    parameter_names: list[str] | None = None  # None: a file written before they were recorded
    module_kinds: dict[str, str] | None = None


def _write_block(group: h5py.Group, block: CurvatureBlock) -> None:
    group.attrs["module"] = block.module
    group.attrs["param_names"] = json.dumps(list(block.param_names))
    group.attrs["param_shapes"] = json.dumps([list(s) for s in block.param_shapes])
    group.attrs["structure"] = block.structure
    CODECS[block.structure].write(group, block)


def _json_attrs(group: h5py.Group, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, (dict, list, tuple)):
            group.attrs[key] = json.dumps(value)
        elif isinstance(value, str):  # a vocabulary member is a str subclass, which h5py does not store as text
            group.attrs[key] = str(value)
        else:
            group.attrs[key] = value


def check_storable_names(names: Iterable[str]) -> None:
    """Refuse weight names that HDF5 cannot hold as dataset names: ``/`` separates its groups, so
    ``heads.a/b.weight`` (an ``nn.ModuleDict`` key with a slash; only ``.`` is forbidden there) would be
    written as a nested group that no command finds again.
    """
    bad = [name for name in names if "/" in name]
    if bad:
        raise UserError(
            f"the network has weights whose names contain '/' ({', '.join(repr(n[:80]) for n in bad[:3])}), which "
            "a factor file (HDF5) cannot store; rename those modules (e.g. the keys of an nn.ModuleDict) without '/'"
        )


def write_factor_file(
    path: str | os.PathLike,
    curvature: Curvature,
    *,
    state_dict: Mapping[str, torch.Tensor],
    model_meta: ModelMeta,
    fingerprint: str,
    checkpoint_path: str,
    fit: Mapping[str, Any],
    prior: PriorSettings,
    parameter_names: Sequence[str] | None = None,
    module_kinds: Mapping[str, str] | None = None,
) -> Path:
    """Write a complete factor file atomically (temporary file, then rename).

    The file is built in memory and then written with Python I/O (:mod:`uncert_cli.core.atomic`): libhdf5
    never sees the disk, so a full disk is a clean error instead of a crash. Memory: one copy of the
    file (measured: +39 MiB for the 39.7 MB MNIST-MLP KFAC file, in the same time as writing to disk).
    """
    check_storable_names(state_dict)
    with in_memory_output(path) as image:
        with h5py.File(image, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["uncert_version"] = __version__
            f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            model = f.create_group("model")
            model.attrs["fingerprint"] = fingerprint
            model.attrs["checkpoint_path"] = checkpoint_path
            model.attrs["meta"] = model_meta.to_header()["uncert"]
            if parameter_names is not None:
                model.attrs["parameter_names"] = json.dumps(list(parameter_names))
            if module_kinds is not None:
                model.attrs["module_kinds"] = json.dumps(dict(module_kinds))
            weights = model.create_group("state_dict")
            for name, tensor in state_dict.items():
                write_array(weights, name, tensor)
            fit_group = f.create_group("fit")
            _json_attrs(fit_group, dict(fit))
            fit_group.attrs["n_data"] = curvature.n_data
            # str(): a vocabulary member is a str subclass, which h5py does not store as text
            fit_group.attrs["task"] = str(curvature.task)
            fit_group.attrs["method"] = str(curvature.method)
            fit_group.attrs["fisher_type"] = str(curvature.fisher_type)
            fit_group.attrs["mc_samples"] = curvature.mc_samples
            _write_prior(f, prior)
            blocks = f.create_group("blocks")
            for k, block in enumerate(curvature.blocks):
                _write_block(blocks.create_group(str(k)), block)
    return Path(path)


def _write_prior(f: h5py.File, prior: PriorSettings) -> None:
    group = f.require_group("prior")
    group.attrs["prior_precision"] = json.dumps(prior.prior_precision)
    group.attrs["prior_mode"] = str(prior.prior_mode)
    group.attrs["n_data"] = json.dumps(prior.n_data)
    group.attrs["noise_std"] = json.dumps(prior.noise_std)


def _read_block(group: h5py.Group) -> CurvatureBlock:
    header = Header(str(group.attrs["module"]), tuple(json.loads(group.attrs["param_names"])),
                    tuple(tuple(s) for s in json.loads(group.attrs["param_shapes"])))
    structure = str(group.attrs["structure"])
    codec = CODECS.get(structure)
    if codec is None:
        raise UserError(f"block '{header.module}' has unknown structure '{structure}'; upgrade uncert or refit")
    return codec.read(group, header)


def _attrs(group: h5py.Group) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in group.attrs.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bytes):
            value = value.decode()
        out[key] = value
    return out


def is_hdf5_file(path: str | os.PathLike) -> bool:
    """True for an existing regular file with HDF5's signature (a factor file rather than a checkpoint).

    Anything else (missing, a folder, a FIFO or a device, which reading could block on) is False from ``stat``
    alone, without opening it.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and bool(h5py.is_hdf5(path))


def check_factor_path(path: str | os.PathLike) -> Path:
    """``path`` if it exists and is HDF5 (cheap: the header only), else a :class:`UserError`, so that
    commands can name a missing factor file before complaining about their other options.
    """
    path = Path(path)
    if not path.exists():
        if "=" in path.name and path.suffix.lower() not in (".h5", ".hdf5"):
            # a constructor argument that became a file: --arch-kwargs a=1 b=2 gives the option only a=1
            raise UserError(f"no such factor file: {path}; {{arch_kwargs}} takes one key=value each: repeat it for "
                            f"each argument ({{arch_kwargs}} {path})", mentions=("arch_kwargs",))
        raise UserError(f"no such file: {path}; run 'uncert fit CHECKPOINT --data SPEC -o {path}' first")
    check_input_file(path, "factor file")  # a FIFO or a device would block or never end in is_hdf5
    if not h5py.is_hdf5(path):
        raise UserError(f"'{path}' is not an HDF5 file; pass a factor file written by 'uncert fit'")
    return path


# What h5py raises for a damaged file beyond OSError: RuntimeError from the C library's checks ("Link
# visitation failed (addr overflow ...)" for a corrupt group heap), KeyError/ValueError/TypeError for
# metadata that decodes to nonsense. Every reader of a factor file refuses them alike.
_DAMAGE_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


@contextlib.contextmanager
def _open_contained(path: Path) -> Iterator[h5py.File]:
    """The factor file opened for reading; refused, before anything in it is read, if it reaches into
    other files (links, external or virtual datasets: :mod:`uncert_cli.core.hdf5_contained`).
    """
    with h5py.File(path, "r") as f:
        reason = outside_reference(f)
        if reason is not None:
            raise UserError(f"'{path}' is damaged: {reason} (uncert never writes that: reading it would open "
                            "files you did not name); refit it with 'uncert fit'")
        yield f


def read_factor_file(path: str | os.PathLike) -> FactorFile:
    """Read a factor file written by :func:`write_factor_file`; bad files raise :class:`UserError`."""
    path = check_factor_path(path)
    try:
        with _open_contained(path) as f:
            check_attribute_types(f, path)  # before any attribute is read: see there
            if f.attrs.get("format") != FORMAT_NAME:
                raise UserError(f"'{path}' is an HDF5 file but not an uncert factor file; pass one written by 'uncert fit'")
            version = _format_version(f, path)
            check_layout(f, path)  # metadata only: nothing is allocated for a forged shape
            fit = _attrs(f["fit"])
            curvature = Curvature(
                blocks=[_read_block(f["blocks"][str(k)]) for k in range(len(f["blocks"]))],
                n_data=int(fit["n_data"]),
                task=fit["task"],
                method=fit["method"],
                fisher_type=fit["fisher_type"],
                mc_samples=int(fit.get("mc_samples", 1)),
            )
            model = f["model"]
            prior_attrs = _attrs(f["prior"])
            prior = PriorSettings(
                prior_precision=json.loads(prior_attrs["prior_precision"]),
                prior_mode=str(prior_attrs["prior_mode"]),
                n_data=json.loads(prior_attrs["n_data"]),
                noise_std=json.loads(prior_attrs["noise_std"]),
            )
            tuning = None
            if "tuning" in f:
                tuning = {k: json_attribute(v) for k, v in _attrs(f["tuning"]).items()}
            state_dict = {name: read_tensor(ds) for name, ds in model["state_dict"].items()}
            check_values(curvature, state_dict, path)
            return FactorFile(
                path=path,
                curvature=curvature,
                model_meta=ModelMeta.from_header({"uncert": str(model.attrs["meta"])}),
                fingerprint=str(model.attrs["fingerprint"]),
                checkpoint_path=str(model.attrs["checkpoint_path"]),
                state_dict=state_dict,
                fit=fit,
                prior=prior,
                tuning=tuning,
                format_version=version,
                parameter_names=_optional_json(model, "parameter_names"),
                module_kinds=_optional_json(model, "module_kinds"),
            )
    except UserError:
        raise
    # h5py reports a corrupted header or chunk as OSError, RuntimeError, KeyError or ValueError
    except _DAMAGE_ERRORS as exc:
        raise UserError(f"'{path}' is damaged or incomplete ({' '.join(str(exc).split())[:200]}); refit with "
                        "'uncert fit'") from exc


def _optional_json(group: h5py.Group, key: str) -> Any:
    """A JSON attribute that files written by older versions lack (None then); check_layout checked it."""
    return json.loads(group.attrs[key]) if key in group.attrs else None


KNOWN_VERSIONS = (1,)


def _format_version(f: h5py.File, path: Path) -> int:
    """The file's format version, if this uncert can read it."""
    value = f.attrs.get("format_version")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool) and value > FORMAT_VERSION:
        raise UserError(
            f"'{path}' uses factor-file format {value}, newer than this uncert understands "
            f"({FORMAT_VERSION}); upgrade uncert"
        )
    if value not in KNOWN_VERSIONS or isinstance(value, bool):
        raise UserError(f"'{path}' has an unknown factor-file format_version {str(value)[:40]!r} (this uncert reads "
                        f"{', '.join(map(str, KNOWN_VERSIONS))}); the file is damaged, refit it with 'uncert fit'")
    return int(value)


def json_attribute(value: Any) -> Any:
    """An attribute value, with JSON text (how lists and dicts are stored in HDF5) decoded."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):  # RecursionError: nested thousands deep
            return value
    return value


def update_hyperparameters(
    path: str | os.PathLike, prior: PriorSettings, tuning: Mapping[str, Any], *, expected: FileIdentity | None = None
) -> None:
    """Record tuned hyperparameters in an existing file: read it, edit the attributes in memory, rename.

    uncert's write lock on the folder is held for the whole read-modify-write, and the rename happens only if the file at
    ``path`` is still the one read (and, given ``expected``, the one the caller read before tuning):
    another command's write in between is refused, never mixed. A symbolic link is followed; the
    file keeps its permission bits and owner. Values that are not positive finite numbers are never written.
    """
    check_prior_to_write(Path(path), {"prior_precision": prior.prior_precision, "n_data": prior.n_data,
                                      "noise_std": prior.noise_std})
    with locked_update(path, expected) as target:
        identity = FileIdentity.of(target)
        read_factor_file(target)  # validates
        image = io.BytesIO(target.read_bytes())
        with h5py.File(image, "r+") as f:
            _write_prior(f, prior)
            if "tuning" in f:
                del f["tuning"]
            _json_attrs(f.create_group("tuning"), dict(tuning))
        with image.getbuffer() as view:
            write_bytes(target, view, in_place=True, before_replace=lambda: check_unchanged(target, identity))


def read_architecture(path: str | os.PathLike) -> dict[str, Any]:
    """What a factor file says its network is, from attributes and dataset shapes only (no arrays read):
    ``arch`` and ``arch_kwargs`` (the fit's record, possibly empty), ``shapes`` ``{weight name: shape}``
    and ``num_outputs``.
    """
    path = check_factor_path(path)
    try:
        with _open_contained(path) as f:
            model = f["model"]
            meta = ModelMeta.from_header({HEADER_KEY: str(model.attrs.get("meta", "{}"))})
            shapes = {name: tuple(ds.shape) for name, ds in model["state_dict"].items()}
    except _DAMAGE_ERRORS as exc:
        raise UserError(f"'{path}' is damaged or incomplete ({exc}); refit with 'uncert fit'") from exc
    return {"arch": meta.arch, "arch_kwargs": dict(meta.arch_kwargs), "shapes": shapes, "num_outputs": meta.num_outputs}


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """Where a factor file's posterior came from, read from its attributes only (no arrays).

    Keys: ``factors``, ``checkpoint``, ``fingerprint``, ``method``, ``fisher_type``, ``dataset``,
    ``n_data`` (the N in use), ``prior_precision`` (τ in use), ``prior_mode``, ``written_by``
    (the uncert version that wrote the file) and ``created``.
    """
    path = check_factor_path(path)
    try:
        with _open_contained(path) as f:
            fit, prior, model = _attrs(f["fit"]), _attrs(f["prior"]), f["model"]
            n_data = json_attribute(prior.get("n_data"))
            return {
                "factors": str(path),
                "checkpoint": str(model.attrs.get("checkpoint_path", "")),
                "fingerprint": str(model.attrs.get("fingerprint", "")),
                "method": fit.get("method"),
                "fisher_type": fit.get("fisher_type"),
                "dataset": fit.get("dataset"),
                "n_data": n_data if n_data is not None else fit.get("n_data"),
                "prior_precision": json_attribute(prior.get("prior_precision")),
                "prior_mode": prior.get("prior_mode"),
                "written_by": f"uncert {_attrs(f).get('uncert_version', '?')}",
                "created": _attrs(f).get("created"),
            }
    except _DAMAGE_ERRORS as exc:
        raise UserError(f"'{path}' is damaged or incomplete ({exc}); refit with 'uncert fit'") from exc

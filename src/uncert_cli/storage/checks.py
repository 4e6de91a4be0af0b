"""Validation of a factor file as it is opened (called by ``factor_file.read_factor_file``).

Two phases, so that a damaged or forged file never costs more than its own size:

* :func:`check_layout` reads HDF5 *metadata* only -- groups, attributes, every dataset's declared
  shape and dtype, and how many bytes it really occupies in the file -- and refuses, before any
  array is read, a dataset whose shape disagrees with the stored parameter shapes, whose dtype is
  not numeric, or whose declared size is far beyond what the file holds (a declared 10^13-element
  dataset costs a few bytes of header, and reading it would allocate 40 TB).
* :func:`check_values` runs on the tensors the reader loaded: finite values, eigenvalues and
  diagonals ≥ 0, symmetric factors, unit-norm eigenvectors, rank indices in range, finite weights.

Every refusal is one :class:`UserError` that names the file and the dataset (the recorded outputs:
:mod:`uncert_cli.storage.output_checks`). Stored hyperparameters
(``/prior``) are checked where they are used (:func:`check_stored_prior`), because a command's flag
may override them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from uncert_cli.core.errors import UserError
from uncert_cli.core.vocabulary import FisherType, Method, PriorMode, Task
from uncert_cli.curvature.blocks import Curvature
from uncert_cli.storage.arrays import FLOAT_DTYPES, INDEX_DTYPES, WEIGHT_DTYPES, damaged
from uncert_cli.storage.codecs import CODECS
from uncert_cli.storage.output_checks import check_recorded_outputs

TASKS = Task.choices()
FISHER_TYPES = FisherType.choices()
PRIOR_MODES = PriorMode.choices()
# deflate cannot compress by more than ~1032:1, so a dataset that declares more than this many
# times the bytes it occupies (plus slack for tiny ones) cannot have been written in full.
MAX_COMPRESSION = 1100
SLACK_BYTES = 1 << 20
NEGATIVE_TOLERANCE = 1e-6  # relative to the largest magnitude: eigenvalues are stored clamped at 0
SYMMETRY_TOLERANCE = 1e-4  # relative; the engine writes exactly symmetric factors
NORM_TOLERANCE = 1e-2  # |‖u‖ − 1| of stored eigenvectors (float32 round-off is ~1e-6)


def check_attribute_types(group: h5py.Group, path: Path) -> None:
    """Refuse attributes that are not numbers or text, before any value is read.

    uncert writes only those. A damaged datatype message can turn a string attribute into, say, a
    variable-length sequence whose heap pointers point anywhere, and h5py's conversion of such a value
    crashes the process (found by the random byte-flip tests); its type alone is safe to look at.
    """
    for key in group.attrs:
        dtype = group.attrs.get_id(key).dtype
        if dtype.kind not in "biufSU" and h5py.check_string_dtype(dtype) is None:
            raise damaged(path, f"{group.name} attribute '{str(key)[:40]}'", f"has type {str(dtype)[:40]}, not numbers or text")


# --------------------------------------------------------------------------------------- layout
def check_layout(f: h5py.File, path: Path) -> None:
    """Refuse a file whose structure, attributes, shapes or dtypes are wrong; reads no array data."""
    for name in ("model", "model/state_dict", "fit", "prior", "blocks"):
        if not isinstance(f.get(name), h5py.Group):
            raise damaged(path, f"/{name}", "is missing")
    for name in ("model", "fit", "prior", "tuning"):
        if isinstance(f.get(name), h5py.Group):
            check_attribute_types(f[name], path)
    weights: dict[str, tuple[int, ...]] = {}
    for name, ds in f["model/state_dict"].items():
        weights[name] = _check_dataset(ds, f"/model/state_dict/{name}", path, WEIGHT_DTYPES).shape
    _check_model_attrs(f["model"], path)
    _check_fit_attrs(f["fit"], path)
    _check_prior_attrs(f["prior"], path)
    model = f["model"]
    check_recorded_outputs(_json_attr(model, "meta", path), str(_attr(f["fit"], "task", path)), path)
    blocks = f["blocks"]
    expected = {str(k) for k in range(len(blocks))}
    if not expected or set(blocks.keys()) != expected:
        raise damaged(path, "/blocks", f"holds {sorted(blocks.keys())[:5]}, expected groups 0, 1, ... (at least one)")
    seen: set[str] = set()
    for k in range(len(blocks)):
        _check_block(blocks[str(k)], f"/blocks/{k}", weights, seen, path)


def _check_dataset(obj: Any, where: str, path: Path, dtypes: tuple[np.dtype, ...]) -> h5py.Dataset:
    """``obj`` is a dataset of an allowed dtype whose declared size the file can really hold."""
    if not isinstance(obj, h5py.Dataset):
        raise damaged(path, where, "is missing or not a dataset")
    dtype = obj.dtype
    if dtype.newbyteorder("=") not in dtypes:
        kind = "strings" if dtype.kind in "SUO" else f"dtype {dtype}"
        wanted = "floating-point numbers" if dtypes == FLOAT_DTYPES else "integers" if dtypes == INDEX_DTYPES else "numbers"
        raise damaged(path, where, f"holds {kind}, not {wanted}")
    declared = int(np.prod(obj.shape, dtype=object)) * dtype.itemsize if obj.shape is not None else 0
    stored = obj.id.get_storage_size()
    if declared > MAX_COMPRESSION * stored + SLACK_BYTES:
        raise damaged(path, where, f"declares shape {tuple(obj.shape)} ({declared:,} bytes) but the file holds only "
                                   f"{stored:,} bytes of it")
    return obj


def _attr(group: h5py.Group, key: str, path: Path) -> Any:
    if key not in group.attrs:
        raise damaged(path, f"{group.name} attribute '{key}'", "is missing")
    value = group.attrs[key]
    if isinstance(value, np.generic):
        value = value.item()
    return value.decode() if isinstance(value, bytes) else value


def _json_attr(group: h5py.Group, key: str, path: Path) -> Any:
    text = _attr(group, key, path)
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):  # RecursionError: nested thousands deep
        raise damaged(path, f"{group.name} attribute '{key}'", f"is not JSON ({str(text)[:40]!r})") from None


def _choice(group: h5py.Group, key: str, choices: tuple[str, ...], path: Path) -> str:
    value = _attr(group, key, path)
    if value not in choices:
        raise damaged(path, f"{group.name} attribute '{key}'", f"is {str(value)[:40]!r}, not one of {', '.join(choices)}")
    return value


def _check_model_attrs(model: h5py.Group, path: Path) -> None:
    for key in ("fingerprint", "meta", "checkpoint_path"):
        if not isinstance(_attr(model, key, path), str):
            raise damaged(path, f"/model attribute '{key}'", "is not a string")
    if not isinstance(_json_attr(model, "meta", path), dict):
        raise damaged(path, "/model attribute 'meta'", "is not a JSON object")
    # Optional (files before they were recorded lack them): the weights-only model is built from them.
    if "parameter_names" in model.attrs:
        names = _json_attr(model, "parameter_names", path)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise damaged(path, "/model attribute 'parameter_names'", "is not a JSON list of names")
    if "module_kinds" in model.attrs:
        kinds = _json_attr(model, "module_kinds", path)
        if not isinstance(kinds, dict) or not all(isinstance(v, str) for v in kinds.values()):
            raise damaged(path, "/model attribute 'module_kinds'", "is not a JSON object of names")


def _check_fit_attrs(fit: h5py.Group, path: Path) -> None:
    n_data = _attr(fit, "n_data", path)
    if isinstance(n_data, bool) or not isinstance(n_data, (int, float)) or not (
        math.isfinite(n_data) and n_data >= 1 and n_data == int(n_data)
    ):
        raise damaged(path, "/fit attribute 'n_data'", f"is {str(n_data)[:40]!r}, not a positive whole number")
    _choice(fit, "task", TASKS, path)
    _choice(fit, "method", Method.choices(), path)
    _choice(fit, "fisher_type", FISHER_TYPES, path)
    if "mc_samples" in fit.attrs:
        mc = _attr(fit, "mc_samples", path)
        if isinstance(mc, bool) or not isinstance(mc, int) or mc < 1:
            raise damaged(path, "/fit attribute 'mc_samples'", f"is {str(mc)[:40]!r}, not a positive integer")


def _check_prior_attrs(prior: h5py.Group, path: Path) -> None:
    """Only that they parse: whether the values are usable is checked where a flag may override them."""
    for key in ("prior_precision", "n_data", "noise_std"):
        _json_attr(prior, key, path)
    if not isinstance(_attr(prior, "prior_mode", path), str):
        raise damaged(path, "/prior attribute 'prior_mode'", "is not a string")


def _check_block(group: Any, where: str, weights: Mapping[str, tuple[int, ...]], seen: set[str], path: Path) -> None:
    if not isinstance(group, h5py.Group):
        raise damaged(path, where, "is not a group")
    check_attribute_types(group, path)
    module = _attr(group, "module", path)
    structure = _attr(group, "structure", path)
    if not isinstance(module, str) or not isinstance(structure, str):
        raise damaged(path, where, "has a non-text 'module' or 'structure' attribute")
    if structure not in CODECS:
        raise UserError(f"block '{module}' of '{path}' has unknown structure '{structure[:40]}'; upgrade uncert or refit")
    names = _json_attr(group, "param_names", path)
    shapes = _json_attr(group, "param_shapes", path)
    if (not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names)
            or not isinstance(shapes, list) or len(shapes) != len(names)
            or not all(isinstance(s, list) and all(_is_count(d) for d in s) for s in shapes)):
        raise damaged(path, where, "has param_names/param_shapes that are not matching lists of names and shapes")
    for name, shape in zip(names, shapes):
        if name not in weights:
            raise damaged(path, where, f"names parameter '{name}', which /model/state_dict does not hold")
        if tuple(weights[name]) != tuple(shape):
            raise damaged(path, where, f"records shape {tuple(shape)} for '{name}' but the stored weight has "
                                       f"{tuple(weights[name])}")
        if name in seen:
            raise damaged(path, where, f"covers '{name}', which an earlier block covers too")
        seen.add(name)
    for name, (shape, dtypes) in CODECS[structure].expected(group, shapes, where, path).items():
        ds = _check_dataset(group.get(name), f"{where}/{name}", path, dtypes)
        if tuple(ds.shape) != shape:
            raise damaged(path, f"{where}/{name}", f"has shape {tuple(ds.shape)}, expected {shape} from the parameter "
                                                   f"shapes of '{module}'")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# --------------------------------------------------------------------------------------- values
def check_values(curvature: Curvature, state_dict: Mapping[str, Tensor], path: Path) -> None:
    """Refuse non-finite numbers, negative eigenvalues/diagonals, asymmetric factors, eigenvectors that
    are not unit vectors and rank indices out of range (the layout is already known to be right).
    """
    for k, block in enumerate(curvature.blocks):
        where = f"/blocks/{k}"
        codec = CODECS[block.structure]
        for name, tensor, rule in codec.arrays(block):
            _check_array(tensor, rule, f"{where}/{name}", path)
        codec.check(block, where, path)
        for name in block.param_names:
            weight = state_dict[name]
            if weight.is_floating_point() and not bool(torch.isfinite(weight).all()):
                raise damaged(path, f"/model/state_dict/{name}", "contains NaN or inf")


def _check_array(tensor: Tensor, rule: str, where: str, path: Path) -> None:
    if not bool(torch.isfinite(tensor).all()):
        raise damaged(path, where, "contains NaN or inf")
    if tensor.numel() == 0:
        return
    t = tensor.double()
    scale = float(t.abs().max())
    if rule == "nonnegative" and float(t.min()) < -NEGATIVE_TOLERANCE * scale:
        raise damaged(path, where, f"has the negative value {float(t.min()):.3g} (curvature eigenvalues and "
                                   "diagonals are ≥ 0)")
    if rule == "factor":
        if float((t - t.T).abs().max()) > SYMMETRY_TOLERANCE * scale:
            raise damaged(path, where, "is not symmetric (a curvature factor is)")
        if float(t.diagonal().min()) < -NEGATIVE_TOLERANCE * scale:
            raise damaged(path, where, "has a negative diagonal entry (a curvature factor is positive semi-definite)")
    if rule == "eigenvectors":
        norms = t.square().sum(0).sqrt()
        if float((norms - 1).abs().max()) > NORM_TOLERANCE:
            raise damaged(path, where, "has columns that are not unit vectors (eigenvectors are orthonormal)")


# --------------------------------------------------------------------------------------- prior
def check_stored_prior(
    path: Path, stored: Mapping[str, Any], *, regression: bool, overridable: Collection[str]
) -> None:
    """Refuse a stored hyperparameter that cannot be used, saying it came from the file.

    ``stored``: ``{name: value}`` of the values that the command will take from the file (those not
    overridden); ``overridable``: the names among them that the caller lets its user override (the
    message suggests passing that parameter; the CLI shows it as the command's flag).
    """
    for name, value in stored.items():
        if name == "prior_mode":
            ok = value in PRIOR_MODES
            want = f"one of {', '.join(PRIOR_MODES)}"
        elif name == "prior_precision":
            ok = _positive_finite(value) or (isinstance(value, dict) and bool(value) and all(
                isinstance(k, str) and _positive_finite(v) for k, v in value.items()))
            want = "a positive finite number (or one per layer)"
        elif name == "noise_std" and not regression:
            continue  # classification ignores it
        else:  # n_data, noise_std: null means "the default"
            ok = value is None or _positive_finite(value)
            want = "a positive finite number"
        if not ok:
            fix = "refit it or pass {param}" if name in overridable else "refit it with 'uncert fit'"
            raise UserError(f"'{path}' stores {name} {json.dumps(value)[:60]}, which is not {want}; {fix}",
                            param=name if name in overridable else None)


def check_prior_to_write(path: Path, values: Mapping[str, Any]) -> None:
    """Refuse to record hyperparameters that no later command could use (NaN, inf, ≤ 0)."""
    for name, value in values.items():
        ok = (value is None and name != "prior_precision") or _positive_finite(value) or (
            name == "prior_precision" and isinstance(value, dict) and bool(value)
            and all(_positive_finite(v) for v in value.values()))
        if not ok:
            raise UserError(f"tuning produced {name} = {value!r}, which is not a positive finite number; nothing was "
                            f"written into '{path}' (refit with {{dtype}} float64 or more data, then tune again)",
                            mentions=("dtype",))


def _positive_finite(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)

"""Reading and writing model files: safetensors (preferred) and PyTorch pickles (``.pt``)."""

from __future__ import annotations

import os
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uncert_cli.checkpoint.arch import (
    build_file_module,
    build_module,
    canonical_arch,
    check_file_arch_kwargs,
    is_builtin_arch,
)
from uncert_cli.checkpoint.hf_folder import is_hf_folder, read_hf_folder
from uncert_cli.checkpoint.meta import HEADER_KEY, ModelMeta, check_task
from uncert_cli.checkpoint.numpy_scalars import numpy_scalar_globals
from uncert_cli.checkpoint.outputs import OutputChoice, select_output
from uncert_cli.checkpoint.prefixes import network_entries
from uncert_cli.checkpoint.state import (
    check_compatible,
    is_state_dict,
    state_under_key,
    unwrap_checkpoint,
    weights_fingerprint,
)
from uncert_cli.core.atomic import write_bytes
from uncert_cli.core.errors import UserError
from uncert_cli.core.input_files import check_input_file

__all__ = ["LoadedModel", "load_model", "save_model"]

_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_ARCH_HELP = (
    "pass {arch} package.module:Class (or path/to/file.py:Class, or torchvision:resnet18) "
    "with {arch_kwargs} for its constructor"
)


@dataclass
class LoadedModel:
    """A model ready for analysis: eval mode, on CPU, with its metadata and weight fingerprint.

    ``notes``: what loading decided that the user should hear (e.g. which key prefix was taken).
    """

    module: nn.Module
    meta: ModelMeta
    source: Path
    fingerprint: str
    notes: list[str] = field(default_factory=list)


class _NotThisFormat(Exception):
    """Internal: the file is not in the format tried; carries a short reason."""


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    # Imported lazily: only this path needs the Rust extension.
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata()
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as exc:  # SafetensorError, OSError, ...: all mean "unusable file"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _NotThisFormat(reason) from exc
    return tensors, header


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip with a ``data.pkl`` member, or (legacy) a raw pickle."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                return any(n.endswith("data.pkl") for n in archive.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
    with open(path, "rb") as handle:
        return handle.read(1) == b"\x80"  # pickle protocol >= 2 opcode


def _pickle_refusal(path: Path, error: str) -> UserError:
    found = re.search(r"GLOBAL\s+([\w.]+)", error)
    what = f" (it references {found.group(1)})" if found else ""
    return UserError(
        f"{path} is a Python pickle, not plain weights{what}; loading it can execute arbitrary code. "
        "Pass {param} only if you trust its source, or re-save it as safetensors or as a "
        "state dict (torch.save(model.state_dict(), ...))",
        param="trust_pickle",
    )


def _read_torch(path: Path, trust_pickle: bool) -> Any:
    try:
        with torch.serialization.safe_globals(numpy_scalar_globals()):  # np.int64(epoch) and the like
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        message = str(exc)
    if "TorchScript" in message:
        raise UserError(
            f"{path} is a TorchScript archive, which uncert cannot analyse; save the eager model's "
            "state dict (torch.save(model.state_dict(), ...)) and pass {param}",
            param="arch",
        )
    is_torch = _looks_like_torch_file(path)
    refused = "Weights only load failed" in message and (
        re.search(r"GLOBAL\s+[\w.]+", message) is not None or is_torch
    )
    if not refused:
        # torch's own message for garbage is internal noise ("pop from empty list"); say what
        # the file is not instead, unless it really is a torch file that failed to load.
        first_line = message.strip().splitlines()[0] if message.strip() else "unreadable"
        raise _NotThisFormat(
            first_line if is_torch else "neither a torch.save zip archive nor a pickle, or truncated"
        )
    if not trust_pickle:
        raise _pickle_refusal(path, message)
    try:
        return _unpickle_with_cwd_fallback(path)
    except (AttributeError, ModuleNotFoundError, ImportError) as exc:
        raise UserError(
            f"{path} is a pickled model whose code is not importable here ({exc}); "
            "make the defining module importable, or re-save the state dict and pass {param}",
            param="arch",
        ) from exc
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError) as exc:
        raise _NotThisFormat(str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable") from exc


def _unpickle_with_cwd_fallback(path: Path) -> Any:
    """``torch.load`` of a trusted pickle; a class from a module in the working directory is found
    as ``python -m`` would find it (a console script does not put the folder on ``sys.path``).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        cwd = str(Path.cwd())
        top = (exc.name or "").split(".")[0]
        local = Path(cwd, f"{top}.py").is_file() or Path(cwd, top, "__init__.py").is_file()
        if not top or not local or cwd in sys.path:
            raise
    sys.path.append(cwd)  # last: the folder never shadows an installed package
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    finally:
        sys.path.remove(cwd)


def _meta_from_torch_object(obj: Any) -> ModelMeta:
    """A ``.pt`` dict may carry uncert metadata under key ``"uncert"`` (dict or JSON string)."""
    if isinstance(obj, dict) and not is_state_dict(obj) and HEADER_KEY in obj:
        value = obj[HEADER_KEY]
        if isinstance(value, str):
            return ModelMeta.from_header({HEADER_KEY: value})
        if isinstance(value, dict):
            return ModelMeta.from_dict(value)
    return ModelMeta()


def _read(
    path: Path, trust_pickle: bool, state_key: str | None = None
) -> tuple[dict[str, torch.Tensor] | nn.Module, ModelMeta]:
    """Read any supported file into (state dict or module, metadata).

    ``state_key``: the key of a torch.save'd dict that holds the state dict; without
    it the first of the usual wrapper keys that holds one (:func:`unwrap_checkpoint`).

    The suffix picks the format to try first; the other one is tried as a fallback because
    files get renamed (a safetensors file saved as ``model.bin`` is common).  Safetensors goes
    first for unknown suffixes because reading it runs no code.
    """
    suffix = path.suffix.lower()
    order = ["torch", "safetensors"] if suffix in _TORCH_SUFFIXES else ["safetensors", "torch"]
    reasons: dict[str, str] = {}
    for kind in order:
        try:
            if kind == "safetensors":
                tensors, header = _read_safetensors(path)
                if state_key is not None:
                    raise UserError(f"{path} is a safetensors file, one flat state dict: drop {{param}}",
                                    param="state_key")
                return tensors, ModelMeta.from_header(header)
            obj = _read_torch(path, trust_pickle)
            content = state_under_key(obj, state_key, str(path)) if state_key else unwrap_checkpoint(obj, str(path))
            return content, _meta_from_torch_object(obj)
        except _NotThisFormat as exc:
            reasons[kind] = str(exc)
        if suffix == ".safetensors":
            break  # a file named .safetensors is never sent through pickle loading
    if suffix == ".safetensors":
        raise UserError(
            f"{path} is not a valid safetensors file ({reasons['safetensors']}); re-save or re-download it"
        )
    if suffix in _TORCH_SUFFIXES:
        raise UserError(
            f"{path} is not a PyTorch checkpoint ({reasons['torch']}); expected a file written by torch.save"
        )
    raise UserError(
        f"{path} is neither a safetensors file nor a PyTorch checkpoint; "
        "give a .safetensors file or a .pt/.pth file written by torch.save"
    )


def load_model(
    path: str | os.PathLike[str],
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    trust_pickle: bool = False,
    input_shape: tuple[int, ...] | list[int] | None = None,
    task: str | None = None,
    state_key: str | None = None,
    strip_prefix: str | None = None,
    output: OutputChoice = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a model file for analysis.

    The architecture comes from ``arch`` if given, else from the file's metadata, else (for a
    trusted pickled module) from the pickle itself.  ``arch_kwargs`` are merged over the
    metadata's keywords when the architecture is the same one, and used alone otherwise.
    ``input_shape`` and ``task`` override the metadata.  ``state_key`` names the dict entry holding
    the state dict, ``strip_prefix`` the key prefix of the network's entries (else found as
    :func:`~uncert_cli.checkpoint.prefixes.network_entries` says). ``output`` chooses the part of a
    structured forward result to analyse (:mod:`uncert_cli.checkpoint.outputs`; default: the metadata's,
    else automatic). Every problem with the file or the options raises :class:`UserError`.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise UserError(f"no such file: {source}")
    notes: list[str] = []
    if source.is_dir():
        if not is_hf_folder(source):
            raise UserError(f"{source} is a directory without a config.json; pass the model file inside it "
                            "(e.g. model.safetensors), or a Hugging Face model folder")
        if arch is not None or state_key is not None:
            raise UserError(f"{source} is a Hugging Face model folder, whose config.json says the network and whose "
                            "weights file holds it: drop {param}", param="arch" if arch is not None else "state_key")
        if strip_prefix is not None:
            raise UserError(f"{source} is a Hugging Face model folder: drop {{param}}", param="strip_prefix")
        module, meta = read_hf_folder(source, trust_remote_code)
        return _finish(module, meta, source, notes, input_shape, task, output)
    check_input_file(source, "checkpoint")  # a FIFO or a device would block or never end

    content, meta = _read(source, trust_pickle, state_key)

    chosen = canonical_arch(arch) if arch else None
    if chosen is None and meta.arch and not isinstance(content, nn.Module):
        # The file's own word: only uncert's models and torchvision builders, plain keywords.
        if not is_builtin_arch(meta.arch):
            raise UserError(
                f"{source} names its architecture {meta.arch[:120]!r}, which would import and run code from "
                "outside uncert and torchvision; if you have that class's code and trust it, name it yourself with "
                "{param} MODULE:CLASS (or path/to/file.py:CLASS)",  # never echo the file's text as a command to run
                param="arch",
            )
        chosen = canonical_arch(meta.arch)
        module = build_file_module(chosen, meta.arch_kwargs, str(source), user_kwargs=arch_kwargs)
        kwargs = {**meta.arch_kwargs, **(arch_kwargs or {})}
    elif chosen is not None:
        same = meta.arch is not None and canonical_arch(meta.arch) == chosen
        file_kwargs = check_file_arch_kwargs(meta.arch_kwargs, str(source)) if same else {}
        kwargs = {**file_kwargs, **(arch_kwargs or {})}
        module = build_module(chosen, kwargs)
    if chosen is not None:
        state = content.state_dict() if isinstance(content, nn.Module) else content
        _load_into(module, state, chosen, strip_prefix, notes)
        # Keep the spelling the user or file gave (e.g. "MLP"); it builds the same module.
        meta = replace(meta, arch=arch or meta.arch, arch_kwargs=kwargs)
    elif isinstance(content, nn.Module):
        if strip_prefix is not None:
            raise UserError(f"{source} is a pickled module, not a state dict: drop {{param}}", param="strip_prefix")
        module = content
    else:
        raise UserError(f"{source} holds only weights, no architecture; {_ARCH_HELP}", mentions=("arch", "arch_kwargs"))

    return _finish(module, meta, source, notes, input_shape, task, output)


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], chosen: str, strip_prefix: str | None,
               notes: list[str]) -> None:
    """Load the network's entries of ``state`` into ``module``, checked first (one line naming what differs)."""
    state, note = network_entries(dict(state), module.state_dict(), strip_prefix)
    notes.extend([note] if note else [])
    check_compatible(state, module, chosen)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # custom _load_from_state_dict hooks can still object
        raise UserError(f"loading the weights into {chosen} failed: {exc}") from exc


def _finish(module: nn.Module, meta: ModelMeta, source: Path, notes: list[str],
            input_shape: tuple[int, ...] | list[int] | None, task: str | None, output: OutputChoice) -> LoadedModel:
    """The options that override the metadata, eval mode on the CPU, and the output selection."""
    if input_shape is not None:
        meta = replace(meta, input_shape=tuple(input_shape))
    if task is not None:
        meta = replace(meta, task=check_task(task))
    if output is not None:
        meta = replace(meta, output=output)
    module = module.to("cpu").eval()
    select_output(module, meta.output)
    return LoadedModel(module=module, meta=meta, source=source, fingerprint=weights_fingerprint(module), notes=notes)


def _tensors_for_saving(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors with no shared storage (safetensors rejects sharing,
    which tied weights would otherwise cause; loading restores the tie through the module).
    """
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if key in seen and tensor.numel() > 0:
            tensor = tensor.clone()
        seen.add(key)
        tensors[name] = tensor
    return tensors


def save_model(module: nn.Module, meta: ModelMeta, path: str | os.PathLike[str]) -> None:
    """Write ``module``'s state dict and ``meta`` to a ``.safetensors`` file, atomically.

    The file is written next to the target and renamed over it, so a crash never leaves a
    half-written model where a good one was.
    """
    from safetensors.torch import save  # bytes in memory: only Python I/O meets the disk (uncert_cli.core.atomic)

    target = Path(path).expanduser()
    if target.suffix.lower() != ".safetensors":
        raise UserError(f"models are saved as safetensors; name the file *.safetensors, not {target.name}")
    if not target.parent.is_dir():
        raise UserError(f"cannot save {target}: folder {target.parent} does not exist")
    tensors = _tensors_for_saving(module)
    header = meta.to_header()
    write_bytes(target, save(tensors, metadata=header))

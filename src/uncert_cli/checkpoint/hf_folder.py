"""Hugging Face model folders (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``).

``transformers`` is an optional dependency (``pip install 'uncert-cli[hf]'``), imported only here. The
network is built from the folder's config and its weights are loaded by transformers from the local files
only (safetensors, or ``torch.load(weights_only=True)`` for ``.bin``; transformers also renames the keys of
older layouts), and nothing is fetched: the hub is switched off before transformers is imported.

What a config may choose is limited as for any file: a model class among transformers' sequence- and
image-classification heads (by name, from its own auto mappings), no ``auto_map`` (custom code) unless
the caller passes ``trust_remote_code=True``, and attention always the ``eager`` implementation (the only one
whose operations the curvature engine's per-example passes can run, and one that loads no kernels from
the hub). The config is recorded in the factor file (model metadata ``extra.hf_config``) so that later
commands rebuild the same network from the file alone, under the same rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from torch import nn

from uncert_cli.checkpoint.meta import ModelMeta
from uncert_cli.core.errors import UserError
from uncert_cli.core.hf_offline import import_offline

__all__ = ["is_hf_folder", "read_hf_folder", "hf_module_from_meta", "is_hf_arch", "tokenizer_folder", "HF_PREFIX", "HF_MISSING"]

HF_PREFIX = "transformers:"
HF_MISSING = ("transformers is not installed; install it with pip install 'uncert-cli[hf]' (or pip install "
              "transformers) to read Hugging Face model folders")
CONFIG_KEY = "hf_config"  # ModelMeta.extra key holding the config
TOKENIZER_KEY = "tokenizer_folder"  # ModelMeta.extra key: the folder holding the model's tokenizer, if it has one
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")
_HEADS = ("ForSequenceClassification", "ForImageClassification")
# Config keys never passed on: the type is given separately, custom code is refused above, and a quantization
# recipe would make transformers load other packages' kernels.
_DROPPED = ("model_type", "auto_map", "transformers_version", "quantization_config")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def is_hf_arch(arch: str | None) -> bool:
    return isinstance(arch, str) and arch.startswith(HF_PREFIX)


def _transformers() -> Any:
    return import_offline("transformers", HF_MISSING)


def _head_classes(transformers: Any) -> dict[str, str]:
    """``{model class name: model_type}`` of every sequence/image classification head transformers knows."""
    from transformers.models.auto import modeling_auto

    found: dict[str, str] = {}
    for mapping in ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"):
        for model_type, names in getattr(modeling_auto, mapping, {}).items():
            for name in names if isinstance(names, (tuple, list)) else (names,):
                found[name] = model_type
    return found


def _checked_config(config_dict: Any, class_name: str | None, where: str) -> tuple[Any, Any]:
    """``(model class, config)`` for a config (a folder's config.json or a factor file's record), or a
    UserError: the class must be a transformers classification head for the config's model type, and the
    config must not name code of its own (``auto_map``).
    """
    transformers = _transformers()
    if not isinstance(config_dict, dict):
        raise UserError(f"{where}: the Hugging Face config is not a JSON object")
    if config_dict.get("auto_map"):
        raise UserError(f"{where}: the config names its own code (auto_map), which would run on loading; pass "
                        "{param} only if you trust the folder", param="trust_remote_code")
    names = config_dict.get("architectures") or []
    name = class_name or next((n for n in names if isinstance(n, str) and n.endswith(_HEADS)), None)
    if name is None:
        raise UserError(f"{where}: the config names no classification head (architectures: {str(names)[:120]}); "
                        "uncert reads sequence- and image-classification models (e.g. BertForSequenceClassification)")
    model_type = config_dict.get("model_type")
    if not isinstance(model_type, str) or _head_classes(transformers).get(name) != model_type:
        raise UserError(f"{where}: {name[:80]!r} is not a transformers classification head for model type "
                        f"{str(model_type)[:40]!r}; uncert reads sequence- and image-classification models")
    settings = {k: v for k, v in config_dict.items() if k not in _DROPPED}
    try:
        config = transformers.AutoConfig.for_model(model_type, **settings)
    except Exception as exc:
        raise UserError(f"{where}: the config does not describe a {name}: {type(exc).__name__}: {str(exc)[:200]}") from None
    config._attn_implementation = "eager"
    return getattr(transformers, name), config


def _from_folder(folder: Path, trust_remote_code: bool) -> nn.Module:
    """The folder's network with its weights, loaded by transformers (which renames the keys of older
    layouts) from the local files only: safetensors, or ``.bin`` through ``torch.load(weights_only=True)``.
    Weights the folder lacks are an error, never a random initialisation.
    """
    transformers = _transformers()
    try:
        config_dict = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
        raise UserError(f"{folder}/config.json is not readable JSON ({exc})") from None
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        raise UserError(f"{folder} has a config.json but no weights: expected {' or '.join(_WEIGHT_FILES[::2])}")
    common: dict[str, Any] = dict(local_files_only=True, weights_only=True, output_loading_info=True,
                                  attn_implementation="eager")
    try:
        if trust_remote_code and isinstance(config_dict, dict) and config_dict.get("auto_map"):
            names = config_dict.get("architectures") or [""]
            auto = (transformers.AutoModelForImageClassification if str(names[0]).endswith(_HEADS[1])
                    else transformers.AutoModelForSequenceClassification)
            module, info = auto.from_pretrained(str(folder), trust_remote_code=True, **common)
        else:
            cls, config = _checked_config(config_dict, None, str(folder))
            module, info = cls.from_pretrained(str(folder), config=config, **common)
    except UserError:
        raise
    except Exception as exc:  # OSError for unreadable files, UnpicklingError for a .bin holding objects, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"cannot load the model in {folder} ({type(exc).__name__}: {first}); a .bin must hold "
                        "plain tensors (it is read with weights_only=True)") from None
    missing = list(info.get("missing_keys") or []) + [str(m) for m in info.get("mismatched_keys") or []]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise UserError(f"the weights in {folder} do not cover the network its config describes: {shown}; "
                        "uncert never analyses randomly initialised weights")
    return module


def read_hf_folder(folder: Path, trust_remote_code: bool = False) -> tuple[nn.Module, ModelMeta]:
    """``(network with the folder's weights, metadata)`` of a Hugging Face model folder."""
    module = _from_folder(folder, trust_remote_code)
    name = type(module).__name__
    config = cast(Any, module).config.to_dict()  # a transformers PreTrainedModel
    image = name.endswith("ForImageClassification")
    size = config.get("image_size")
    input_shape = None
    if image and isinstance(size, int) and isinstance(config.get("num_channels"), int):
        input_shape = (config["num_channels"], size, size)
    regression = config.get("problem_type") == "regression"
    extra: dict[str, Any] = {CONFIG_KEY: json.loads(json.dumps(config, default=str))}
    if any((folder / name).is_file() for name in _TOKENIZER_FILES):
        # Where later commands find the tokenizer for a saved dataset's text (data.hf_datasets).
        extra[TOKENIZER_KEY] = str(folder.resolve())
    meta = ModelMeta(arch=HF_PREFIX + name, input_shape=input_shape, num_outputs=getattr(module.config, "num_labels", None),
                     task="regression" if regression else "classification", output="logits", extra=extra)
    return module, meta


def hf_module_from_meta(meta: ModelMeta, where: str) -> nn.Module:
    """The network a factor file's metadata describes (``transformers:Class`` + ``extra.hf_config``), randomly
    initialised (the caller loads the stored weights), under the rules of :func:`_checked_config`: a file
    cannot consent to remote code.
    """
    cls, config = _checked_config(meta.extra.get(CONFIG_KEY), str(meta.arch)[len(HF_PREFIX):], where)
    try:
        return cls(config)
    except Exception as exc:
        raise UserError(f"{where}: building {cls.__name__} from the recorded config failed: {type(exc).__name__}: "
                        f"{str(exc)[:200]}") from None


def tokenizer_folder(meta: ModelMeta) -> str | None:
    """The Hugging Face model folder whose tokenizer reads text for this model (recorded by ``fit``), if any."""
    folder = meta.extra.get(TOKENIZER_KEY)
    return folder if isinstance(folder, str) else None

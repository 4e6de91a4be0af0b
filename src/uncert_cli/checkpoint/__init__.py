"""The checkpoint layer: model files in, ``LoadedModel`` out (and back to safetensors).

Split into small modules: :mod:`.meta` (metadata), :mod:`.arch` (architecture specs),
:mod:`.state` (state dicts and fingerprints), :mod:`.loading` (file formats), :mod:`.layers`
(per-layer description).  Import everything from here.
"""

from __future__ import annotations

from uncert_cli.checkpoint.arch import build_module, parse_arch_kwargs
from uncert_cli.checkpoint.layers import LayerInfo, describe_layers
from uncert_cli.checkpoint.loading import LoadedModel, load_model, save_model
from uncert_cli.checkpoint.meta import ModelMeta
from uncert_cli.checkpoint.state import weights_fingerprint

__all__ = [
    "LayerInfo",
    "LoadedModel",
    "ModelMeta",
    "build_module",
    "describe_layers",
    "load_model",
    "parse_arch_kwargs",
    "save_model",
    "weights_fingerprint",
]

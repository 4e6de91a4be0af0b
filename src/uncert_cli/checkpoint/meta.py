"""What uncert knows about a model besides its weights, and how it rides in a safetensors header."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from uncert_cli.checkpoint.outputs import check_output_choice
from uncert_cli.core.errors import UserError
from uncert_cli.core.vocabulary import Task

__all__ = ["ModelMeta", "HEADER_KEY", "TASKS"]

#: The safetensors metadata key that holds uncert's JSON.  Other tools' keys (e.g. HF's
#: ``format: pt``) are left alone and ignored.
HEADER_KEY = "uncert"
#: Bumped when the JSON layout changes incompatibly; readers of older files can then convert.
_FORMAT_VERSION = 1
TASKS = Task.choices()
#: Fields added after format version 1: absent from a header means None (older files open unchanged).
_OPTIONAL_KEYS = ("convert_channels", "convert_size", "output")


def _float_tuple(value: Any, what: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return (float(value),)
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"model metadata: {what} must be a list of numbers, got {value!r}") from None


def _int_tuple(value: Any, what: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, int):
        value = (value,)
    try:
        shape = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise UserError(f"{what} must be a list of positive integers such as 1,28,28, got {value!r}")
    return shape


def _check_normalization(means: tuple[float, ...] | None, stds: tuple[float, ...] | None) -> None:
    # A recorded normalisation that no input survives (std 0, NaN) is a damaged record, refused where it is
    # read, not at the first batch, where it read as the user's --normalize.
    if means is not None and not all(math.isfinite(m) for m in means):
        raise UserError(f"model metadata: normalize_mean must be finite numbers, got {list(means)[:8]}; "
                        "re-save the model with the normalisation it was trained with")
    if stds is not None and not all(math.isfinite(s) and s > 0 for s in stds):
        raise UserError(f"model metadata: normalize_std must be finite numbers > 0, got {list(stds)[:8]}; "
                        "re-save the model with the normalisation it was trained with")


def check_task(task: str) -> str:
    """Return ``task`` if it is one uncert knows, else raise :class:`UserError`."""
    return Task.parse(task, "task").value


@dataclass
class ModelMeta:
    """Everything needed to rebuild and correctly feed a model, stored next to its weights.

    ``arch`` is an architecture spec understood by :func:`uncert_cli.checkpoint.build_module`
    (``"uncert_cli.models:MLP"``, ``"torchvision:resnet18"``, ``"path/to/file.py:Class"``).
    ``extra`` must be JSON serialisable; tuples inside it come back as lists.
    """

    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    normalize_mean: tuple[float, ...] | None = None
    normalize_std: tuple[float, ...] | None = None
    task: str = "classification"
    num_outputs: int | None = None
    dataset: str | None = None
    noise_std: float | None = None
    # The image conversion fed to the model (``data.transform.convert_images``, as the fit did it): channels
    # (1 or 3) and (H, W) the stored data is converted to before normalisation; None: as stored.
    convert_channels: int | None = None
    convert_size: tuple[int, ...] | None = None
    # Which part of a forward result that is not a tensor is the prediction (``load_model(output=...)``): a
    # name (dict key, dataclass or namedtuple field) or an index; None: a tensor, or the automatic rule.
    output: str | int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Normalise sequences to tuples so that metadata compares equal after a JSON round trip.
        self.input_shape = _int_tuple(self.input_shape, "input_shape")
        self.normalize_mean = _float_tuple(self.normalize_mean, "normalize_mean")
        self.normalize_std = _float_tuple(self.normalize_std, "normalize_std")
        _check_normalization(self.normalize_mean, self.normalize_std)
        self.convert_size = _int_tuple(self.convert_size, "model metadata: convert_size")
        if self.convert_size is not None and len(self.convert_size) != 2:
            raise UserError(f"model metadata: convert_size must be two positive integers H,W, got {list(self.convert_size)}")
        self.output = check_output_choice(self.output)
        if self.convert_channels is not None and (type(self.convert_channels) is not int or self.convert_channels not in (1, 3)):
            raise UserError(f"model metadata: convert_channels must be 1 or 3, got {self.convert_channels!r}")

    def to_header(self) -> dict[str, str]:
        """The safetensors metadata dict (str -> str): one key, :data:`HEADER_KEY`, holding JSON."""
        payload = asdict(self)
        # Written only when set: a file without a conversion keeps the layout older versions wrote.
        for key in _OPTIONAL_KEYS:
            if payload[key] is None:
                del payload[key]
        payload["format_version"] = _FORMAT_VERSION
        try:
            text = json.dumps(payload, sort_keys=True)
        except TypeError as exc:
            # A programming error (non-JSON value in arch_kwargs/extra), not a user mistake.
            raise TypeError(f"ModelMeta is not JSON serialisable: {exc}") from exc
        return {HEADER_KEY: text}

    @classmethod
    def from_header(cls, header: dict[str, str] | None) -> ModelMeta:
        """Parse what :meth:`to_header` wrote; a header without uncert's key gives defaults.

        Keys this version does not know (written by a newer uncert) are kept in ``extra``
        rather than dropped or treated as errors.
        """
        if not header or HEADER_KEY not in header:
            return cls()
        try:
            payload = json.loads(header[HEADER_KEY])
        except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
            raise UserError(
                f"the model metadata (key {HEADER_KEY!r}) is not valid JSON ({exc}); "
                "re-save the model or pass {param} and {arch_kwargs} explicitly",
                param="arch", mentions=("arch_kwargs",),
            ) from None
        if not isinstance(payload, dict):
            raise UserError(f"the model metadata (key {HEADER_KEY!r}) is not a JSON object")
        return cls.from_dict(payload)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> ModelMeta:
        """Build from a plain dict (JSON object), tolerating unknown keys (see :meth:`from_header`)."""
        payload = dict(payload)
        payload.pop("format_version", None)
        known = {f.name for f in fields(cls)}
        unknown = {k: payload.pop(k) for k in list(payload) if k not in known}
        extra = payload.get("extra") or {}
        if not isinstance(extra, dict):
            extra = {"extra": extra}
        payload["extra"] = {**unknown, **extra}
        if payload.get("arch") is not None and not isinstance(payload["arch"], str):
            raise UserError("model metadata: arch must be a string")
        if not isinstance(payload.get("arch_kwargs") or {}, dict):
            raise UserError("model metadata: arch_kwargs must be a JSON object")
        payload["arch_kwargs"] = payload.get("arch_kwargs") or {}
        meta = cls(**payload)
        check_task(meta.task)
        return meta

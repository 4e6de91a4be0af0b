"""Bringing images to another channel count and size: what ``--grayscale``, ``--channels`` and ``--resize H,W`` do.

Images are ``(N, C, H, W)`` and stored as uint8 (pixel/255) or float32 (see :mod:`.dataset`). The
conversion computes in float32 on the *stored* values, a chunk of examples at a time, and gives back
the stored dtype: uint8 is rounded and clamped to 0..255, so :func:`~uncert_cli.data.adapt_to_model`
and the normalisation after it see the same value range as for any other uint8 set.

* Channels 3 → 1: ITU-R BT.601 luma, ``0.299 R + 0.587 G + 0.114 B``.
* Channels 1 → 3: the one channel repeated.
* Size: bilinear interpolation with antialiasing (``align_corners=False``): downsampling averages
  over the covered input pixels, so a constant image stays constant and 2×2 → 1×1 is the mean.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from uncert_cli.core.errors import UserError
from uncert_cli.data.dataset import ArrayDataset

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, for R, G, B
CHUNK_ELEMENTS = 1 << 22  # float32 values per chunk and stage (16 MiB): memory stays bounded for any N
_TARGET_CHANNELS = (1, 3)
# Larger than any image a classifier takes; 100000×100000 (issue 19) would need 40 GB per image.
MAX_SIDE = 4096


@dataclass(frozen=True)
class ImageConversion:
    """What :func:`convert_images` is asked to do: ``channels`` (1 or 3) and ``size`` ``(H, W)``; None keeps it.

    ``fit`` records the conversion it applied next to the model's metadata; later commands replay it on
    their in-distribution data, each field replaced by the one given on their command line
    (:meth:`overridden_by`). Converting images that already have the asked channels and size changes
    nothing, so replaying a conversion on data that needs none is harmless.
    """

    channels: int | None = None
    size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.channels is not None and self.channels not in _TARGET_CHANNELS:
            raise UserError(
                f"images can be converted to 1 or 3 channels, not {self.channels}; ask for {{param}} 1 (gray) or 3 (RGB)",
                param="channels",
            )
        if self.size is not None:
            object.__setattr__(self, "size", _check_size(tuple(self.size)))

    @property
    def is_identity(self) -> bool:
        return self.channels is None and self.size is None

    def overridden_by(self, other: ImageConversion) -> ImageConversion:
        """This conversion with each field that ``other`` sets taken from ``other``."""
        return ImageConversion(
            channels=other.channels if other.channels is not None else self.channels,
            size=other.size if other.size is not None else self.size,
        )

    def apply(self, ds: ArrayDataset) -> ArrayDataset:
        """:func:`convert_images` with these settings (``ds`` itself when there is nothing to do)."""
        return convert_images(ds, channels=self.channels, size=self.size)

    def describe(self) -> str:
        """``"3 channels, 32×32"``, for messages and ``uncert info``; ``"none"`` for the identity."""
        parts = ([f"{self.channels} channel{'s' if self.channels != 1 else ''}"] if self.channels else []) + (
            [f"{self.size[0]}×{self.size[1]}"] if self.size else [])
        return ", ".join(parts) or "none"

    def to_dict(self) -> dict[str, object] | None:
        """``{"channels": 3, "size": [32, 32]}`` for JSON documents; None for the identity."""
        if self.is_identity:
            return None
        return {"channels": self.channels, "size": list(self.size) if self.size else None}


def parse_size(text: str | None, param: str = "resize") -> tuple[int, int] | None:
    """``"28,28"`` → ``(28, 28)`` (height, width); None → None. UserError unless two positive integers.

    ``param``: the parameter the text came from, named in the messages (the CLI shows its flag).
    """
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    try:
        size = tuple(int(part) for part in parts)
    except ValueError:
        size = ()
    if len(size) != 2:
        raise UserError(f"{{param}} takes H,W (two integers), got '{text}'; e.g. {{param}} 28,28", param=param)
    return _check_size(size, param)


def _check_size(size: tuple[int, ...], param: str = "resize") -> tuple[int, int]:
    """``size`` as ``(H, W)`` if both are integers in 1..MAX_SIDE, else a UserError."""
    if len(size) != 2 or any(int(d) != d or d < 1 for d in size):
        shown = ",".join(str(d) for d in size)
        raise UserError(f"{{param}} needs two positive sizes H,W, got {shown}; e.g. {{param}} 28,28", param=param)
    if max(size) > MAX_SIDE:
        shown = ",".join(str(d) for d in size)
        raise UserError(f"{{param}} {shown} is too large: at most {MAX_SIDE} pixels per side; e.g. {{param}} 28,28",
                        param=param)
    return int(size[0]), int(size[1])


def _check_images(ds: ArrayDataset, channels: int | None) -> tuple[int, int, int, int]:
    """``(N, C, H, W)`` of ``ds.inputs``; UserError unless 4-D images convertible to ``channels``."""
    if ds.inputs.ndim != 4:
        raise UserError(
            f"dataset '{ds.name}' has examples of shape {tuple(ds.sample_shape)}, not images (C, H, W); "
            "{resize}, {grayscale} and {channels} only apply to image data, so drop them for this set",
            mentions=("resize", "grayscale", "channels"),
        )
    n, c, h, w = (int(d) for d in ds.inputs.shape)
    if channels is not None:
        if channels not in _TARGET_CHANNELS:
            raise UserError(f"images can be converted to 1 or 3 channels, not {channels}; ask for 1 (gray) or 3 (RGB)")
        if c not in _TARGET_CHANNELS:
            raise UserError(
                f"dataset '{ds.name}' has images with {c} channels; {{grayscale}} and {{channels}} convert only RGB (3) "
                "or gray (1) images, so store them with 1 or 3 channels",
                mentions=("grayscale", "channels"),
            )
    return n, c, h, w


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Float ``(B, C, H, W)`` with C in {1, 3} → ``(B, channels, H, W)``: luma for 3 → 1, repeat for 1 → 3."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 3 and channels == 1:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype).reshape(1, 3, 1, 1)
        return (images * weights).sum(dim=1, keepdim=True)
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    raise ValueError(f"cannot convert {have} channels to {channels}")  # _check_images rules this out


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Float ``(B, C, H, W)`` → ``(B, C, *size)`` by antialiased bilinear interpolation (unchanged if same size)."""
    if tuple(images.shape[2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def _to_stored_dtype(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Float values back in ``dtype``: uint8 rounded and clamped to 0..255, float32 as computed."""
    if dtype == torch.uint8:
        return images.round().clamp_(0, 255).to(torch.uint8)
    return images.to(dtype)


def _chunk_rows(per_example: int) -> int:
    """Examples per chunk so that one stage holds at most :data:`CHUNK_ELEMENTS` float values."""
    return max(1, CHUNK_ELEMENTS // max(1, per_example))


def convert_images(
    ds: ArrayDataset, *, channels: int | None = None, size: tuple[int, int] | None = None
) -> ArrayDataset:
    """Return ``ds`` with its images ``(N, C, H, W)`` turned into ``(N, channels, *size)``, same dtype.

    Args:
        ds: an image dataset, inputs ``(N, C, H, W)`` uint8 or float32.
        channels: 1 (gray: luma of RGB, gray kept) or 3 (RGB: gray repeated, RGB kept); None keeps C.
        size: ``(H, W)`` to resize to; None keeps the size.

    Raises:
        UserError: inputs not 4-D, a non-positive size, or ``channels`` given for images whose C is
            neither 1 nor 3.

    Returns ``ds`` itself when nothing changes; otherwise a new dataset with fresh inputs and the same
    targets, name and classes. Work happens in chunks of examples (see :data:`CHUNK_ELEMENTS`).
    """
    if channels is None and size is None:
        return ds
    n, c, h, w = _check_images(ds, channels)
    out_c = c if channels is None else channels
    out_h, out_w = (h, w) if size is None else _check_size(tuple(size))
    if (out_c, out_h, out_w) == (c, h, w):
        return ds
    out = torch.empty((n, out_c, out_h, out_w), dtype=ds.inputs.dtype)
    rows = _chunk_rows(max(c * h * w, out_c * out_h * out_w, c * out_h * out_w))
    for start in range(0, n, rows):
        chunk = ds.inputs[start:start + rows].to(torch.float32)
        if out_c <= c:  # fewer channels first: less to resize
            chunk = resize_images(to_channels(chunk, out_c), (out_h, out_w))
        else:
            chunk = to_channels(resize_images(chunk, (out_h, out_w)), out_c)
        out[start:start + rows] = _to_stored_dtype(chunk, out.dtype)
    return replace(ds, inputs=out)

"""A folder of images with one subfolder per class (sorted subfolder names = class order)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from uncert_cli.core.errors import UserError
from uncert_cli.data.arrays import dataset_from_arrays
from uncert_cli.data.dataset import ArrayDataset

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
# PIL modes that carry no colour; everything else is converted to RGB.
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def _class_folders(folder: Path) -> list[Path]:
    # Hidden folders (.git, .ipynb_checkpoints) are never classes.
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _decode(path: Path) -> np.ndarray:
    """One image as uint8 ``(H, W)`` (grayscale) or ``(H, W, 3)`` (colour)."""
    from PIL import Image  # Pillow comes with torchvision; imported lazily as only folders need it

    try:
        with Image.open(path) as image:
            image.load()
            gray = image.mode in _GRAY_MODES
            return np.asarray(image.convert("L" if gray else "RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as err:  # a tiny file declaring billions of pixels: not an OSError
        raise ValueError(f"too many pixels to decode safely: {err}") from None


def load_image_folder(folder: Path, name: str, *, limit: int | None = None, skip_unreadable: bool = False) -> ArrayDataset:
    """Load ``folder/<class>/<image>`` into uint8 ``(N, C, H, W)`` images (C=1 if all are grayscale, else 3).

    Examples are ordered by class, then by file name. ``limit`` stops after that many images (in that
    order). Unreadable images are a UserError unless ``skip_unreadable`` (then they are skipped with a warning).
    """
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give an image folder with one subfolder per class")
    class_dirs = _class_folders(folder)
    if not class_dirs:
        raise UserError(f"image folder {folder} has no class subfolders; put the images in {folder}/<class name>/")

    images: list[np.ndarray] = []
    labels: list[int] = []
    sources: list[Path] = []
    skipped: list[str] = []
    for label, class_dir in enumerate(class_dirs):
        for path in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            if limit is not None and len(images) >= limit:
                break
            try:
                images.append(_decode(path))
            except (OSError, ValueError, SyntaxError) as err:  # PIL raises all three for broken files
                if not skip_unreadable:
                    raise UserError(f"cannot read image {path} ({err}); remove or replace that file") from err
                skipped.append(path.name)
                continue
            labels.append(label)
            sources.append(path)
    if skipped:
        warnings.warn(f"{name}: skipped {len(skipped)} unreadable image(s): {', '.join(skipped[:5])}", stacklevel=2)
    if not images:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise UserError(
            f"image folder {folder} holds no images ({suffixes}) in its class subfolders; add images or check the path"
        )

    first_size = images[0].shape[:2]
    for image, path in zip(images, sources):
        if image.shape[:2] != first_size:
            raise UserError(
                f"images in {folder} differ in size ({first_size[1]}x{first_size[0]} in {sources[0].relative_to(folder)}, "
                f"{image.shape[1]}x{image.shape[0]} in {path.relative_to(folder)}); resize them all to one size first"
            )
    if any(image.ndim == 3 for image in images):
        # Mixed folder: give grayscale images three identical channels so every example is RGB.
        images = [image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2) for image in images]
    stacked = np.stack(images)  # (N, H, W) or (N, H, W, 3)
    if stacked.ndim == 4:
        stacked = stacked.transpose(0, 3, 1, 2)  # explicit, so tiny images never hit the layout guess
    return dataset_from_arrays(name, stacked, np.asarray(labels, dtype=np.int64), class_names=[d.name for d in class_dirs])

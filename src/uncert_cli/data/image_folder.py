"""A folder of images with one subfolder per class (sorted subfolder names = class order).

Only regular files inside the folder are read. A named pipe, socket or device with an image's name would
block or never end if opened, so it is refused from ``stat`` alone (and every image is opened without
blocking and checked again before it is read); a symbolic link is followed only where it leads to a place
inside the folder, as uncert never opens files the user did not name (the same rule refuses HDF5's external
links). Such an entry is an error naming it, like an unreadable image, or, where unreadable images are
skipped (the built-in notMNIST), skipped and counted in the warning.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np

from uncert_cli.core.errors import UserError
from uncert_cli.core.input_files import file_kind
from uncert_cli.data.arrays import dataset_from_arrays
from uncert_cli.data.dataset import ArrayDataset

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
# PIL modes that carry no colour; everything else is converted to RGB.
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


class _NotAnImageFile(Exception):
    """An image entry that is not a regular file inside the folder; the message says what it is instead."""


def _real_path_inside(path: Path, folder: Path) -> Path:
    """Where ``path`` leads (links followed); ``_NotAnImageFile`` when that is outside ``folder`` (a real path)."""
    real = Path(os.path.realpath(path))
    if real != folder and folder not in real.parents:
        raise _NotAnImageFile(f"is a symbolic link to {real}, outside the image folder; uncert reads only files "
                              "inside the folder it is given: copy the file in (or give the folder it lies in)")
    return real


def _class_folders(folder: Path) -> list[Path]:
    """The class subfolders of ``folder`` (a real path), sorted by name; a link to a folder outside is refused."""
    classes = []
    for entry in folder.iterdir():
        # Hidden folders (.git, .ipynb_checkpoints) are never classes; is_dir() only stats, never opens.
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            _real_path_inside(entry, folder)
        except _NotAnImageFile as refusal:
            raise UserError(f"class folder {entry} {refusal}") from None
        classes.append(entry)
    return sorted(classes, key=lambda p: p.name)


def _image_file(path: Path, folder: Path) -> Path:
    """The real path of the image entry ``path``, checked by ``stat`` alone to be a regular file inside ``folder``."""
    real = _real_path_inside(path, folder) if path.is_symlink() else path
    try:
        mode = os.stat(real).st_mode
    except OSError as err:
        raise _NotAnImageFile(f"cannot be read ({err.strerror}); remove or replace that entry") from None
    if not stat.S_ISREG(mode):
        raise _NotAnImageFile(f"is {file_kind(mode)}, not an image file; remove it from the folder")
    return real


def _decode(path: Path) -> np.ndarray:
    """One image as uint8 ``(H, W)`` (grayscale) or ``(H, W, 3)`` (colour), from the regular file ``path``."""
    from PIL import Image  # Pillow comes with torchvision; imported lazily as only folders need it

    # Opened without blocking and checked again, so that a pipe put in the file's place since its stat
    # cannot hang the command.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise _NotAnImageFile(f"is {file_kind(mode)}, not an image file; remove it from the folder")
        try:
            with Image.open(handle) as image:
                image.load()
                gray = image.mode in _GRAY_MODES
                return np.asarray(image.convert("L" if gray else "RGB"), dtype=np.uint8)
        except Image.DecompressionBombError as err:  # a tiny file declaring billions of pixels: not an OSError
            raise ValueError(f"too many pixels to decode safely: {err}") from None


def load_image_folder(folder: Path, name: str, *, limit: int | None = None, skip_unreadable: bool = False) -> ArrayDataset:
    """Load ``folder/<class>/<image>`` into uint8 ``(N, C, H, W)`` images (C=1 if all are grayscale, else 3).

    Examples are ordered by class, then by file name. ``limit`` stops after that many images (in that
    order). Unreadable images, and image entries that are not regular files inside ``folder`` (pipes, devices,
    links out of the folder: see the module's docstring), are a UserError naming the entry unless
    ``skip_unreadable`` (then they are skipped and counted in a warning).
    """
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give an image folder with one subfolder per class")
    folder = Path(os.path.realpath(folder))  # the folder the user named, wherever a link to it leads
    class_dirs = _class_folders(folder)
    if not class_dirs:
        raise UserError(f"image folder {folder} has no class subfolders; put the images in {folder}/<class name>/")

    images: list[np.ndarray] = []
    labels: list[int] = []
    sources: list[Path] = []
    skipped: list[str] = []
    for label, class_dir in enumerate(class_dirs):
        for path in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            if limit is not None and len(images) >= limit:
                break
            try:
                images.append(_decode(_image_file(path, folder)))
            except _NotAnImageFile as refusal:
                if not skip_unreadable:
                    raise UserError(f"image folder entry {path} {refusal}") from None
                skipped.append(path.name)
                continue
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

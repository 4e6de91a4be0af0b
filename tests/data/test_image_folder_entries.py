"""Image folders read only regular files inside them: pipes, devices and links out of the folder are named.

A named pipe with an image's name would block the command if opened, so it is refused from ``stat``
alone; a symbolic link is followed only inside the folder. Through the real CLI (``fit --data FOLDER``)
and through the library (``load_dataset``), on real PNG files.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from uncert_cli.data import load_dataset
from uncert_cli.data.image_folder import load_image_folder
from uncert_cli.errors import UserError


def _image_folder(root: Path) -> Path:
    """``root/digits8/{zero,one}/`` with three 8×8 gray PNGs each (pixel values differ per image)."""
    from PIL import Image

    folder = root / "digits8"
    for label, name in enumerate(("zero", "one")):
        (folder / name).mkdir(parents=True)
        for index in range(3):
            pixels = np.full((8, 8), 40 * label + 10 * index, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{index}.png")
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _image_folder(tmp_path)


def _one_line(run) -> str:
    assert run.code == 2 and run.out == "" and "Traceback" not in run.err, run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uncert: error:"), run.err
    return lines[0]


def test_a_fifo_named_like_an_image_is_refused_without_opening_it(run_cli, folder, digits_checkpoint, tmp_path):
    fifo = folder / "one" / "3.png"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: the command must not
    out = tmp_path / "f.h5"
    line = _one_line(run_cli("fit", digits_checkpoint, "--data", folder, "--method", "diag", "-o", out))
    assert f"image folder entry {fifo} is a named pipe (FIFO), not an image file" in line
    assert not out.exists()
    # A link (inside the folder) to the pipe is the pipe.
    fifo.rename(folder / "pipe")
    (folder / "one" / "3.png").symlink_to(folder / "pipe")
    with pytest.raises(UserError, match="is a named pipe"):
        load_dataset(str(folder))


def test_where_unreadable_images_are_skipped_a_fifo_is_skipped_and_counted(folder):
    os.mkfifo(folder / "zero" / "9.png")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\): 9.png"):
        ds = load_image_folder(folder, "digits8", skip_unreadable=True)
    assert len(ds) == 6 and ds.targets.tolist() == [0, 0, 0, 1, 1, 1]


def test_a_link_out_of_the_folder_is_refused_by_name(run_cli, folder, digits_checkpoint, tmp_path):
    outside = _image_folder(tmp_path / "elsewhere") / "zero" / "0.png"
    link = folder / "one" / "3.png"
    link.symlink_to(outside)
    out = tmp_path / "f.h5"
    line = _one_line(run_cli("fit", digits_checkpoint, "--data", folder, "--method", "diag", "-o", out))
    assert f"image folder entry {link} is a symbolic link to {outside.resolve()}, outside the image folder" in line
    assert "copy the file in" in line and not out.exists()
    # A class folder that is a link out of the folder is refused the same way.
    link.unlink()
    (folder / "two").symlink_to(outside.parent, target_is_directory=True)
    with pytest.raises(UserError, match=f"class folder {folder / 'two'} is a symbolic link to .*outside"):
        load_dataset(str(folder))


def test_links_inside_the_folder_are_followed(run_cli, folder, digits_checkpoint, tmp_path):
    (folder / "one" / "3.png").symlink_to(folder / "zero" / "0.png")  # the same picture, labelled "one" too
    linked_folder = tmp_path / "named_by_a_link"
    linked_folder.symlink_to(folder, target_is_directory=True)  # the folder itself may be named through a link
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset(str(linked_folder))
    assert len(ds) == 7 and ds.targets.tolist() == [0, 0, 0, 0, 1, 1, 1]  # classes sorted: one (0), zero (1)
    assert np.array_equal(ds.inputs[3].numpy(), ds.inputs[4].numpy())
    out = tmp_path / "f.h5"
    r = run_cli("fit", digits_checkpoint, "--data", linked_folder, "--method", "diag", "-o", out, "--quiet")
    assert r.code == 0, r.err
    assert out.exists()

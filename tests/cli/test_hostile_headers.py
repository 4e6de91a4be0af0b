"""Files whose headers are hostile or absurd: one line each, exit code 2, nothing written.

Found as a stranger: JSON metadata nested 100,000 deep (Python's parser raises RecursionError, which was
an internal error, exit 1), a checkpoint recording a normalisation with std 0 (blamed on ``--normalize``,
which the user never gave) and a PNG of a few bytes declaring 400 million pixels (Pillow's
DecompressionBombError, an internal error).
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib

import h5py
import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

DEEP = "[" * 100_000 + "]" * 100_000


def _one_line_refusal(run, *args: str) -> str:
    code, out, err = run(*args)
    assert code == 2, err
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def _with_metadata(source, target, text: str) -> None:
    save_file(load_file(source), target, metadata={"uncert": text})


def _meta(source) -> dict:
    with safe_open(source, "pt") as f:
        return json.loads(f.metadata()["uncert"])


def test_metadata_nested_thousands_deep_is_refused(run_cli, digits_checkpoint, tmp_path):
    forged = tmp_path / "deep.safetensors"
    _with_metadata(digits_checkpoint, forged, DEEP)
    for command in (["info", forged], ["fit", forged, "--data", "digits", "-o", tmp_path / "f.h5"]):
        assert "is not valid JSON" in _one_line_refusal(run_cli, *command)
    assert not (tmp_path / "f.h5").exists()


def test_a_factor_file_attribute_nested_thousands_deep_is_refused(run_cli, digits_checkpoint, tmp_path):
    factors = tmp_path / "f.h5"
    assert run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "64", "--method", "diag", "-o", factors,
                   "--quiet").code == 0
    forged = tmp_path / "forged.h5"
    shutil.copy(factors, forged)
    with h5py.File(forged, "r+") as f:
        f["model"].attrs["meta"] = DEEP
    assert "attribute 'meta' is not JSON" in _one_line_refusal(run_cli, "report", forged, "--json")


@pytest.mark.parametrize(("field", "values", "says"), [
    ("normalize_std", [0.0], "normalize_std must be finite numbers > 0"),
    ("normalize_mean", [float("nan")], "normalize_mean must be finite numbers"),
])
def test_a_recorded_normalisation_no_input_survives_is_the_files_fault(run_cli, digits_checkpoint, tmp_path, field,
                                                                       values, says):
    meta = _meta(digits_checkpoint)
    meta.update(normalize_mean=[0.0], normalize_std=[1.0])
    meta[field] = values
    forged = tmp_path / "norm.safetensors"
    _with_metadata(digits_checkpoint, forged, json.dumps(meta))
    err = _one_line_refusal(run_cli, "fit", forged, "--data", "digits", "--limit", "8", "-o", tmp_path / "f.h5")
    assert says in err and "model metadata" in err and "--normalize" not in err, err
    assert not (tmp_path / "f.h5").exists()


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG of a few dozen bytes whose header declares ``width`` × ``height`` one-bit pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))


def test_an_image_declaring_hundreds_of_millions_of_pixels_is_refused(run_cli, digits_checkpoint, tmp_path):
    for label in ("a", "b"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / "imgs" / label / "0.png")
    _png_header_only(tmp_path / "imgs" / "a" / "1.png", 20_000, 20_000)
    err = _one_line_refusal(run_cli, "fit", digits_checkpoint, "--data", tmp_path / "imgs", "-o", tmp_path / "f.h5")
    assert "imgs/a/1.png" in err and "too many pixels" in err, err
    assert not (tmp_path / "f.h5").exists()

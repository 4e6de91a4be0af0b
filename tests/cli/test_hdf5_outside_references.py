"""HDF5 inputs that reach into other files are refused before anything is read from them.

An external link, a dataset with external storage and a virtual dataset each make h5py open a file the
user never named (``/etc/passwd`` read as weights, ``/dev/zero`` that never ends, a named pipe that
blocks forever). Each forged file here points at a file holding exactly the bytes the real one held,
so without the check every command would succeed on it (the weights even match the fingerprint):
the refusal can only come from the check itself.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

WEIGHT = "model/state_dict/fc1.bias"  # a (16,) float32 weight of the small digits MLP

Forgery = Callable[[h5py.File, str, Path], None]


def _external_storage(f: h5py.File, name: str, folder: Path) -> None:
    data = f[name][()]
    raw = folder / "raw.bin"
    data.tofile(raw)
    del f[name]
    f.create_dataset(name, shape=data.shape, dtype=data.dtype, external=[(str(raw), 0, data.nbytes)])


def _external_link(f: h5py.File, name: str, folder: Path) -> None:
    data = f[name][()]
    with h5py.File(folder / "other.h5", "w") as other:
        other["d"] = data
    del f[name]
    f[name] = h5py.ExternalLink(str(folder / "other.h5"), "d")


def _virtual(f: h5py.File, name: str, folder: Path) -> None:
    data = f[name][()]
    with h5py.File(folder / "other.h5", "w") as other:
        other["d"] = data
    del f[name]
    layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
    layout[:] = h5py.VirtualSource(str(folder / "other.h5"), "d", shape=data.shape)
    f.create_virtual_dataset(name, layout)


FORGERIES: dict[str, tuple[Forgery, str]] = {
    "external storage": (_external_storage, "keeps its data in another file"),
    "external link": (_external_link, "is a link to 'd' in another file"),
    "virtual dataset": (_virtual, "is a virtual dataset"),
}


@pytest.fixture(scope="module")
def factor_file(digits_diag_factors) -> Path:
    return digits_diag_factors


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_factor_file_reaching_into_another_file_is_refused(run_cli, factor_file, tmp_path, forgery):
    forge, says = FORGERIES[forgery]
    forged = tmp_path / "forged.h5"
    shutil.copy(factor_file, forged)
    with h5py.File(forged, "r+") as f:
        forge(f, WEIGHT, tmp_path)
    assert run_cli("report", factor_file, "--json").code == 0  # the real one opens
    for command in (["report", forged, "--json"], ["info", forged],
                    ["prune", forged, "--fraction", "0.5", "-o", tmp_path / "p.safetensors"]):
        code, out, err = run_cli(*command)
        assert code == 2, err
        assert out == "" and len(err.strip().splitlines()) == 1, err
        assert f"'/{WEIGHT}' {says}" in err and "refit it" in err, err
    assert not (tmp_path / "p.safetensors").exists()


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_data_file_reaching_into_another_file_is_refused(run_cli, digits_checkpoint, tmp_path, forgery):
    forge, says = FORGERIES[forgery]
    rng = np.random.default_rng(0)
    data = tmp_path / "data.h5"
    with h5py.File(data, "w") as f:
        f["images"] = rng.random((64, 1, 8, 8), dtype=np.float32)
        f["labels"] = rng.integers(0, 10, 64)
    fit = ["fit", digits_checkpoint, "--data", f"{data}:images,labels", "--method", "diag", "-o", tmp_path / "f.h5"]
    assert run_cli(*fit, "--quiet").code == 0  # the real one fits
    (tmp_path / "f.h5").unlink()
    with h5py.File(data, "r+") as f:
        forge(f, "images", tmp_path)
    code, _, err = run_cli(*fit)
    assert code == 2, err
    assert f"reaches outside itself: '/images' {says}" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "f.h5").exists()


def test_soft_links_inside_the_file_still_open(run_cli, factor_file, tmp_path):
    # A soft link names a path in the same file: nothing outside is read, so it is not refused.
    linked = tmp_path / "linked.h5"
    shutil.copy(factor_file, linked)
    with h5py.File(linked, "r+") as f:
        f.move(WEIGHT, "kept")
        f[WEIGHT] = h5py.SoftLink("/kept")
    assert run_cli("report", linked, "--json").code == 0

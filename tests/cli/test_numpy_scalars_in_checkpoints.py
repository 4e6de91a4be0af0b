"""A checkpoint holding NumPy scalars beside its state dict loads without --trust-pickle.

Found as a stranger: ``torch.save({"state_dict": ..., "epoch": np.int64(3), "best_acc": np.float64(.97)})``,
as many training scripts write, was refused as "a Python pickle" and needed ``--trust-pickle`` (full
unpickling). Only NumPy's scalar constructor and numeric dtypes are allowed; anything else still is refused.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np
import torch

from uncert_cli.models import MLP

ARCH = ["--arch", "uncert_cli.models:MLP", "--arch-kwargs", "in_features=64", "--arch-kwargs", "hidden=[16]",
        "--arch-kwargs", "out_features=10"]


def _checkpoint(path, **extra) -> None:
    torch.manual_seed(0)
    torch.save({"state_dict": MLP(in_features=64, hidden=[16], out_features=10).state_dict(), **extra}, path)


def _as_numpy_1(path) -> None:
    """Rewrite the pickle's references as NumPy 1 wrote them (``numpy.core``, not ``numpy._core``)."""
    with zipfile.ZipFile(path) as archive:
        members = {info: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in members.items():
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray\nscalar" in data
                data = data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
            archive.writestr(info, data)


def test_numpy_scalars_beside_the_weights_load_as_numbers(run_cli, tmp_path):
    for name, numpy_1 in (("numpy2.ckpt", False), ("numpy1.ckpt", True)):
        ckpt = tmp_path / name
        _checkpoint(ckpt, epoch=np.int64(3), best_acc=np.float64(0.97), lr=np.float32(1e-3), done=np.bool_(True))
        if numpy_1:
            _as_numpy_1(ckpt)
        code, _, err = run_cli("fit", ckpt, *ARCH, "--data", "digits", "--limit", "16", "--method", "diag",
                               "-o", tmp_path / f"{name}.h5", "--quiet")
        assert code == 0, err


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_other_objects_beside_numpy_scalars_are_still_refused(run_cli, tmp_path):
    payload = _Payload()
    payload.marker = tmp_path / "MARKER"
    ckpt = tmp_path / "mixed.ckpt"
    _checkpoint(ckpt, best_acc=np.float64(0.97), evil=payload)
    _checkpoint(tmp_path / "array.ckpt", mean=np.zeros(3))  # arrays are not plain numbers
    for path in (ckpt, tmp_path / "array.ckpt"):
        code, _, err = run_cli("fit", path, *ARCH, "--data", "digits", "-o", tmp_path / "f.h5")
        assert code == 2 and "is a Python pickle" in err and "--trust-pickle" in err, err
    assert not payload.marker.exists() and not (tmp_path / "f.h5").exists()

"""On a CUDA GPU, every command gives what it gives on the CPU (skipped where no GPU is present).

CI has no GPU, so these run only where one is lent (``python -m pytest tests/gpu``). Each case fits or
answers twice through the real CLI, ``--device cpu`` and ``--device cuda``, and compares the results:
the stored curvature dataset by dataset (exact curvature in float64 to ~1e-6; Monte-Carlo curvature,
whose labels are drawn by the device's own generator, by its scale only), and the JSON answers of
``report``, ``ood``, ``attack``, ``prune`` and ``tune`` number by number.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from uncert_cli.checkpoint import ModelMeta, save_model
from uncert_cli.cli.main import main
from uncert_cli.models import MLP, LeNet

# UNCERT_GPU_TEST_DEVICE=cpu runs the comparisons CPU against CPU: a check of this file itself, on any machine.
DEVICE = os.environ.get("UNCERT_GPU_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _cli(*args: object) -> None:
    code = main([str(a) for a in args])
    assert code == 0, f"uncert {' '.join(map(str, args))} exited {code}"


def _cli_json(capfd, *args: object) -> dict:
    capfd.readouterr()
    _cli(*args, "--json")
    return json.loads(capfd.readouterr().out)


def _images(folder: Path, name: str, shape: tuple[int, ...], n: int, classes: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path = folder / f"{name}.npz"
    np.savez(path, x=rng.random((n, *shape)).astype("float32"), y=rng.integers(0, classes, n))
    return path


def _datasets(path: Path) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return found


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (checkpoint, data file): a digits MLP, a LeNet on 28×28 and torchvision's resnet18 on 3×32×32."""
    folder = tmp_path_factory.mktemp("gpu")
    torch.manual_seed(0)
    made = {}
    mlp_kwargs = {"in_features": 64, "hidden": [32], "out_features": 10}
    save_model(MLP(**mlp_kwargs), ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=mlp_kwargs, input_shape=(1, 8, 8),
                                            task="classification", num_outputs=10), folder / "mlp.safetensors")
    made["mlp"] = (folder / "mlp.safetensors", _images(folder, "mlp", (1, 8, 8), 128, 10, 1))
    save_model(LeNet(), ModelMeta(arch="uncert_cli.models:LeNet", arch_kwargs={}, input_shape=(1, 28, 28),
                                  task="classification", num_outputs=10), folder / "lenet.safetensors")
    made["lenet"] = (folder / "lenet.safetensors", _images(folder, "lenet", (1, 28, 28), 96, 10, 2))
    import torchvision

    resnet = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    save_model(resnet, ModelMeta(arch="torchvision:resnet18", arch_kwargs={"num_classes": 10}, input_shape=(3, 32, 32),
                                 task="classification", num_outputs=10), folder / "resnet18.safetensors")
    made["resnet18"] = (folder / "resnet18.safetensors", _images(folder, "resnet18", (3, 32, 32), 32, 10, 3))
    return made


FITS = [
    ("mlp", "diag", "exact"), ("mlp", "diag", "mc"), ("mlp", "kfac", "exact"), ("mlp", "kfac", "mc"),
    ("mlp", "kfac", "empirical"), ("mlp", "full", "exact"), ("mlp", "ekfac", "exact"), ("mlp", "lowrank", "exact"),
    ("mlp", "kfac-diag", "exact"), ("lenet", "diag", "exact"), ("lenet", "kfac", "exact"), ("lenet", "kfac", "mc"),
    ("lenet", "ekfac", "exact"), ("resnet18", "diag", "exact"), ("resnet18", "kfac", "exact"),
    ("resnet18", "kfac", "empirical"), ("mlp", "vi", "exact"),
]


def _fit(checkpoint: Path, data: Path, out: Path, method: str, fisher: str, device: str) -> Path:
    _cli("fit", checkpoint, "--data", data, "--method", method, "--fisher", fisher, "--dtype", "float64",
         "--device", device, "--batch-size", 32, "--seed", 0, "-o", out, "--quiet")
    return out


@pytest.mark.parametrize(("model", "method", "fisher"), FITS, ids=["-".join(c) for c in FITS])
def test_fit_on_cuda_matches_cpu(checkpoints, tmp_path, model, method, fisher):
    checkpoint, data = checkpoints[model]
    on_cpu = _datasets(_fit(checkpoint, data, tmp_path / "cpu.h5", method, fisher, "cpu"))
    on_gpu = _datasets(_fit(checkpoint, data, tmp_path / "gpu.h5", method, fisher, DEVICE))
    assert on_cpu.keys() == on_gpu.keys()
    for name, cpu in on_cpu.items():
        gpu = on_gpu[name]
        assert cpu.shape == gpu.shape and cpu.dtype == gpu.dtype, name
        if not np.issubdtype(cpu.dtype, np.floating):
            if fisher == "exact":
                np.testing.assert_array_equal(gpu, cpu, err_msg=name)
            continue
        assert np.isfinite(gpu).all(), name
        scale = max(float(np.abs(cpu).max()), 1e-30)
        if fisher == "mc" or method in ("lowrank", "vi"):  # drawn on the device: same size, not the same numbers
            assert float(np.abs(gpu).max()) == pytest.approx(scale, rel=0.5), name
        else:
            np.testing.assert_allclose(gpu, cpu, rtol=1e-6, atol=1e-8 * scale, err_msg=name)


def _close(cpu: object, gpu: object, where: str = "") -> None:
    """JSON documents equal up to float round-off (floats to 1e-4 relative; text and ints exactly)."""
    if isinstance(cpu, dict):
        assert isinstance(gpu, dict) and cpu.keys() == gpu.keys(), where
        for key in cpu:
            if key in {"device", "seconds", "elapsed_seconds", "peak_memory_bytes", "memory"}:
                continue
            _close(cpu[key], gpu[key], f"{where}.{key}")
    elif isinstance(cpu, list):
        assert isinstance(gpu, list) and len(cpu) == len(gpu), where
        for i, (a, b) in enumerate(zip(cpu, gpu)):
            _close(a, b, f"{where}[{i}]")
    elif isinstance(cpu, float) and isinstance(gpu, (int, float)):
        assert gpu == pytest.approx(cpu, rel=1e-4, abs=1e-6), where
    else:
        assert cpu == gpu, where


@pytest.fixture(scope="module")
def lenet_factors(checkpoints, tmp_path_factory) -> Path:
    checkpoint, data = checkpoints["lenet"]
    return _fit(checkpoint, data, tmp_path_factory.mktemp("lenet") / "lenet.h5", "kfac", "exact", "cpu")


ANSWERS = {
    "report": [],
    "ood-probit": ["ood", "--against", "{other}", "--data", "{data}", "--predictive", "probit"],
    "ood-glm": ["ood", "--against", "{other}", "--data", "{data}", "--predictive", "glm", "--samples", 20],
    "ood-mc": ["ood", "--against", "{other}", "--data", "{data}", "--predictive", "mc", "--samples", 5],
    "attack": ["attack", "--data", "{data}", "--steps", 2, "--limit", 32],
    "prune": ["prune", "--fraction", 0.5, "--evaluate", "--data", "{data}"],
    "tune": ["tune", "--data", "{data}", "--val-size", 32],
}


@pytest.mark.parametrize("answer", list(ANSWERS))
def test_answers_on_cuda_match_cpu(capfd, checkpoints, lenet_factors, tmp_path, answer):
    _checkpoint, data = checkpoints["lenet"]
    other = _images(tmp_path, "other", (1, 28, 28), 64, 10, 9)
    args = ANSWERS[answer] or ["report"]
    filled = [str(a).format(data=data, other=other) for a in args]
    command, rest = filled[0], filled[1:]
    # Each run gets a fresh copy (tune writes the prior it chose into the file) at one path (documents name it).
    copy = tmp_path / "factors.h5"
    on_cpu = _cli_json(capfd, command, shutil.copy(lenet_factors, copy), *rest, "--device", "cpu")
    on_gpu = _cli_json(capfd, command, shutil.copy(lenet_factors, copy), *rest, "--device", DEVICE)
    _close(on_cpu, on_gpu, answer)

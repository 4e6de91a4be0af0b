"""Shared pieces of the benchmark scripts: the MNIST MLP, MNIST batches, peak memory of a run."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def data_root() -> str:
    return os.environ.get("UNCERT_DATA", str(REPO.parent / "shared" / "data"))


def mnist_mlp() -> torch.nn.Module:
    """The shipped MNIST MLP (784-1024-1024-10); a same-shaped random one if it is not there."""
    from uncert_cli.checkpoint import load_model
    from uncert_cli.models import MLP

    path = REPO / "sample_models" / "mnist_mlp.safetensors"
    if path.exists():
        return load_model(path).module
    torch.manual_seed(0)
    return MLP(784, [1024, 1024], 10, dropout=0.5).eval()


def cifar_shaped_batches(n: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random 3×32×32 inputs with random labels: timing needs the shapes, not CIFAR itself."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]


def resnet18() -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def all_cnn(num_classes: int = 10) -> torch.nn.Module:
    """All-CNN-C (Springenberg et al. 2015) for 3×32×32 inputs: nine convolutions, no BatchNorm, no
    in-place ReLU, average pooling and a flatten — a graph BackPACK's and curvlinops' conv support
    covers, so every peer runs on it (1.37M parameters)."""
    from torch import nn

    def block(c_in: int, c_out: int, k: int = 3, stride: int = 1, padding: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding), nn.ReLU()]

    torch.manual_seed(0)
    layers = [*block(3, 96), *block(96, 96), *block(96, 96, stride=2), *block(96, 192), *block(192, 192),
              *block(192, 192, stride=2), *block(192, 192, padding=0), *block(192, 192, k=1, padding=0),
              nn.Conv2d(192, num_classes, 1), nn.AvgPool2d(6), nn.Flatten()]
    return nn.Sequential(*layers).eval()


def mnist_batches(n: int, batch_size: int, split: str = "train") -> list[tuple[torch.Tensor, torch.Tensor]]:
    from uncert_cli.data import adapt_to_model, iter_batches, load_dataset

    data = adapt_to_model(load_dataset("mnist", split=split, root=data_root(), limit=n), (1, 28, 28),
                          normalize=([0.1307], [0.3081]), num_outputs=10)
    return list(iter_batches(data, batch_size))


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_isolated(script: Path, name: str, extra: list[str]) -> dict:
    """Run one measurement in a fresh process so that its peak memory is its own."""
    proc = subprocess.run([sys.executable, str(script), "--run", name, *extra], capture_output=True, text=True)
    if proc.returncode in (-9, 137):
        return {"name": name, "error": "killed: out of memory (24 GiB machine)"}
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if "warn" not in line.lower()]
        return {"name": name, "error": (lines or ["failed"])[-1][:160]}
    return json.loads(proc.stdout.strip().splitlines()[-1])

"""How long ``uncert ood``'s default predictive (closed-form probit) takes on resnet18, beside the MAP (issue 16).

    python benchmarks/ood_conv.py [--images 1000] [--rounds 3] [--method kfac] [--cli] [--profile]

A torchvision resnet18(num_classes=10) with its seeded random weights is saved as a checkpoint and fitted by
``uncert fit`` on 64 MNIST digits made CIFAR-shaped (``--channels 3 --resize 32,32``; ``--method kfac``,
exact GGN). Then, in one process and on the same ``--images`` random 3×32×32 inputs in batches of 500
(``ood``'s default), interleaved over ``--rounds``:

* ``map``: the network's forward under ``no_grad`` (what ``--predictive map`` costs);
* ``probit``: ``softmax(f / √(1 + π/8 · diag(J Σ Jᵀ)))``, with ``J Σ Jᵀ`` from the factored output
  covariance (one forward, one batched backward of the C = 10 unit vectors to every layer's outputs, and
  per layer the per-example Jacobian rows rotated into the block's eigenbasis).

Seconds are per 1,000 images (medians over the rounds; wall clock, torch on 2 threads). ``--cli`` also
times ``uncert ood F --no-tune --limit 1000`` with ``--predictive map`` and ``map,probit`` (MNIST in,
FashionMNIST out: 2,000 images each), so the difference is the probit's cost through the real entry
point. ``--profile`` prints where the probit's time goes (torch's profiler, top operators).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root  # noqa: E402

BATCH = 500


def uncert(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "UNCERT_DATA": data_root()}
    out = subprocess.run([sys.executable, "-m", "uncert_cli.cli.main", *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"uncert {' '.join(args)} failed:\n{out.stderr}")
    return out


def fit_resnet18(folder: Path, method: str) -> Path:
    """A random resnet18 checkpoint and its factor file (64 CIFAR-shaped MNIST digits)."""
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    checkpoint = folder / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    factors = folder / f"resnet18.{method}.h5"
    uncert("fit", str(checkpoint), "--arch", "torchvision:resnet18", "--arch-kwargs", "num_classes=10",
           "--data", "mnist", "--channels", "3", "--resize", "32,32", "--limit", "64", "--method", method,
           "-o", str(factors), "-q")
    return factors


def time_per_thousand(run, batches: list[torch.Tensor]) -> float:
    images = sum(len(b) for b in batches)
    start = time.perf_counter()
    for x in batches:
        run(x)
    return (time.perf_counter() - start) * 1000 / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--method", default="kfac", choices=("kfac", "diag"))
    parser.add_argument("--cli", action="store_true", help="also time `uncert ood` through the CLI")
    parser.add_argument("--profile", action="store_true", help="print the probit's top operators")
    args = parser.parse_args()
    torch.set_num_threads(2)

    from uncert_cli.posterior import predictives
    from uncert_cli.storage.opening import open_posterior

    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        factors = fit_resnet18(Path(tmp), args.method)
        fit_seconds = time.perf_counter() - started
        post = open_posterior(factors).posterior
        model = post.model
        g = torch.Generator().manual_seed(0)
        x = torch.randn(args.images, 3, 32, 32, generator=g)
        batches = list(x.split(BATCH))

        def map_forward(xb: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return torch.softmax(model(xb), -1)

        def probit(xb: torch.Tensor) -> torch.Tensor:
            return predictives.predict(post, xb, "probit", 1, None)[0]

        assert post.output_covariance(batches[0][:2]) is not None, "the factored output covariance must apply"
        times: dict[str, list[float]] = {"map": [], "probit": []}
        for _ in range(args.rounds):
            times["map"].append(time_per_thousand(map_forward, batches))
            times["probit"].append(time_per_thousand(probit, batches))
        load.append(os.getloadavg()[0])
        result = {
            "method": args.method, "images": args.images, "batch": BATCH, "rounds": args.rounds,
            "fit_seconds": fit_seconds, "load": load,
            "seconds_per_1000": {k: statistics.median(v) for k, v in times.items()}, "all": times,
        }
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                probit(batches[0])
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr)
        if args.cli:
            common = [str(factors), "--data", "mnist", "--against", "fashionmnist", "--limit", "1000", "--no-tune",
                      "--json", "-q"]
            cli: dict[str, float] = {}
            for kinds in ("map", "map,probit"):
                started = time.perf_counter()
                uncert("ood", *common, "--predictive", kinds)
                cli[kinds] = time.perf_counter() - started
            result["cli_seconds_2000_images"] = cli
    m, p = result["seconds_per_1000"]["map"], result["seconds_per_1000"]["probit"]
    print("| resnet18 (3×32×32), seconds per 1,000 images | MAP forward | probit (J Σ Jᵀ) | probit / MAP | load |")
    print("|---|---:|---:|---:|---|")
    print(f"| {args.method} factors, batch {BATCH}, median of {args.rounds} | {m:.2f} | {p:.2f} | {p / m:.1f} | "
          f"{load[0]:.1f}–{load[-1]:.1f} |")
    print(f"<!-- {json.dumps(result)} -->")


if __name__ == "__main__":
    main()

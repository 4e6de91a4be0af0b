"""CPU seconds of uncert's fits on resnet18 at one thread, beside the floor (issue 16).

    PYTHONPATH=TREE/src python benchmarks/cpu_seconds.py [--n 256] [--batch-size 32] [--only floor,diag:mc,kfac:exact,kfac:mc]

Wall-clock ratios on a shared 2-core machine move with other people's work; CPU seconds of one thread
(``time.process_time``) move much less, so two source trees can be compared by running this once with each
tree's ``src`` first on ``PYTHONPATH``, alternating. Each method (``floor`` = one plain forward+backward,
else ``METHOD:FISHER`` of ``compute_curvature``) runs in its own process on torchvision's resnet18 (10 classes)
and N random 3×32×32 inputs: a warm-up, then the fastest of 3 runs. Prints one line per method.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cifar_shaped_batches, resnet18  # noqa: E402


def cpu_seconds(name: str, n: int, batch_size: int) -> float:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, batches = resnet18(), list(cifar_shaped_batches(n, batch_size))

    def floor() -> None:
        loss = torch.nn.CrossEntropyLoss(reduction="sum")
        for x, y in batches:
            model.zero_grad()
            loss(model(x), y).backward()

    def fit() -> None:
        from uncert_cli.curvature import compute_curvature

        method, fisher = name.split(":")
        compute_curvature(model, batches, method=method, fisher_type=fisher, generator=torch.Generator().manual_seed(0))

    run = floor if name == "floor" else fit
    run()  # first-call costs (thread pools, lazy imports) are not the method's
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--only", default="floor,diag:mc,kfac:exact,kfac:mc")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # one method, in this process
    args = parser.parse_args()
    if args.run:
        print(f"{cpu_seconds(args.run, args.n, args.batch_size):.3f}")
        return
    for name in args.only.split(","):
        out = subprocess.run([sys.executable, __file__, "--run", name, "--n", str(args.n), "--batch-size",
                              str(args.batch_size)], capture_output=True, text=True, check=True)
        print(f"{name} {out.stdout.strip().splitlines()[-1]}", flush=True)


if __name__ == "__main__":
    main()

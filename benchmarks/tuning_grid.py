"""The held-out tuning grid: one shared Jacobian pass per batch against one pass per grid point.

`uncert tune` and the tuning of `uncert ood`/`attack` score 3 × 13 = 39 `(N, τ)` points on the held-out
examples. The forward, the batched backward and the rotation into each block's eigenbasis do not depend
on `N` or `τ`, so `posterior.held_out.grid_scores` does them once per batch for the whole grid. This script
times that against scoring the points one at a time (what the code did before), in one process, on the
first 1,000 MNIST test images, and checks the scores agree.

    uncert fit sample_models/mnist_mlp.safetensors --data mnist --method kfac -o factors.h5
    python benchmarks/tuning_grid.py factors.h5            # --examples 1000 --samples 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root  # noqa: E402


def main() -> None:
    from uncert_cli.data import iter_batches
    from uncert_cli.storage.opening import open_posterior
    from uncert_cli.workflows.inputs import load_model_data
    from uncert_cli.posterior.held_out import grid_scores
    from uncert_cli.posterior.tuning import VAL_N_FACTORS
    from uncert_cli.posterior.widest import WIDEST_TAU_GRID

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("factors")
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=20, help="glm logit samples (tune's default)")
    args = parser.parse_args()
    opened = open_posterior(args.factors)
    post = opened.posterior.with_hyperparameters(prior_mode="factor")
    data = load_model_data(opened.model.meta, "mnist", split="test", limit=args.examples, root=data_root())
    batches = list(iter_batches(data, 256))
    grid = [post.with_hyperparameters(n_data=post.n_data * f, prior_precision=tau)
            for f in VAL_N_FACTORS for tau in WIDEST_TAU_GRID]
    print(f"{len(grid)} grid points, {len(data)} held-out examples, torch threads {torch.get_num_threads()}\n")
    print("| predictive | one pass per grid point (s) | shared pass (s) | speed-up | largest score difference |")
    print("|---|---:|---:|---:|---:|")
    for kind in ("probit", "glm"):
        def generator() -> torch.Generator:
            return torch.Generator().manual_seed(0)

        grid_scores(grid[:1], batches[:1], kind=kind, samples=args.samples, generator=generator())  # warm-up
        start = time.perf_counter()
        alone = [grid_scores([p], batches, kind=kind, samples=args.samples, generator=generator())[0] for p in grid]
        separate = time.perf_counter() - start
        start = time.perf_counter()
        shared = grid_scores(grid, batches, kind=kind, samples=args.samples, generator=generator())
        together = time.perf_counter() - start
        diff = max(max(abs(a.nll - b.nll), abs(a.entropy - b.entropy)) for a, b in zip(alone, shared))
        print(f"| {kind} | {separate:.1f} | {together:.1f} | {separate / together:.1f}× | {diff:.1e} |")


if __name__ == "__main__":
    main()

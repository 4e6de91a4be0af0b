"""Fit time and memory of sequence classifiers, next to one forward+backward pass over the same data.

Two random-weight classifiers of about 1M parameters on 2,000 random sequences of 64 steps (timing
needs the shapes, not a data set): a 2-layer LSTM (input 64, hidden 256) and a 2-layer transformer
encoder (width 256, 4 heads, feed-forward 512) over 64-dimensional inputs. For each, uncert's exact
``diag`` and ``kfac`` on all weights and on the last block (``--subset``) are timed, each in a fresh
process (so its peak memory is its own), with the fit's own memory estimate beside the measured peak.

    python benchmarks/sequence.py                 # all rows, N = 2,000 (long on a shared 2-core machine)
    python benchmarks/sequence.py --n 200         # quicker; times grow linearly in N (batches of 100)

Prints a Markdown table for docs/benchmarks.md. No peer is run: BackPACK and curvlinops have no
curvature for recurrent layers or attention's packed in-projection.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_bytes, run_isolated  # noqa: E402

FEATURES, STEPS, CLASSES = 64, 64, 10


class LSTMClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(FEATURES, 256, num_layers=2, batch_first=True)
        self.head = nn.Linear(256, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class EncoderClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(FEATURES, 256)
        layer = nn.TransformerEncoderLayer(256, 4, dim_feedforward=512, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(256, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(1))


# The last block: the LSTM's recurrent weights are one module (both layers), so its last block is the
# classifier head; the transformer's is its second encoder layer plus the head.
_LAST_LAYER = ",".join(f"encoder.layers.1.{m}" for m in ("self_attn", "linear1", "linear2", "norm1", "norm2"))
MODELS = {"lstm": (LSTMClassifier, "head"), "transformer": (EncoderClassifier, _LAST_LAYER + ",head")}
ROWS = ["floor", "diag all", "kfac all", "diag last block", "kfac last block"]


def measure(model_name: str, row: str, n: int, batch_size: int) -> dict:
    from uncert_cli.curvature import compute_curvature, estimate_memory
    from uncert_cli.curvature.subset import select_units
    from uncert_cli.workflows.fit_memory import estimate_fit_memory

    torch.manual_seed(0)
    cls, last_block = MODELS[model_name]
    model = cls().eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, STEPS, FEATURES, generator=g), torch.randint(0, CLASSES, (n,), generator=g)
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]
    params = sum(p.numel() for p in model.parameters())
    base = peak_rss_bytes()
    start, cpu_start = time.perf_counter(), time.process_time()
    estimate = None
    if row == "floor":
        for xb, yb in batches:
            model.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
        covered = params
    else:
        method, scope = row.split(" ", 1)
        subset = "all" if scope == "all" else last_block
        units = select_units(model, subset)
        covered = sum(u.num_params for u in units)
        factor_bytes = estimate_memory(model, method=method, subset=subset, example_input=x[:1])
        # the prediction `fit` checks --max-memory against: the whole process's peak
        estimate = estimate_fit_memory(model, method=method, factor_bytes=factor_bytes, example=x[:1],
                                       batch_size=batch_size, examples=n, subset=subset).peak
        compute_curvature(model, batches, method=method, subset=subset)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak": peak_rss_bytes(), "base": base, "params": params,
            "covered": covered,
            "estimate": estimate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady on a shared machine)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: lstm, transformer")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="lstm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.run:
        print(json.dumps(measure(args.model, args.run, args.n, args.batch_size)))
        return
    print(f"N = {args.n} random sequences of {STEPS} steps × {FEATURES} features, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}\n")
    # CPU seconds are the steadier measure where other processes share the cores (wall seconds beside them)
    print("| model | run | covered params | CPU s | wall s | × floor (CPU) | peak RSS (MiB) | predicted peak (MiB) "
          "| peak − before (MiB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for model_name in args.models.split(","):
        extra = ["--n", str(args.n), "--batch-size", str(args.batch_size), "--model", model_name,
                 "--threads", str(args.threads)]
        floor = None
        for row in ROWS:
            r = run_isolated(Path(__file__), row, extra)
            if "error" in r:
                print(f"| {model_name} | {row} | | failed: {r['error']} | | | | | |")
                continue
            floor = r["cpu_seconds"] if row == "floor" else floor
            ratio = f"{r['cpu_seconds'] / floor:.1f}" if floor else "–"
            est = f"{r['estimate'] / 2**20:.0f}" if r.get("estimate") else "–"
            print(f"| {model_name} ({r['params']:,} params) | {row} | {r['covered']:,} | {r['cpu_seconds']:.1f} | "
                  f"{r['seconds']:.1f} | {ratio} | "
                  f"{r['peak'] / 2**20:.0f} | {est} | {(r['peak'] - r['base']) / 2**20:.0f} |")


if __name__ == "__main__":
    main()

"""Fit time and memory of a BERT-style text classifier through ``uncert fit`` (docs/benchmarks.md, issue 15).

A random-weight ``BertForSequenceClassification`` (6 layers, width 256, 4 heads, feed-forward 1024,
vocabulary 2,000, 2 classes) is saved with ``save_pretrained`` and fitted on 2,000 random sequences of
128 tokens (``input_ids`` + ``attention_mask`` with random lengths, fed as keywords): timing and memory
need the shapes, not a real corpus. Three coverages, each one ``uncert fit`` in a fresh process (so its
peak memory is its own): the classifier alone (``--subset 'classifier.*'``), the last encoder block with
the pooler and classifier, and every weight. The fit's own peak-memory estimate (what ``--max-memory``
is compared with) is printed beside the measured peak.

    nice -n 10 python benchmarks/token_classifier.py                 # all three rows, once
    nice -n 10 python benchmarks/token_classifier.py --n 200         # quicker

Prints a Markdown table and the machine's load average before and after (the timings of a shared machine
depend on it). Needs transformers (``pip install -e '.[hf]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

LAYERS, WIDTH, HEADS, FEED_FORWARD, VOCAB, CLASSES = 6, 256, 4, 1024, 2000, 2
LAST_BLOCK = f"bert.encoder.layer.{LAYERS - 1}.*,bert.pooler.*,classifier.*"
ROWS = {"classifier": ["--subset", "classifier.*"], "last block + head": ["--subset", LAST_BLOCK], "all weights": []}


def write_inputs(folder: Path, n: int, tokens: int) -> tuple[Path, Path, int]:
    """The saved model folder, the token file and the model's parameter count."""
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=LAYERS,
                                     num_attention_heads=HEADS, intermediate_size=FEED_FORWARD,
                                     max_position_embeddings=tokens, num_labels=CLASSES)
    model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(folder / "bert")
    rng = np.random.default_rng(0)
    lengths = rng.integers(tokens // 4, tokens + 1, n)
    mask = (np.arange(tokens)[None] < lengths[:, None]).astype(np.int64)
    np.savez(folder / "tokens.npz", input_ids=rng.integers(1, VOCAB, (n, tokens)) * mask, attention_mask=mask,
             labels=rng.integers(0, CLASSES, n))
    return folder / "bert", folder / "tokens.npz", sum(p.numel() for p in model.parameters())


def fit_once(model: Path, data: Path, out: Path, method: str, batch_size: int, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "uncert_cli.cli.main", "fit", str(model), "--data", str(data), "--method", method,
               "--batch-size", str(batch_size), "-o", str(out), "--json", "--quiet", *extra]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:200], "wall": wall}
    doc = json.loads(proc.stdout)
    out.unlink(missing_ok=True)
    return {"wall": wall, "covered": doc["parameters"], "peak": doc["peak_memory_bytes"],
            "estimate": doc["estimated_peak_memory_bytes"], "accuracy": doc.get("map_accuracy")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--method", default="kfac", choices=["kfac", "diag"])
    parser.add_argument("--row", action="append", choices=list(ROWS), help="only these rows (default: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="uncert-bench-") as tmp:
        folder = Path(tmp)
        model, data, params = write_inputs(folder, args.n, args.tokens)
        print(f"BertForSequenceClassification, {LAYERS} layers × {WIDTH} wide, {params:,} parameters; "
              f"N = {args.n} sequences × {args.tokens} tokens, batch {args.batch_size}, method {args.method}, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average before "
              f"{os.getloadavg()[0]:.1f}\n")
        print("| coverage | covered params | wall seconds | estimated peak (MiB) | measured peak (MiB) | estimate / measured |")
        print("|---|---:|---:|---:|---:|---:|")
        for row in args.row or list(ROWS):
            r = fit_once(model, data, folder / "f.h5", args.method, args.batch_size, ROWS[row])
            if "error" in r:
                print(f"| {row} | | failed after {r['wall']:.0f} s: {r['error']} | | | |", flush=True)
                continue
            print(f"| {row} | {r['covered']:,} | {r['wall']:.0f} | {r['estimate'] / 2**20:,.0f} | "
                  f"{r['peak'] / 2**20:,.0f} | {r['estimate'] / r['peak']:.2f} |", flush=True)
        print(f"\nload average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

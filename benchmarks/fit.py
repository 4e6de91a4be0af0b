"""Fit speed and memory: uncert against BackPACK, curvlinops and laplace-torch, side by side.

    python benchmarks/fit.py [--model mlp|resnet18|allcnn] [--n 10000] [--batch-size 256] [--only NAME,NAME]
                             [--repeat R] [--device cpu|cuda]

Every curvature is computed on the sample MNIST MLP (784-1024-1024-10) over N MNIST training
images (or torchvision's resnet18, or All-CNN-C, on N random CIFAR-shaped inputs; All-CNN-C has no
BatchNorm and no in-place ReLU, so BackPACK and curvlinops run on it too), each in its own process (so
peak memory is that method's own), and reported as a ratio to the floor: one plain
forward+backward pass over the same data. Times are of a second run in the same process (the
first run's time is shown too); memory is the first run's peak above the RSS it started from,
with every library already imported. With ``--repeat R`` every method runs R times, the rounds
interleaved (floor, A, B, ..., floor, A, B, ...) so that a change in the machine's load hits every
method alike; the table shows medians, the ratio being the median of each round's ratio to that
round's floor, with the range of the ratios. Prints a Markdown table. With ``--device cuda`` the
model and data live on the GPU, every timed run ends with a device synchronisation, and memory is
the GPU's peak allocation above what was allocated before the method (RSS columns show it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import all_cnn, cifar_shaped_batches, mnist_batches, mnist_mlp, peak_rss_bytes, resnet18, run_isolated  # noqa: E402


def _sequential(model: torch.nn.Module) -> torch.nn.Module:
    # BackPACK and laplace-torch want plain Sequential graphs; the MLP is its children in order.
    if isinstance(model, torch.nn.Sequential) or not hasattr(model, "fc1"):
        return model
    return torch.nn.Sequential(*model.children()).eval()


def floor(model, batches):
    loss = torch.nn.CrossEntropyLoss(reduction="sum")
    for x, y in batches:
        model.zero_grad()
        loss(model(x), y).backward()


def uncert(method: str, fisher: str):
    def run(model, batches):
        from uncert_cli.curvature import compute_curvature

        compute_curvature(model, batches, method=method, fisher_type=fisher, generator=torch.Generator().manual_seed(0))

    return run


def backpack(extension_name: str):
    def run(model, batches):
        from backpack import backpack as bp, extend, extensions

        seq = extend(_sequential(model))
        loss = extend(torch.nn.CrossEntropyLoss(reduction="sum"))
        ext = getattr(extensions, extension_name)()
        for x, y in batches:
            seq.zero_grad()
            with bp(ext):
                loss(seq(x), y).backward()

    return run


def curvlinops_kfac(fisher: str):
    def run(model, batches):
        from curvlinops import KFACLinearOperator

        params = [p for p in model.parameters() if p.requires_grad]
        op = KFACLinearOperator(model, torch.nn.CrossEntropyLoss(reduction="mean"), params, batches,
                                fisher_type=fisher, check_deterministic=False)
        # Constructing the operator does not compute anything in every version; force the factors.
        if hasattr(op, "compute_kronecker_factors"):
            op.compute_kronecker_factors()
        else:
            op @ torch.zeros(sum(p.numel() for p in params))

    return run


def laplace_torch(structure: str):
    def run(model, batches):
        from laplace import Laplace

        la = Laplace(_sequential(model), "classification", subset_of_weights="all", hessian_structure=structure)
        la.fit(batches)

    return run


class _Loader(list):
    """laplace-torch reads ``loader.dataset`` for N."""

    @property
    def dataset(self):
        return [None] * sum(len(x) for x, _ in self)


METHODS = {
    "floor (forward+backward)": floor,
    "uncert diag exact": uncert("diag", "exact"),
    "uncert diag mc": uncert("diag", "mc"),
    "uncert diag empirical": uncert("diag", "empirical"),
    "uncert kfac exact": uncert("kfac", "exact"),
    "uncert kfac mc": uncert("kfac", "mc"),
    "uncert kfac empirical": uncert("kfac", "empirical"),
    "backpack DiagGGNExact": backpack("DiagGGNExact"),
    "backpack DiagGGNMC": backpack("DiagGGNMC"),
    "backpack SumGradSquared": backpack("SumGradSquared"),
    "backpack KFLR": backpack("KFLR"),
    "backpack KFAC": backpack("KFAC"),
    "curvlinops KFAC exact": curvlinops_kfac("type-2"),
    "curvlinops KFAC mc": curvlinops_kfac("mc"),
    "curvlinops KFAC empirical": curvlinops_kfac("empirical"),
    "laplace-torch Kron": laplace_torch("kron"),
    "laplace-torch Diag": laplace_torch("diag"),
}


# What each method imports. Imports are done before the baseline is taken: they are a fixed cost
# of the process (curvlinops alone adds ~26 MiB), not memory the computation needs.
LIBRARIES = {"uncert": ["uncert_cli.curvature"], "backpack": ["backpack"], "curvlinops": ["curvlinops"],
             "laplace-torch": ["laplace"]}


def _preimport(name: str) -> None:
    import importlib

    # torch.autograd imports torch.fx's symbolic shapes (and sympy: ~0.4 s, ~34 MiB) on the first
    # backward that is given explicit output gradients; every method but the floor does one.
    importlib.import_module("torch.fx.experimental.symbolic_shapes")
    for module in LIBRARIES.get(name.split()[0], []):
        importlib.import_module(module)


def _timed(run, model, batches, device: torch.device) -> float:
    start = time.perf_counter()
    run(model, batches)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # kernels are queued: the time is when the last one finished
    return time.perf_counter() - start


def measure(name: str, n: int, batch_size: int, model_name: str, device: torch.device) -> dict:
    torch.manual_seed(0)
    if model_name in ("resnet18", "allcnn"):
        model = resnet18() if model_name == "resnet18" else all_cnn()
        batches = _Loader(cifar_shaped_batches(n, batch_size))
    else:
        model, batches = mnist_mlp(), _Loader(mnist_batches(n, batch_size))
    model = model.to(device)
    batches = _Loader([(x.to(device), y.to(device)) for x, y in batches])
    _preimport(name)
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device) if on_gpu else peak_rss_bytes()
    first = _timed(METHODS[name], model, batches, device)
    peak = torch.cuda.max_memory_allocated(device) if on_gpu else peak_rss_bytes()
    # The reported time is a second run in the same process: first-call costs (thread pools,
    # BLAS dispatch, allocator growth, CUDA kernel loading) are paid once per process, not per fit.
    seconds = _timed(METHODS[name], model, batches, device)
    return {"name": name, "seconds": seconds, "first_seconds": first, "peak_rss": peak, "rss_before": base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["mlp", "resnet18", "allcnn"], default="mlp")
    parser.add_argument("--n", type=int, default=None, help="examples (default 10,000 for mlp, 512 for resnet18, 128 for allcnn)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--only", default="", help="comma-separated method names (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds; the table shows medians")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where every method computes")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.n = args.n or {"resnet18": 512, "allcnn": 128}.get(args.model, 10_000)
    if args.run:
        print(json.dumps(measure(args.run, args.n, args.batch_size, args.model, torch.device(args.device))))
        return
    names = [m for m in METHODS if not args.only or m in args.only.split(",")]
    if "floor (forward+backward)" not in names:
        names.insert(0, "floor (forward+backward)")
    extra = ["--n", str(args.n), "--batch-size", str(args.batch_size), "--model", args.model, "--device", args.device]
    rounds = [[run_isolated(Path(__file__), name, extra) for name in names] for _ in range(args.repeat)]
    title = {"resnet18": "resnet18 (torchvision, 10 classes), random 3×32×32 inputs",
             "allcnn": "All-CNN-C (10 classes), random 3×32×32 inputs"}.get(args.model, "MNIST MLP 784-1024-1024-10, MNIST train images")
    where = (f"GPU {torch.cuda.get_device_name()} (memory columns: GPU allocations)" if args.device == "cuda"
             else f"torch threads {torch.get_num_threads()}")
    print(f"{title}, N = {args.n}, batch {args.batch_size}, {where}, {args.repeat} interleaved round(s), medians\n")
    print("| method | seconds | × floor (range) | first run (s) | peak RSS (MiB) | peak − RSS before the method (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for i, name in enumerate(names):
        runs = [r[i] for r in rounds]
        ok = [(r, rnd[0]) for r, rnd in zip(runs, rounds) if "error" not in r and "error" not in rnd[0]]
        if not ok:
            print(f"| {name} | failed: {runs[0].get('error', 'floor failed')} | | | | |")
            continue
        ratios = [r["seconds"] / base["seconds"] for r, base in ok]
        spread = f" ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""
        med = lambda key: statistics.median(r[key] for r, _ in ok)  # noqa: E731
        print(f"| {name} | {med('seconds'):.2f} | {statistics.median(ratios):.2f}{spread} | {med('first_seconds'):.2f} | "
              f"{med('peak_rss') / 2**20:.0f} | {statistics.median((r['peak_rss'] - r['rss_before']) for r, _ in ok) / 2**20:.0f} |")

if __name__ == "__main__":
    main()

"""``uncert fit``'s predicted peak memory against the measured peak (docs/benchmarks.md).

    python benchmarks/memory.py                          # every case below, each in its own process
    python benchmarks/memory.py --case resnet18-kfac     # one case

Each case runs the library half of ``uncert fit`` (memory check, curvature, factor file with its
eigendecompositions) in a fresh process and reports the prediction (``fitting.check_memory``) and
the process's peak resident set size (``ru_maxrss``) after the file is written. Random inputs and
labels: memory depends on the shapes, not the values.

Cases (2-core machine budget: a few minutes in all):
* ``vgg-*``: a VGG-shaped network: VGG11's convolutions on 3×32×32 inputs (2×2×512 = 2,048
  features after five poolings) and VGG16's classifier widths, 2048→4096→4096→10, so that the
  4096-wide dense layers dominate the factors as they do in VGG16 (the real VGG16's 25,088-input
  fc6 would need a 25,089² factor: 2.5 GiB in float32 and ~20 GiB for its eigendecomposition).
* ``resnet18-*``: torchvision's resnet18(num_classes=10) on 3×32×32 inputs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = {
    "vgg-kfac": ("vgg", "kfac"),
    "vgg-diag": ("vgg", "diag"),
    "resnet18-kfac": ("resnet18", "kfac"),
    "resnet18-diag": ("resnet18", "diag"),
}
EXAMPLES = 16
BATCH = 16


def vgg_shaped():
    from torch import nn

    layers: list[nn.Module] = []
    channels = 3
    for width in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            channels = width
    # 32 → 1 after five poolings; a 2×2 map needs one pooling fewer: drop the last.
    layers = layers[:-1]
    return nn.Sequential(
        *layers, nn.Flatten(),
        nn.Linear(512 * 2 * 2, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 10),
    )


def build(name: str):
    import torch

    torch.manual_seed(0)
    if name == "vgg":
        return vgg_shaped().eval()
    import torchvision

    return torchvision.models.resnet18(num_classes=10).eval()


def run_case(case: str) -> dict:
    """Runs in the child process: predict, fit, write; report both numbers."""
    import numpy as np
    import torch

    from uncert_cli.checkpoint import LoadedModel, ModelMeta
    from uncert_cli.data.arrays import dataset_from_arrays
    from uncert_cli.workflows.fit import FitOptions, check_memory, fit_to_file

    torch.set_num_threads(2)
    model_name, method = CASES[case]
    module = build(model_name)
    rng = np.random.default_rng(0)
    data = dataset_from_arrays(case, rng.standard_normal((EXAMPLES, 3, 32, 32), dtype=np.float32),
                               rng.integers(0, 10, EXAMPLES))
    meta = ModelMeta(arch="benchmark", arch_kwargs={}, input_shape=(3, 32, 32), task="classification",
                     num_outputs=10, dataset=case)
    with tempfile.TemporaryDirectory() as folder:
        loaded = LoadedModel(module, meta, Path(folder) / "model.safetensors", "benchmark")
        options = FitOptions(method=method, batch_size=BATCH, max_memory=1 << 40)
        memory = check_memory(module, options, data)
        result = fit_to_file(loaded, data, options, Path(folder) / "f.h5", memory=memory)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "case": case, "parameters": sum(p.numel() for p in module.parameters()),
        "predicted_peak": memory.peak, "measured_peak": peak, "before": memory.before,
        "predicted_added": memory.added, "measured_added": peak - memory.before,
        "parts": {"weights": memory.weights, "factors": memory.factors, "batch": memory.batch, "finish": memory.finish},
        "seconds": result.info["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child)))
        return
    mib = 2**20
    print("| case | parameters | in use before (MiB) | predicted peak (MiB) | measured peak (MiB) | predicted / measured |")
    print("|---|---:|---:|---:|---:|---:|")
    for case in args.case or list(CASES):
        out = subprocess.run([sys.executable, __file__, "--child", case], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {case} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {case} | {r['parameters']:,} | {r['before'] / mib:,.0f} | {r['predicted_peak'] / mib:,.0f} | "
              f"{r['measured_peak'] / mib:,.0f} | {r['predicted_peak'] / r['measured_peak']:.2f} |", flush=True)
        print(f"<!-- {json.dumps(r)} -->", flush=True)


if __name__ == "__main__":
    main()

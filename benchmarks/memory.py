"""``uncert fit``'s predicted peak memory against the measured peak (docs/benchmarks.md).

    python benchmarks/memory.py                          # every case below, each in its own process
    python benchmarks/memory.py --case resnet18-kfac     # one case

Each case runs the library half of ``uncert fit`` (memory check, curvature, factor file with its
eigendecompositions) in a fresh process and reports the prediction (``fitting.check_memory``) and
the process's peak resident set size (``ru_maxrss``) after the file is written. Random inputs and
labels: memory depends on the shapes, not the values.

Cases (each a fresh process; run the heavy ones under ``nice -n 19`` on a shared machine):
* ``vgg-*``: a VGG-shaped network: VGG11's convolutions on 3×32×32 inputs (2×2×512 = 2,048
  features after five poolings) and VGG16's classifier widths, 2048→4096→4096→10, so that the
  4096-wide dense layers dominate the factors as they do in VGG16 (the real VGG16's 25,089-input
  fc6 would need a 25,089² factor: 2.5 GiB in float32 and ~20 GiB for its eigendecomposition).
* ``resnet18-*``: torchvision's resnet18(num_classes=10) on 3×32×32 inputs.
* ``wrn-*``: a WideResNet-16-4 (``_wrn.py``, 2.75M parameters) on 3×32×32 inputs, batch 64.
* ``resnet50-*``: torchvision's resnet50 on 3×224×224 inputs, 32 examples in batches of 16. The exact
  GGN sends C − 1 backward vectors per example, 999 with the real 1,000-class head (half an hour or
  more on two cores for 32 images), so the exact cases use ``num_classes=10``: the memory is set by the
  convolutions' input factors (layer4's 4,608²) and the activations at 224×224, which the head does
  not change. ``resnet50-mc-*`` keep the real 1,000-class head with ``fisher_type="mc"`` (one sampled
  label per example), so that its 2,049² and 1,000² factors are measured too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Case:
    """One measurement: the network, the method and the data shapes."""

    model: str
    method: str
    fisher: str = "exact"
    classes: int = 10
    side: int = 32  # inputs are 3×side×side
    examples: int = 16
    batch: int = 16


CASES = {
    "vgg-kfac": Case("vgg", "kfac"),
    "vgg-diag": Case("vgg", "diag"),
    "resnet18-kfac": Case("resnet18", "kfac"),
    "resnet18-diag": Case("resnet18", "diag"),
    "wrn-kfac": Case("wrn", "kfac", examples=64, batch=64),
    "wrn-diag": Case("wrn", "diag", examples=64, batch=64),
    "resnet50-kfac": Case("resnet50", "kfac", side=224, examples=32),
    "resnet50-diag": Case("resnet50", "diag", side=224, examples=32),
    "resnet50-mc-kfac": Case("resnet50", "kfac", fisher="mc", classes=1000, side=224, examples=32),
    "resnet50-mc-diag": Case("resnet50", "diag", fisher="mc", classes=1000, side=224, examples=32),
}


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


def build(name: str, classes: int):
    import torch

    torch.manual_seed(0)
    if name == "vgg":
        return vgg_shaped().eval()
    if name == "wrn":
        from _wrn import wrn_16_4

        return wrn_16_4(classes)
    import torchvision

    return getattr(torchvision.models, name)(num_classes=classes).eval()


def run_case(case: str) -> dict:
    """Runs in the child process: predict, fit, write; report both numbers."""
    import numpy as np
    import torch

    from uncert_cli.checkpoint import LoadedModel, ModelMeta
    from uncert_cli.data.arrays import dataset_from_arrays
    from uncert_cli.workflows.fit import FitOptions, check_memory, fit_to_file

    torch.set_num_threads(2)
    spec = CASES[case]
    load_before = os.getloadavg()[0]
    module = build(spec.model, spec.classes)
    rng = np.random.default_rng(0)
    shape = (3, spec.side, spec.side)
    data = dataset_from_arrays(case, rng.standard_normal((spec.examples, *shape), dtype=np.float32),
                               rng.integers(0, spec.classes, spec.examples))
    meta = ModelMeta(arch="benchmark", arch_kwargs={}, input_shape=shape, task="classification",
                     num_outputs=spec.classes, dataset=case)
    with tempfile.TemporaryDirectory() as folder:
        loaded = LoadedModel(module, meta, Path(folder) / "model.safetensors", "benchmark")
        options = FitOptions(method=spec.method, fisher_type=spec.fisher, batch_size=spec.batch, max_memory=1 << 40)
        memory = check_memory(module, options, data)
        result = fit_to_file(loaded, data, options, Path(folder) / "f.h5", memory=memory)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "case": case, "parameters": sum(p.numel() for p in module.parameters()),
        "predicted_peak": memory.peak, "measured_peak": peak, "before": memory.before,
        "predicted_added": memory.added, "measured_added": peak - memory.before,
        "parts": {"weights": memory.weights, "factors": memory.factors, "batch": memory.batch, "finish": memory.finish},
        "seconds": result.info["seconds"], "load": [load_before, os.getloadavg()[0]],
        "examples": spec.examples, "batch": spec.batch, "input": list(shape), "fisher": spec.fisher,
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
    print("| case | parameters | in use before (MiB) | predicted peak (MiB) | measured peak (MiB) | predicted / measured "
          "| fit seconds | load (start–end) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for case in args.case or list(CASES):
        out = subprocess.run([sys.executable, __file__, "--child", case], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {case} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {case} | {r['parameters']:,} | {r['before'] / mib:,.0f} | {r['predicted_peak'] / mib:,.0f} | "
              f"{r['measured_peak'] / mib:,.0f} | {r['predicted_peak'] / r['measured_peak']:.2f} | {r['seconds']:,.0f} | "
              f"{r['load'][0]:.1f}–{r['load'][1]:.1f} |", flush=True)
        print(f"<!-- {json.dumps(r)} -->", flush=True)


if __name__ == "__main__":
    main()

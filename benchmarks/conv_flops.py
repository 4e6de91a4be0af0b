"""Multiply-adds per example that each curvature method needs on a conv network, against the floor.

    python benchmarks/conv_flops.py [--model resnet18|allcnn] [--size 32] [--classes 10]

Counted from the shapes of every Conv/Linear call (one forward of a single example), with ``K``
backward vectors per example (``C − 1`` for the exact GGN, 1 for MC/empirical):

* floor: forward ``Σ P·O·I`` + backward input gradients (every layer but the first) + weight
  gradients (``Σ P·O·I`` again);
* every method: the forward + ``K`` input-gradient backwards to the layer outputs (no weight
  gradients), through the kernel taps that can see the input (``curvature/live_tap_convs.py``:
  resnet18's layer4 at 32×32 inputs runs its 3×3 kernels on 1×1 maps; the floor, torch's own
  forward+backward, pays for every tap);
* exact diagonal: per layer with ``P > 1`` the cheaper of ``K·P·O·I`` (per-example gradients) and
  ``P(P+1)/2·O·I`` (position pairs), ``O·I`` where ``P = 1``;
* KFAC: ``K·P·O²/2`` for ``G`` (lower triangle, syrk) and for ``A`` what uncert computes
  (``curvature/conv_input.py``'s plan): ``n·I'²/2`` per group of ``n`` positions over the ``I'``
  patch columns they can see (taps that read only padding there are left out), or for stride-1
  convs where it is cheaper the shifted whole-map products (``shift_gram_cost``, its border strips
  counted twice for their copies), or on small maps the Gram matrix of the whole input maps
  (``(C·S)²/2`` for ``S`` input pixels, ``curvature/pixel_gram.py``). ``--patches`` counts
  ``P·I²/2`` over all columns instead (the count before those changes).

BatchNorm, ReLU, pooling and additions are left out (elementwise, under 1% of the multiply-adds).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import all_cnn, resnet18  # noqa: E402


Shape = tuple[str, int, int, int, float, int]


def layer_shapes(model: nn.Module, size: int, patches: bool = False) -> list[Shape]:
    """``(name, P, O, I, A, L)`` of every Conv/Linear call for one ``3×size×size`` example, ``A`` being
    the multiply-adds of its KFAC input factor (see the module docstring), ``L`` the columns of ``I``
    on the kernel taps that can see the input."""
    from uncert_cli.curvature.conv_input import input_plan
    from uncert_cli.curvature.live_tap_convs import cropped_conv
    from uncert_cli.curvature.shift_gram import shift_gram_cost
    from uncert_cli.curvature.subset import conv_padding

    shapes: list[Shape] = []
    hooks = []

    def input_factor(mod: nn.Module, x: torch.Tensor, P: int, I: int) -> float:
        if patches or not isinstance(mod, nn.Conv2d):
            return P * I * I / 2
        spatial = tuple(x.shape[-2:])
        plan = input_plan(mod, spatial)
        pad = conv_padding(mod)
        assert pad is not None
        if plan.shift:
            return float(shift_gram_cost(mod.in_channels, *spatial, *mod.kernel_size, *pad))
        if plan.pixels:  # the whole input maps' Gram matrix (its fold, once per fit, is not per example)
            return (mod.in_channels * math.prod(spatial)) ** 2 / 2
        total = 0.0
        for positions, taps in plan.parts:
            n = P if positions is None else math.prod(p1 - p0 for p0, p1 in positions)
            width = I if taps is None else mod.in_channels * math.prod(len(t) for t in taps) + (mod.bias is not None)
            total += n * width * width / 2
        return total

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            def hook(mod, args, out, name=name):  # type: ignore[no-untyped-def]
                O = mod.weight.shape[0]
                I = mod.weight[0].numel() + (mod.bias is not None)
                P = out[0].numel() // O if out.dim() > 2 else 1
                crop = cropped_conv(mod, tuple(args[0].shape[-2:])) if isinstance(mod, nn.Conv2d) else None
                live = I if crop is None else mod.in_channels * math.prod(hi - lo for lo, hi in crop.taps) + (mod.bias is not None)
                shapes.append((name, P, O, I, input_factor(mod, args[0], P, I), live))
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return shapes


def counts(shapes: list[Shape], K: int) -> dict[str, float]:
    fwd = sum(P * O * I for _, P, O, I, _, _ in shapes)
    first = shapes[0][1] * shapes[0][2] * shapes[0][3]
    backward_inputs = fwd - first
    live_backward = sum(P * O * L for _, P, O, _, _, L in shapes[1:])  # cropped convs (see the module docstring)
    base = fwd + K * live_backward
    diag = sum(min(K * P, P * (P + 1) // 2) * O * I if P > 1 else O * I for _, P, O, I, _, _ in shapes)
    kfac = sum(A + K * P * O * O / 2 for _, P, O, I, A, _ in shapes)
    return {"floor": fwd + backward_inputs + fwd, "forward": fwd, "backward vectors": K * live_backward,
            "diag": base + diag, "kfac": base + kfac, "diag squares": diag, "kfac factors": kfac,
            "input factors": sum(A for *_, A, _ in shapes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["resnet18", "allcnn"], default="resnet18")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--patches", action="store_true", help="KFAC's A as the Gram product of all patch columns")
    args = parser.parse_args()
    model = resnet18() if args.model == "resnet18" else all_cnn()
    shapes = layer_shapes(model, args.size, args.patches)
    exact, mc = counts(shapes, args.classes - 1), counts(shapes, 1)
    floor = exact["floor"]
    print(f"{args.model} at {args.size}×{args.size}, {len(shapes)} conv/linear layers, "
          f"forward {exact['forward'] / 1e6:.1f}M multiply-adds per example, floor {floor / 1e6:.1f}M\n")
    print("| method | multiply-adds per example (M) | × floor | of which backward vectors | of which squares / factors |")
    print("|---|---:|---:|---:|---:|")
    for label, c, key, part in [("exact diag", exact, "diag", "diag squares"), ("MC diag", mc, "diag", "diag squares"),
                                ("exact KFAC", exact, "kfac", "kfac factors"), ("MC / empirical KFAC", mc, "kfac", "kfac factors")]:
        print(f"| {label} | {c[key] / 1e6:.1f} | {c[key] / floor:.2f} | {c['backward vectors'] / 1e6:.1f} | {c[part] / 1e6:.1f} |")
    print(f"\nKFAC input factors: {mc['input factors'] / 1e6:.1f}M "
          f"({mc['input factors'] / mc['kfac']:.0%} of MC KFAC, {exact['input factors'] / exact['kfac']:.0%} of exact KFAC)")
    assert math.isfinite(floor)


if __name__ == "__main__":
    main()

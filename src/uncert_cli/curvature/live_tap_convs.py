"""Convolutions run on the kernel taps that can see the input: the same outputs, less backward work.

A conv whose maps are small next to its kernel has taps that only ever read zero padding (resnet18's
layer4 at 32×32 inputs runs 3×3 convs on 1×1 maps: only the centre tap is live). Its output is the
same as that of the conv with the kernel cropped to the live taps and the padding reduced to match,
and every backward vector propagated through the cropped conv costs a ninth as much there. Exact KFAC
propagates nine vectors per example, one backward each, so on resnet18 these dead taps cost ~15% of a
fit (docs/benchmarks.md, issue 16).

Within :func:`live_tap_convs` every plain ``nn.Conv1d/2d/3d`` of the model (its class's own forward,
zero padding) computes its output this way for input sizes where some taps are dead, and the usual way
otherwise. Only the arithmetic changes (the sums have fewer zero terms, so float rounding can differ in
the last bit); the module, its parameters and what hooks see of its calls are untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

from uncert_cli.curvature.conv_input import live_taps
from uncert_cli.curvature.subset import conv_padding

__all__ = ["live_tap_convs", "CroppedConv", "cropped_conv"]

_CONVS: dict[type[nn.Module], Callable[..., Tensor]] = {
    nn.Conv1d: F.conv1d,
    nn.Conv2d: F.conv2d,
    nn.Conv3d: F.conv3d,
}


@dataclass(frozen=True)
class CroppedConv:
    """The conv on one input size, cropped to its live taps.

    ``taps[d]`` is the range ``[lo, hi)`` of kernel offsets kept in spatial dimension ``d``;
    ``pads[d]`` the ``(left, right)`` padding of the input for the cropped kernel (negative: that
    many input elements are dropped, being never read). ``linear``: the cropped conv has one output
    position whose window is the whole (cropped) input, so it is a matrix product of the flattened
    input (faster than a conv kernel there: resnet18's layer4 at 32×32 inputs).
    """

    taps: tuple[tuple[int, int], ...]
    pads: tuple[tuple[int, int], ...]
    linear: bool


def _base_conv(module: nn.Module) -> type[nn.Module] | None:
    for base in _CONVS:
        if isinstance(module, base) and type(module).forward is base.forward:
            return base
    return None


def cropped_conv(module: nn.Conv1d | nn.Conv2d | nn.Conv3d, spatial: tuple[int, ...]) -> CroppedConv | None:
    """How to run ``module`` on inputs of spatial size ``spatial`` on its live taps, or None when
    every tap is live (or the live taps are not one range in some dimension).
    """
    padding = conv_padding(module)
    if padding is None or module.padding_mode != "zeros" or len(spatial) != len(module.kernel_size):
        return None
    live = live_taps(module, spatial)
    if live is None:
        return None
    taps, pads = [], []
    linear = True
    for n, k, s, dil, pad, kept in zip(spatial, module.kernel_size, module.stride, module.dilation, padding, live):
        if not kept or kept != tuple(range(kept[0], kept[-1] + 1)):
            return None  # no output position (input smaller than the kernel's reach) or live taps not one range
        lo, hi = kept[0], kept[-1] + 1
        positions = (n + 2 * pad - dil * (k - 1) - 1) // s + 1
        left = pad - lo * dil  # the cropped kernel's first tap reads input index p·s − left
        right = (positions - 1) * s + dil * (hi - lo - 1) + 1 - n - left  # the last window ends at the padded end
        taps.append((lo, hi))
        pads.append((left, right))
        linear &= positions == 1 and (hi - lo == 1 or dil == 1) and n + left + right == hi - lo
    return CroppedConv(tuple(taps), tuple(pads), linear)


def _forward(module: nn.Conv1d | nn.Conv2d | nn.Conv3d, base: type[nn.Module]) -> Callable[[Tensor], Tensor]:
    conv = _CONVS[base]
    full = base.forward
    plans: dict[tuple[int, ...], CroppedConv | None] = {}

    def forward(input: Tensor) -> Tensor:  # noqa: A002 - nn.ConvNd's argument name
        spatial = tuple(input.shape[-len(module.kernel_size) :])
        if spatial not in plans:
            plans[spatial] = cropped_conv(module, spatial)
        plan = plans[spatial]
        if plan is None:
            return full(module, input)
        # contiguous once per forward: a strided weight is copied again in every backward
        kept = (slice(None), slice(None), *(slice(lo, hi) for lo, hi in plan.taps))  # a tuple: Python 3.10 has no x[a, *b]
        weight = module.weight[kept].contiguous()
        dims = len(plan.pads)
        if plan.linear and module.groups == 1:
            if any(left or right for left, right in plan.pads):
                input = F.pad(input, [p for pair in reversed(plan.pads) for p in pair])
            out = F.linear(input.flatten(-dims - 1), weight.flatten(1), module.bias)
            return out.view(*out.shape, *(1,) * dims)
        if all(left == right >= 0 for left, right in plan.pads):
            padding = tuple(left for left, _ in plan.pads)
        else:
            # F.pad takes the last dimension first; negative amounts drop elements never read.
            input = F.pad(input, [p for pair in reversed(plan.pads) for p in pair])
            padding = (0,) * len(plan.pads)
        return conv(input, weight, module.bias, module.stride, padding, module.dilation, module.groups)

    return forward


@contextlib.contextmanager
def live_tap_convs(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Within the block, the plain convs of ``model`` skip the kernel taps that only read padding.

    Yields the modules affected; their forwards are restored on exit, also on errors. Convs whose
    class defines its own forward (e.g. "same" padding computed per call) or that already have a
    forward assigned to the instance are left alone.
    """
    swapped = []
    try:
        for module in model.modules():
            base = _base_conv(module)
            if base is None or "forward" in vars(module):
                continue
            conv = cast("nn.Conv1d | nn.Conv2d | nn.Conv3d", module)  # _base_conv found one of these
            if conv.padding_mode != "zeros" or conv_padding(conv) is None:
                continue  # cropped_conv would never apply
            module.forward = _forward(conv, base)  # an instance attribute shadows the class's forward
            swapped.append(module)
        yield swapped
    finally:
        for module in swapped:
            del module.forward

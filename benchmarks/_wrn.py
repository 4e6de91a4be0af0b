"""A WideResNet-16-4 for 3×32×32 inputs (the shape of Ritter et al. §5.4's CIFAR-10 network).

Depth 16 = 3 groups × 2 pre-activation basic blocks × 2 convolutions + the stem and the head; widen
factor 4 gives the group widths 64/128/256. 2.75M parameters with 10 classes. Benchmarks only: users
bring their own checkpoints and architectures.

Plain (not in-place) ReLUs: the fit's hooks see each layer's input, and an in-place activation after
a BatchNorm would overwrite the tensor a convolution's curvature needs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PreActBlock(nn.Module):
    """BN-ReLU-conv3×3-BN-ReLU-conv3×3 plus the shortcut (a 1×1 convolution where the shape changes).

    Input ``(B, c_in, H, W)``, output ``(B, c_out, H / stride, W / stride)``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        changes_shape = stride != 1 or c_in != c_out
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if changes_shape else None

    def forward(self, x: Tensor) -> Tensor:
        activated = self.relu(self.bn1(x))
        # Zagoruyko & Komodakis: a projecting shortcut starts from the activated input.
        skip = x if self.shortcut is None else self.shortcut(activated)
        out = self.conv1(activated)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + skip


class WideResNet(nn.Module):
    """WRN-(6n+4)-k: a 3×3 stem, three groups of ``n`` blocks (widths 16k, 32k, 64k; strides 1, 2, 2),
    BN-ReLU, global average pooling and a linear head. Input ``(B, 3, H, W)``, output ``(B, classes)``.
    """

    def __init__(self, blocks_per_group: int = 2, widen: int = 4, num_classes: int = 10) -> None:
        super().__init__()
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        channels = 16
        for width, stride in zip(widths, (1, 2, 2)):
            for i in range(blocks_per_group):
                layers.append(PreActBlock(channels, width, stride if i == 0 else 1))
                channels = width
        self.groups = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn(self.groups(self.stem(x))))
        return self.head(torch.flatten(self.pool(out), 1))


def wrn_16_4(num_classes: int = 10) -> nn.Module:
    """WRN-16-4 in eval mode, seeded (2,748,890 parameters with 10 classes)."""
    torch.manual_seed(0)
    return WideResNet(blocks_per_group=2, widen=4, num_classes=num_classes).eval()

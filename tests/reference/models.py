"""Tiny float64 networks shared by the tests (curvature, posterior, the declared cases)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

DT = torch.float64


def seeded_mlp(seed: int = 0, sizes=(4, 6, 5, 3), dropout: float = 0.0) -> nn.Sequential:
    """Linear layers of ``sizes`` with tanh (and dropout) between them, float64, weights from ``seed``."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers).to(DT)


def mlp(bias: bool = True, d_in: int = 4, hidden: int = 5, d_out: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, hidden, bias=bias), nn.Tanh(), nn.Linear(hidden, d_out, bias=bias)).double()


def cnn(bias: bool = True, d_out: int = 3) -> nn.Module:
    """conv (padded) → relu → maxpool → strided+dilated conv → grouped conv → flatten → linear."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=bias),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 2, stride=1, dilation=2, padding=1, bias=bias),
        nn.Conv2d(4, 4, 1, groups=2, bias=bias),  # grouped: diagonal block via torch.func
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, d_out, bias=bias),
    ).double()


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3, padding="same")
        self.fc = nn.Linear(3 * 5, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


class SequenceNet(nn.Module):
    """A Linear applied to (B, T, I) inputs, then mean over T."""

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 4, bias=bias)
        self.head = nn.Linear(4, 2, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.proj(x)).mean(1))


class SequenceFirstNet(nn.Module):
    """Takes (B, T, I) and runs its Linear layer on (T, B, I), as ``batch_first=False`` models do."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.proj(x.transpose(0, 1))).mean(0))


class AttentionSequenceFirstNet(nn.Module):
    """A Linear and an ``nn.MultiheadAttention(batch_first=False)`` on (T, B, E), then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=False)
        self.head = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.proj(x.transpose(0, 1)))
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head((a + h).mean(0))


class SharedNet(nn.Module):
    """The same Linear called twice per forward, with a residual connection in between."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.shared(x))
        h = torch.relu(self.shared(h)) + x
        return self.head(h)


class NormNet(nn.Module):
    """Embedding → LayerNorm → Linear → BatchNorm1d (eval, non-trivial running stats) → Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 3)
        self.ln = nn.LayerNorm(3)
        self.fc = nn.Linear(6, 4)
        self.bn = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)
            self.ln.weight.uniform_(0.5, 1.5)
            self.ln.bias.uniform_(-0.5, 0.5)

    def forward(self, idx: Tensor) -> Tensor:
        h = self.ln(self.emb(idx)).flatten(1)  # (B, 2, 3) -> (B, 6)
        return self.head(torch.tanh(self.bn(self.fc(h))))


def targets(task: str, n: int, c: int) -> Tensor:
    if task == "classification":
        return torch.randint(0, c, (n,))
    return torch.randn(n, c, dtype=torch.float64)

"""Real architectures fit without error and give finite PSD factors / non-negative diagonals."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from uncert_cli.curvature import Curvature, DiagonalBlock, KroneckerBlock, compute_curvature


def _assert_psd(f: Tensor, name: str) -> None:
    """min eigenvalue >= -1e-6 * max. eigvalsh on resnet's large conv input factors (up to 4609²)
    takes seconds to minutes here, so above 256 check instead that f + 1e-6·λ_max·I has a Cholesky
    factor, with λ_max from power iteration (an underestimate, so the check is if anything stricter).
    Above 2400 (layer4's 4609² input factors) even that costs seconds each, so there the check is
    on a random 256-dimensional compression Qᵀ f Q (necessary, not sufficient)."""
    if f.shape[0] <= 256:
        ev = torch.linalg.eigvalsh(f)
        assert ev.min() >= -1e-6 * max(ev.max().item(), 1e-30), name
        return
    v = torch.ones(f.shape[0], dtype=f.dtype)
    for _ in range(20):
        v = f @ v
        v /= v.norm()
    lam_max = float(v @ f @ v)
    if f.shape[0] > 2400:
        Q, _ = torch.linalg.qr(torch.randn(f.shape[0], 256, dtype=f.dtype))
        assert torch.linalg.eigvalsh(Q.t() @ f @ Q).min() >= -1e-6 * lam_max, name
        return
    jitter = 1e-6 * lam_max * torch.eye(f.shape[0], dtype=f.dtype)
    assert torch.linalg.cholesky_ex(f + jitter).info.item() == 0, name


def _check_psd(curv: Curvature, model: nn.Module) -> None:
    assert {n for b in curv.blocks for n in b.param_names} == {n for n, _ in model.named_parameters()}
    for block in curv.blocks:
        if isinstance(block, KroneckerBlock):
            for f in (block.input_factor, block.output_factor):
                assert torch.isfinite(f).all()
                torch.testing.assert_close(f, f.t())
                _assert_psd(f.double(), block.module)
        else:
            assert isinstance(block, DiagonalBlock)
            for d in block.diagonal:
                assert torch.isfinite(d).all() and (d >= 0).all(), block.module


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.mark.parametrize("method", ["kfac", "diag"])
def test_resnet18(resnet: nn.Module, method: str) -> None:
    x = torch.randn(4, 3, 32, 32)
    y = torch.randint(0, 10, (4,))
    fisher = "mc" if method == "diag" else "exact"  # keep the diag run cheap: K = 1
    curv = compute_curvature(resnet, [(x, y)], method=method, fisher_type=fisher)
    _check_psd(curv, resnet)
    kinds = {type(b).__name__ for b in curv.blocks}
    assert kinds == ({"KroneckerBlock", "DiagonalBlock"} if method == "kfac" else {"DiagonalBlock"})
    assert sum(isinstance(b, KroneckerBlock) for b in curv.blocks) == (21 if method == "kfac" else 0)


class TinyTransformer(nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.emb = nn.Embedding(11, 8)
        layer = nn.TransformerEncoderLayer(8, nhead=2, dim_feedforward=16, dropout=0.1, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, idx: Tensor) -> Tensor:
        h = self.emb(idx)  # (B, T, E)
        if not self.batch_first:
            h = h.transpose(0, 1)
        h = self.encoder(h)
        return self.head(h.mean(1 if self.batch_first else 0))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("method", ["kfac", "diag"])
def test_transformer_encoder(method: str, batch_first: bool) -> None:
    model = TinyTransformer(batch_first).double()
    idx = torch.randint(0, 11, (4, 5))  # T=5 != B so the batch dimension is unambiguous
    y = torch.randint(0, 3, (4,))
    curv = compute_curvature(model, [(idx[:3], y[:3]), (idx[3:], y[3:])], method=method)
    _check_psd(curv, model)
    attn = [b for b in curv.blocks if b.module.endswith("self_attn")]
    assert len(attn) == 2 and all(isinstance(b, DiagonalBlock) for b in attn)
    assert "encoder.layers.0.self_attn.out_proj.weight" in attn[0].param_names

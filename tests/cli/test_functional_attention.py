"""A network that calls ``F.scaled_dot_product_attention`` itself (as timm's ViT ``Attention`` does), not
through ``nn.MultiheadAttention``: on CPU torch runs it on a flash kernel without a forward-mode derivative,
so the Laplace predictives' Jacobian-vector products (taken where the factored output covariance does not
apply, here because of the LayerNorm) failed with an internal error (exit 1). They now run it on the
composite kernel, whatever module calls it."""

from __future__ import annotations

import json

import numpy as np
import torch

from tests.reference.user_files import import_user_file

USER_FILE = '''
import torch
from torch import nn
from torch.nn import functional as F


class PatchAttention(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.embed = nn.Linear(16, width)  # four 4x4 patches of an 8x8 image
        self.norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        patches = x.reshape(x.shape[0], 2, 4, 2, 4).permute(0, 1, 3, 2, 4).reshape(x.shape[0], 4, 16)
        q, k, v = self.qkv(self.norm(self.embed(patches))).unsqueeze(1).chunk(3, dim=-1)  # (B, 1 head, 4 tokens, width)
        return self.head(F.scaled_dot_product_attention(q, k, v).squeeze(1).mean(1))
'''


def test_probit_and_glm_run_through_functional_attention(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "attn.py").write_text(USER_FILE)
    torch.manual_seed(0)
    torch.save(import_user_file(tmp_path, "attn").PatchAttention().state_dict(), tmp_path / "model.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "noise.npz", x=rng.random((16, 1, 8, 8), dtype=np.float32))
    arch = ["--arch", "attn.py:PatchAttention"]
    r = run_cli("fit", "model.pt", *arch, "--data", "digits", "--limit", "32", "--method", "diag", "-o", "f.h5", "--quiet")
    assert r.code == 0, r.err
    r = run_cli("ood", "f.h5", *arch, "--against", "noise.npz", "--predictive", "map,probit,glm", "--no-tune",
                "--limit", "16", "--samples", "8", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)["in_distribution"]
    for kind in ("probit", "glm"):
        assert doc[kind]["n"] == doc["map"]["n"] == 16 and np.isfinite(doc[kind]["nll"])

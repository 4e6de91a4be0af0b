"""`uncert report --png` on a deep network (issue 20): every PNG stays within a screen, layers
beyond a screenful are pooled, and only a handful of σ pictures are written."""

from __future__ import annotations

import json

import torch
from PIL import Image

from uncert_cli.render.plots_report import MAX_PNG_PIXELS, MAX_SIGMA_MAPS

DEEP_NET = '''
import torch
from torch import nn


class Deep(nn.Module):
    """A conv stem with many wide channels, then 4 stages of 10 Linear layers each."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 96, 3, padding=1)
        self.stages = nn.ModuleList(
            nn.Sequential(*[nn.Linear(96 if (s, i) == (0, 0) else 12, 12) for i in range(10)]) for s in range(4)
        )
        self.head = nn.Linear(12, 10)

    def forward(self, x):
        h = torch.tanh(self.stem(x)).mean((2, 3))
        for stage in self.stages:
            for layer in stage:
                h = torch.tanh(layer(h))
        return self.head(h)
'''


def test_deep_network_pngs_are_capped_and_few(run_cli, tmp_path, monkeypatch) -> None:
    (tmp_path / "deepnet.py").write_text(DEEP_NET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import deepnet  # noqa: PLC0415 - the file written above

    torch.manual_seed(0)
    torch.save(deepnet.Deep().state_dict(), tmp_path / "deep.pt")
    factors = tmp_path / "deep.h5"
    r = run_cli("fit", tmp_path / "deep.pt", "--arch", "deepnet.py:Deep", "--data", "digits", "--limit", "64",
                "--method", "kfac", "-o", factors, "-q")
    assert r.code == 0, r.err
    monkeypatch.setenv("UNCERT_TRUST_ARCH", "1")
    r = run_cli("report", factors, "--png", tmp_path / "figs", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert len(doc["layers"]) == 42
    pngs = sorted((tmp_path / "figs").iterdir())
    assert {p.name for p in pngs} >= {"log_std_by_layer.png", "snr_hist.png", "kfac_spectra.png"}
    sigma = [p for p in pngs if p.name.startswith("sigma_")]
    assert 1 <= len(sigma) <= MAX_SIGMA_MAPS
    for png in pngs:
        width, height = Image.open(png).size
        assert width <= MAX_PNG_PIXELS and height <= MAX_PNG_PIXELS, (png.name, width, height)


def test_a_wide_convolution_shows_32_kernels_in_one_screen(tmp_path) -> None:
    from uncert_cli.analysis.layer_stats import LayerDetail
    from uncert_cli.render.plots_report import _sigma_heatmap

    torch.manual_seed(0)
    std = 0.5 + torch.rand(1024, 64, 3, 3, dtype=torch.float64)  # 1,024 output channels (was 18,477 px tall)
    detail = LayerDetail(name="conv5.0", kind="conv", weight_name="conv5.0.weight", weight_std=std,
                         std=std.reshape(-1), snr=std.reshape(-1), sigma_map=std.mean(1),
                         input_eigenvalues=None, output_eigenvalues=None)
    width, height = Image.open(_sigma_heatmap(detail, tmp_path / "s.png")).size
    assert width <= MAX_PNG_PIXELS and height <= 800

"""The README's first command: ``uncert demo`` runs offline on the embedded default."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.image import imread


def test_demo_runs_every_stage_offline(run_cli, tmp_path):
    out = tmp_path / "demo"
    r = run_cli("demo", "--out", out, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert (out / "digits_kfac.h5").is_file()
    assert doc["fit"]["method"] == "kfac" and doc["fit"]["n_data"] > 1000
    assert doc["report"]["layers"][0]["name"] == "fc1"
    ood = doc["ood"]
    assert ood["predictives"] == ["map", "probit", "glm", "mc"]
    for kind in ("map", "probit", "glm"):
        assert 0.5 < ood["ood"]["photo-patches"][kind]["auroc_entropy"] <= 1
    # The shipped digits model is a real classifier: the Laplace predictive keeps its accuracy.
    acc = {k: v["accuracy"] for k, v in ood["in_distribution"].items()}
    assert acc["map"] > 0.9 and abs(acc["glm"] - acc["map"]) < 0.02 and abs(acc["probit"] - acc["map"]) < 0.02
    # The demo writes one self-contained page per analysis and names them.
    assert [Path(p).name for p in doc["html"]] == ["report.html", "ood.html"]
    for page in doc["html"]:
        text = Path(page).read_text(encoding="utf-8")
        assert "<table" in text and text.count("data:image/png;base64,") >= 3
    for png in doc["report"]["pngs"] + doc["ood"]["pngs"]:
        assert imread(png).ndim == 3

"""``--html FILE``: one self-contained page per analysis, opened in a real headless Chromium.

Each page is written by the real CLI next to its ``--json`` document; the browser checks that
every image decodes, nothing is fetched from elsewhere, the console stays clean, a click on a
column header re-sorts the table, and the numbers on the page are the JSON's numbers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from uncert_cli.checkpoint import ModelMeta, save_model
from uncert_cli.models import MLP
from uncert_cli.render.html.page import fmt


@pytest.fixture(scope="module")
def factor_file(tmp_path_factory) -> Path:
    from uncert_cli.cli.main import main
    from uncert_cli.samples import sample_path

    out = tmp_path_factory.mktemp("html") / "digits.h5"
    code = main(["fit", str(sample_path("digits_mlp.safetensors")), "--data", "digits", "--method", "kfac",
                 "-o", str(out), "--quiet"])
    assert code == 0
    return out


def _track_checkpoints(folder: Path) -> list[Path]:
    kwargs = {"in_features": 64, "hidden": [12], "out_features": 10}
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(1, 8, 8), num_outputs=10,
                     dataset="digits")
    paths = []
    for step in (1, 2):
        torch.manual_seed(step)
        path = folder / f"run_epoch{step}.safetensors"
        save_model(MLP(**kwargs), meta, path)
        paths.append(path)
    return paths


def _command(kind: str, factors: Path, tmp: Path) -> list[str]:
    common = ["--json", "--html", str(tmp / f"{kind}.html")]
    if kind == "report":
        return ["report", str(factors), *common]
    if kind == "ood":
        return ["ood", str(factors), "--against", "photo-patches", "--grayscale", "--resize", "8,8", "--limit", "150",
                "--val-size", "100", "--predictive", "map,probit,glm", *common]
    if kind == "attack":
        return ["attack", str(factors), "--limit", "40", "--steps", "3", "--val-size", "100", *common]
    if kind == "prune":
        return ["prune", str(factors), "--evaluate", "--fraction", "0.3", "--limit", "150", "--fractions", "0.2,0.6",
                *common]
    return ["track", *map(str, _track_checkpoints(tmp)), "--data", "digits", "--limit", "100", *common]


def _numbers_from_json(kind: str, doc: dict) -> list[str]:
    """Cell texts the page must show, formatted as the page formats numbers."""
    if kind == "report":
        return [fmt(layer[k]).text for layer in doc["layers"] for k in ("posterior_std_mean", "variance_share")]
    if kind == "ood":
        return [fmt(doc["in_distribution"][p]["nll"]).text for p in doc["predictives"]] + [
            fmt(doc["ood"]["photo-patches"][p]["auroc_entropy"]).text for p in doc["predictives"]]
    if kind == "attack":
        return [fmt(a).text for curve in doc["untargeted"].values() for a in curve["accuracy"]]
    if kind == "prune":
        return [fmt(point["nll"]).text for point in doc["evaluation"]["points"]]
    return [fmt(point["effective_params"]).text for point in doc["checkpoints"]]


KINDS = ["report", "ood", "attack", "prune", "track"]


@pytest.mark.parametrize("kind", KINDS)
def test_page_is_self_contained_and_matches_json(run_cli, factor_file, tmp_path, kind):
    r = run_cli(*_command(kind, factor_file, tmp_path))
    assert r.code == 0, r.err
    doc = json.loads(r.out)  # stdout is only the JSON document
    page = (tmp_path / f"{kind}.html").read_text(encoding="utf-8")
    # Nothing is loaded from anywhere else: every src/href is inline data or an anchor.
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(ref.startswith(("data:image/png;base64,", "#")) for ref in refs), refs[:3]
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert page.count("<img") == len(re.findall(r'src="data:image/png;base64,', page)) and 'alt=""' not in page
    for anchor in re.findall(r'href="#([^"]+)"', page):  # thumbnails link to a figure on the same page
        assert f'id="{anchor}"' in page
    for text in _numbers_from_json(kind, doc):
        assert f">{text}<" in page, f"{text} from the JSON is not on the {kind} page"
    # Figures that existed only for the page are not named in the JSON.
    assert all(Path(p).exists() for p in doc.get("pngs", []))
    assert not list(tmp_path.glob(".*.tmp"))


def test_html_target_errors_are_one_line_and_write_nothing(run_cli, factor_file, tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    for target in (folder, tmp_path / "missing" / "r.html"):
        r = run_cli("report", factor_file, "--html", target)
        assert r.code == 2 and "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert list(folder.iterdir()) == [] and not (tmp_path / "missing").exists()


_SORT_CHECK = """
(() => {
  const tables = [...document.querySelectorAll('table.sortable')];
  for (const table of tables) {
    const rows = table.tBodies[0].rows;
    if (rows.length < 3) continue;
    const heads = [...table.tHead.rows[0].cells];
    for (let col = 0; col < heads.length; col++) {
      const keys = [...rows].map(r => r.cells[col].getAttribute('data-sort'));
      if (keys.some(k => k === null) || new Set(keys).size < 2) continue;
      const read = () => [...table.tBodies[0].rows].map(r => parseFloat(r.cells[col].getAttribute('data-sort')));
      heads[col].click();
      const up = read();
      heads[col].click();
      const down = read();
      return {column: heads[col].textContent, up, down, aria: heads[col].getAttribute('aria-sort')};
    }
  }
  return null;
})()
"""


@pytest.mark.parametrize("kind", KINDS)
def test_page_in_chromium(browser, run_cli, factor_file, tmp_path, kind):
    r = run_cli(*_command(kind, factor_file, tmp_path))
    assert r.code == 0, r.err
    browser.open(tmp_path / f"{kind}.html")
    images = browser.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth, i.alt])")
    assert images, "the page shows no figure"
    assert all(done and width > 0 and alt for done, width, alt in images), images
    assert browser.evaluate("document.querySelectorAll('table').length") >= 1
    sort = browser.evaluate(_SORT_CHECK)
    if kind != "track":  # every other page has a table of at least three rows with a numeric column
        assert sort is not None
    if sort is not None:
        assert sort["up"] == sorted(sort["up"]) and sort["down"] == sorted(sort["down"], reverse=True), sort
        assert sort["aria"] == "descending"
    assert browser.errors == [], browser.errors
    browser.screenshot(tmp_path / f"{kind}.png")
    assert (tmp_path / f"{kind}.png").stat().st_size > 5_000

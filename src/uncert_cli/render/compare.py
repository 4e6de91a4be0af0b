"""Presentation of ``uncert compare``: the JSON document (schema in docs/json.md), rich tables, PNGs."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from rich.table import Table
from rich.text import Text

from uncert_cli.analysis.compare import PosteriorComparison
from uncert_cli.core.atomic import in_memory_output
from uncert_cli.render import palette
from uncert_cli.render.cells import layer_cell, number_cell
from uncert_cli.render.console import stdout
from uncert_cli.render.layer_groups import top_layers

MAX_SCATTER_LAYERS = 12  # panels per figure: the layers holding the largest variance shares in the reference
_MAX_POINTS = 20_000  # points per panel (an even stride over the layer's parameters)
_DPI = 100


def file_section(provenance: dict[str, Any], covered_params: int) -> dict[str, Any]:
    """One compared file, from its attributes (``store.read_provenance``)."""
    return {
        "file": provenance["factors"],
        "method": provenance["method"],
        "fisher_type": provenance["fisher_type"],
        "n_data": provenance["n_data"],
        "prior_precision": provenance["prior_precision"],
        "prior_mode": provenance["prior_mode"],
        "covered_params": covered_params,
    }


def compare_document(result: PosteriorComparison, files: list[dict[str, Any]], fingerprint: str,
                     checkpoint: str, pngs: list[Path]) -> dict[str, Any]:
    return {
        "checkpoint": checkpoint,
        "fingerprint": fingerprint,
        "files": files,
        "criterion": result.criterion,
        "fraction": result.fraction,
        "layers": [
            {
                "name": layer.name,
                "params": layer.params,
                "files": [asdict(f) if f is not None else None for f in layer.files],
                "versus_first": [asdict(p) if p is not None else None for p in layer.versus_first],
            }
            for layer in result.layers
        ],
        "pngs": [str(p) for p in pngs],
    }


def labels(files: list[dict[str, Any]]) -> list[str]:
    """``A``, ``B``, ... : short column names for the files (the legend says which is which)."""
    return [chr(ord("A") + i) if i < 26 else f"F{i + 1}" for i in range(len(files))]


def print_compare(doc: dict[str, Any]) -> None:
    names = labels(doc["files"])
    for name, f in zip(names, doc["files"]):
        tau = f["prior_precision"]
        tau_text = f"{tau:g}" if isinstance(tau, (int, float)) else "per layer"
        stdout.print(Text.assemble((name, "bold"), f" {f['file']}: {f['method']}, N = {number_cell(f['n_data'], ',.6g')}, "
                                   f"τ = {tau_text}, {f['covered_params']:,} parameters"))
    # One table of per-file numbers and one per pair keep each within an 80-column terminal.
    per_file = Table(title="Per layer and file: σ² share, mean σ, σ²/σ²_prior")
    per_file.add_column("layer", no_wrap=True)
    per_file.add_column("params", justify="right")
    for name in names:
        for what in ("share", "σ mean", "ratio"):
            per_file.add_column(f"{name} {what}", justify="right", no_wrap=True)
    for layer in doc["layers"]:
        cells = []
        for f in layer["files"]:
            cells += (["–"] * 3 if f is None else
                      [number_cell(f["variance_share"], ".1%"), number_cell(f["posterior_std_mean"]),
                       number_cell(f["variance_ratio"], ".3f")])
        per_file.add_row(layer_cell(layer["name"]), f"{layer['params']:,}", *cells)
    stdout.print(per_file)
    for j, other in enumerate(names[1:]):
        pair = Table(title=f"{names[0]} against {other}: rank correlation of σ, shared pruning candidates "
                           f"({doc['criterion']}, {doc['fraction']:.0%} per layer), KL({names[0]} ‖ {other})")
        for column in ("layer", "Spearman σ", "top overlap", "KL (nats)", "KL / weight"):
            pair.add_column(column, justify="left" if column == "layer" else "right", no_wrap=True)
        for layer in doc["layers"]:
            p = layer["versus_first"][j]
            if p is None:
                pair.add_row(layer_cell(layer["name"]), "–", "–", "–", "–")
                continue
            pair.add_row(layer_cell(layer["name"]), number_cell(p["std_spearman"], ".3f"), number_cell(p["top_overlap"], ".1%"),
                         number_cell(p["kl"], ".4g"), number_cell(p["kl_per_weight"], ".3g"))
        stdout.print(pair)
    for png in doc["pngs"]:
        stdout.print(f"wrote {png}", soft_wrap=True)


# ------------------------------------------------------------------------------------------- PNGs
def write_compare_pngs(result: PosteriorComparison, directory: Path, files: list[str]) -> list[Path]:
    """Per compared file ``B``: one figure ``std_A_vs_<B>.png`` with a log-log scatter of per-weight σ,
    A against B, per layer (at most :data:`MAX_SCATTER_LAYERS`, those with A's largest variance shares),
    and the diagonal σ_A = σ_B.
    """
    names = labels([{}] * len(files))
    out: list[Path] = []
    shares = [layer.files[0].variance_share if layer.files[0] is not None else -1.0 for layer in result.layers]
    for j in range(1, len(files)):
        drawable = [layer.std[0] is not None and layer.std[j] is not None for layer in result.layers]
        chosen = top_layers(shares, MAX_SCATTER_LAYERS, drawable)  # network order
        if not chosen:
            continue
        path = directory / f"std_A_vs_{names[j]}.png"
        x_label, y_label = f"{names[0]} = {Path(files[0]).name}", f"{names[j]} = {Path(files[j]).name}"
        out.append(_scatter(result, chosen, j, path, x_label, y_label))
    return out


def _scatter(result: PosteriorComparison, chosen: list[int], j: int, path: Path, label_a: str, label_b: str) -> Path:
    cols = min(4, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows + 0.4))
    for k, i in enumerate(chosen):
        layer = result.layers[i]
        std_a, std_b = layer.std[0], layer.std[j]
        assert std_a is not None and std_b is not None  # the chosen layers are those every file covers
        a, b = std_a.numpy(), std_b.numpy()
        keep = np.linspace(0, a.size - 1, min(a.size, _MAX_POINTS)).astype(np.int64)
        a, b = a[keep], b[keep]
        positive = (a > 0) & (b > 0)
        a, b = a[positive], b[positive]
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.scatter(a, b, s=2, alpha=0.3, color=palette.BLUE, linewidths=0, rasterized=True)
        if a.size:
            low, high = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
            ax.plot([low, high], [low, high], color=palette.GREY, linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # minor labels of a short log range run into each other
            axis.set_minor_formatter(NullFormatter())
        if a.size:  # one scale on both axes, so the diagonal is the diagonal
            ax.set_xlim(low / 1.1, high * 1.1)
            ax.set_ylim(low / 1.1, high * 1.1)
        ax.set_title(f"{layer.name} ({layer.params:,})", fontsize=9)
        ax.tick_params(labelsize=7)
        if k % cols == 0:
            ax.set_ylabel("σ in B", fontsize=8)
        ax.set_xlabel("σ in A", fontsize=8)
    fig.suptitle(f"per-weight posterior std, {label_a} against {label_b} (dashed: equal)", fontsize=10)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    with in_memory_output(path) as image:
        fig.savefig(image, format="png", dpi=_DPI)
    return path

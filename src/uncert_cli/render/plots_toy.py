"""PNG of ``uncert toy`` (Ritter et al. 2018, Fig. 1): one panel per structure × (default, tuned).

Each panel: the predictive mean (red), ±1/2/3 standard-deviation bands (observation noise included),
the noiseless function x³ (dashed), training points (black) and validation points (hollow). A last
column shows the HMC reference, or says why it is missing. Presentation only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from uncert_cli.core.atomic import in_memory_output
from uncert_cli.render.palette import VERMILLION
from uncert_cli.workflows.toy import ToyCurve, ToyResult

_DPI = 110
_YLIM = (-250.0, 250.0)


def _panel(ax, result: ToyResult, curve: ToyCurve | None, title: str, note: str = "") -> None:
    x = np.asarray(result.x)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(*_YLIM)
    ax.grid(alpha=0.25, linewidth=0.5)
    if curve is not None:
        mean, std = np.asarray(curve.mean), np.asarray(curve.std)
        for k, alpha in ((3, 0.12), (2, 0.2), (1, 0.3)):
            ax.fill_between(x, mean - k * std, mean + k * std, color=VERMILLION, alpha=alpha, linewidth=0,
                            label="±1/2/3 std" if k == 1 else None)
        ax.plot(x, mean, color=VERMILLION, linewidth=1.6, label="predictive mean")
    ax.plot(x, result.truth, "k--", linewidth=1.0, label="y = x³")
    ax.scatter(*result.train, s=14, color="black", zorder=3, label="train")
    ax.scatter(*result.val, s=14, facecolors="none", edgecolors="0.35", zorder=3, label="val")
    ax.set_title(title, fontsize=10)
    if note:
        ax.text(0.5, 0.3, note, transform=ax.transAxes, ha="center", va="center", fontsize=8.5, wrap=True,
                bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6"})


def _subtitle(curve: ToyCurve) -> str:
    text = f"N={curve.n_data:g}, τ={curve.prior_precision:g}"
    if curve.val_nll is not None:
        text += f", val NLL {curve.val_nll:.2f}"
    return text


def toy_figure(result: ToyResult, path: Path) -> Path:
    """Write the figure to ``path`` (atomically)."""
    methods = list(dict.fromkeys(c.method for c in result.curves))
    tuned_rows = any(c.tuned for c in result.curves)
    rows = 2 if tuned_rows else 1
    cols = len(methods) + 1
    fig = Figure(figsize=(3.6 * cols, 3.3 * rows + 0.6), dpi=_DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
    for j, method in enumerate(methods):
        for i, tuned in enumerate([False, True][:rows]):
            curve = next((c for c in result.curves if c.method == method and c.tuned == tuned), None)
            title = curve.label if curve else method
            _panel(axes[i][j], result, curve, f"{title}\n{_subtitle(curve)}" if curve else title)
    ref = result.reference
    _panel(axes[0][-1], result, ref, ref.label if ref else "HMC reference",
           "" if ref else result.reference_note.replace(": ", ":\n", 1).replace(" (", "\n(", 1))
    if rows == 2:
        axes[1][-1].axis("off")
        axes[1][-1].text(0.02, 0.5,
                         "Rows: top = fit defaults (N = #train, τ = 1);\n"
                         "bottom = (N, τ) tuned on the 20 val points.\n"
                         f"Bands: ±1/2/3 std of the {result.predictive} predictive,\n"
                         f"observation noise σ = {result.noise_std:g} included.",
                         transform=axes[1][-1].transAxes, fontsize=9, va="center")
    for ax in axes[-1]:
        ax.set_xlabel("x")
    for row in axes:
        row[0].set_ylabel("y")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path = Path(path)
    with in_memory_output(path) as image:
        fig.savefig(image, format="png")
    return path

"""PNG plots of ``uncert ood`` and ``uncert attack`` (matplotlib, Agg backend; presentation only).

* ``entropy_icdf.png`` -- inverse empirical CDF of the predictive entropy per predictive, one panel per
  data set (Ritter et al. 2018, Fig. 2: the fraction of examples with entropy ≥ h; curves to the top
  right mean more uncertainty).
* ``entropy_hist.png`` -- entropy histograms in vs out of distribution, one row per predictive.
* ``reliability.png`` -- reliability diagram per predictive (accuracy vs confidence in 15 bins).
* ``attack_untargeted.png`` / ``attack_targeted.png`` -- accuracy and mean entropy per step size / step.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from uncert_cli.analysis.attack import AttackReport  # noqa: E402
from uncert_cli.analysis.ood import OODReport  # noqa: E402
from uncert_cli.core.atomic import in_memory_output, make_output_directory  # noqa: E402
from uncert_cli.render.palette import BLUE, PREDICTIVE_COLORS, PREDICTIVE_STYLES, SERIES, VERMILLION  # noqa: E402

COLORS = PREDICTIVE_COLORS
STYLES = PREDICTIVE_STYLES


def _prepare(folder: Path) -> Path:
    return make_output_directory(folder, param="png")


def _save(fig: plt.Figure, path: Path) -> Path:
    with in_memory_output(path) as image:
        fig.savefig(image, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def _icdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(h, fraction ≥ h)`` for a step plot of the inverse empirical CDF."""
    h = np.sort(values)
    return h, 1.0 - np.arange(h.size) / h.size


def _entropy_limit(report: OODReport) -> tuple[float, bool]:
    """``(largest entropy to draw, whether it is log C)``: the maximum, log C, when the class count is
    recorded; else (a state dict fitted with ``--arch`` records none) just above the largest value seen.
    """
    classes = report.settings.get("num_classes")
    if isinstance(classes, int) and classes > 1:
        return math.log(classes), True
    seen = [float(np.max(v)) for r in report.results.values() for v in (r.entropy_in, *r.entropy_ood.values()) if v.size]
    return max([*seen, 1e-3]) * 1.02, False


def write_ood_plots(report: OODReport, folder: Path) -> list[Path]:
    """Write the three ``ood`` figures into ``folder``; returns their paths."""
    folder = _prepare(folder)
    return [_entropy_icdf(report, folder), _entropy_hist(report, folder), _reliability(report, folder)]


def _entropy_icdf(report: OODReport, folder: Path) -> Path:
    sets = [f"{report.in_name} (in)"] + [f"{n} (OOD)" for n in report.ood_names]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 3.8), squeeze=False, sharey=True)
    h_max, is_log_c = _entropy_limit(report)
    for i, title in enumerate(sets):
        ax = axes[0, i]
        for kind, r in report.results.items():
            values = r.entropy_in if i == 0 else r.entropy_ood[report.ood_names[i - 1]]
            h, frac = _icdf(values)
            ax.step(h, frac, where="post", color=COLORS.get(kind), linestyle=STYLES.get(kind, "-"), lw=1.8, label=kind)
        ax.set_xlim(0, h_max * 1.02)
        ax.set_ylim(0, 1.02)
        if is_log_c:
            ax.axvline(h_max, color="#bbbbbb", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("predictive entropy h (nats)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("fraction of examples with entropy ≥ h")
    axes[0, -1].legend(loc="upper right", frameon=True)
    fig.suptitle("Inverse empirical CDF of predictive entropy (higher on OOD = better)")
    fig.tight_layout()
    return _save(fig, folder / "entropy_icdf.png")


def _entropy_hist(report: OODReport, folder: Path) -> Path:
    kinds = list(report.results)
    fig, axes = plt.subplots(len(kinds), 1, figsize=(7.5, 2.6 * len(kinds)), squeeze=False, sharex=True)
    h_max, _ = _entropy_limit(report)
    bins = np.linspace(0, h_max, 41)
    for row, kind in enumerate(kinds):
        ax, r = axes[row, 0], report.results[kind]
        ax.hist(r.entropy_in, bins=bins, density=True, alpha=0.55, color="#555555", label=f"{report.in_name} (in)")
        for j, name in enumerate(report.ood_names):
            ax.hist(r.entropy_ood[name], bins=bins, density=True, histtype="step", lw=2, color=SERIES[j % len(SERIES)],
                    label=f"{name} (OOD)")
        ax.set_yscale("log")
        ax.set_ylabel("density (log)")
        ax.set_title(f"{kind}", loc="left", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper center", fontsize=8, ncol=min(4, 1 + len(report.ood_names)))
    axes[-1, 0].set_xlabel("predictive entropy (nats)")
    fig.suptitle("Predictive entropy in vs out of distribution")
    fig.tight_layout()
    return _save(fig, folder / "entropy_hist.png")


def _reliability(report: OODReport, folder: Path) -> Path:
    kinds = list(report.results)
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.8 * len(kinds), 4.0), squeeze=False)
    for i, kind in enumerate(kinds):
        ax = axes[0, i]
        d = report.results[kind].in_distribution
        rb = d.reliability
        centers = (rb.edges[:-1] + rb.edges[1:]) / 2
        width = rb.edges[1] - rb.edges[0]
        filled = rb.counts > 0
        ax.bar(centers[filled], rb.accuracy[filled], width=width * 0.95, color=COLORS.get(kind, BLUE),
               alpha=0.75, edgecolor="black", lw=0.5, label="accuracy")
        # Mean confidence per bin as a tick: the vertical distance to the bar top is the calibration gap.
        ax.hlines(rb.confidence[filled], centers[filled] - width * 0.45, centers[filled] + width * 0.45,
                  color=VERMILLION, lw=2.2, label="mean confidence")
        for c, n in zip(centers[filled], rb.counts[filled]):  # few examples = a noisy bar
            ax.text(c, 0.015, f"{n}", ha="center", va="bottom", fontsize=6, rotation=90, color="black",
                    bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 0.8})
        ax.plot([0, 1], [0, 1], color="black", lw=1, linestyle="--", label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_title(f"{kind}: ECE {d.ece:.4f}, acc {d.accuracy:.2%}", fontsize=10)
        ax.set_xlabel("confidence (max probability)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy")
    axes[0, 0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Reliability on {report.in_name} (15 bins; numbers: examples per bin)")
    fig.tight_layout()
    return _save(fig, folder / "reliability.png")


def write_attack_plots(report: AttackReport, folder: Path) -> list[Path]:
    """Accuracy and mean entropy curves of the attacks; returns the paths written."""
    folder = _prepare(folder)
    paths = []
    if report.untargeted:
        fig, (ax_acc, ax_ent) = plt.subplots(1, 2, figsize=(10, 3.8))
        for kind, c in report.untargeted.items():
            style = {"color": COLORS.get(kind), "linestyle": STYLES.get(kind, "-"), "marker": "o", "ms": 3, "label": kind}
            ax_acc.plot(c.step_sizes, c.accuracy, **style)
            ax_ent.plot(c.step_sizes, c.mean_entropy, **style)
        _axes(ax_acc, "step size η (× data range)", "accuracy on the true class", (0, 1.02))
        _axes(ax_ent, "step size η (× data range)", "mean predictive entropy (nats)", None)
        ax_acc.legend()
        fig.suptitle("Untargeted fast-gradient-sign attack")
        fig.tight_layout()
        paths.append(_save(fig, folder / "attack_untargeted.png"))
    if report.targeted:
        fig, (ax_acc, ax_hit, ax_ent) = plt.subplots(1, 3, figsize=(14, 3.8))
        for kind, curve in report.targeted.items():
            line: dict[str, Any] = {"color": COLORS.get(kind), "linestyle": STYLES.get(kind, "-"), "lw": 1.8, "label": kind}
            ax_acc.plot(curve.steps, curve.accuracy, **line)
            ax_hit.plot(curve.steps, curve.target_rate, **line)
            ax_ent.plot(curve.steps, curve.mean_entropy, **line)
        target = next(iter(report.targeted.values())).target
        _axes(ax_acc, "attack step", "accuracy on the true class", (0, 1.02))
        _axes(ax_hit, "attack step", f"fraction predicted as {target}", (0, 1.02))
        _axes(ax_ent, "attack step", "mean predictive entropy (nats)", None)
        ax_acc.legend()
        fig.suptitle(f"Targeted attack towards class {target}")
        fig.tight_layout()
        paths.append(_save(fig, folder / "attack_targeted.png"))
    return paths


def _axes(ax: plt.Axes, xlabel: str, ylabel: str, ylim: tuple[float, float] | None) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)

"""The tuning grid's front for ``benchmarks/ood.py --pareto``: which (N, τ) meet issue 13's targets, as a
Markdown table and a PNG per checkpoint.

Targets (issue 13), each against the same checkpoint's rows of the same run: accuracy within 0.3 points of
the MAP's, NLL at most 2% above the MAP's, ECE at most 1.5× the MAP's, and entropy AUROC above
laplace-torch's best row on every OOD set. A grid point is on the NLL/AUROC front when no other point
has both a lower NLL and a higher notMNIST AUROC.
"""

from __future__ import annotations

from pathlib import Path

OOD_SETS = ("notmnist", "fashionmnist", "kmnist")


def _tag(row: dict) -> str:
    return row["method"].split(":")[0]


def grid_point(row: dict) -> tuple[float, float]:
    """``(N, τ)`` of a grid row (from its label ``"TAG: grid N=… τ=…"`` in runs that did not store them)."""
    if "n_data" in row:
        return row["n_data"], row["prior_precision"]
    n, tau = row["method"].split("grid N=")[1].split(" τ=")
    return float(n), float(tau)


def references(quality: list[dict], tag: str) -> tuple[dict, dict[str, float]]:
    """The checkpoint's MAP row and laplace-torch's best entropy AUROC per OOD set."""
    rows = [r for r in quality if _tag(r) == tag]
    map_row = next(r for r in rows if r["method"].endswith("uncert map"))
    peers = [r for r in rows if "laplace-torch" in r["method"]]
    best = {k: max((r[f"auroc_{k}"] for r in peers), default=float("nan")) for k in OOD_SETS}
    return map_row, best


def targets_met(row: dict, map_row: dict, best: dict[str, float]) -> dict[str, bool]:
    """Which of the four targets a row meets."""
    return {
        "accuracy": row["accuracy"] >= map_row["accuracy"] - 0.003,
        "nll": row["nll"] <= 1.02 * map_row["nll"],
        "ece": row["ece"] <= 1.5 * map_row["ece"],
        "auroc": all(row[f"auroc_{k}"] > best[k] for k in OOD_SETS),
    }


def front(rows: list[dict]) -> set[int]:
    """Indices of the rows no other row beats on both NLL (lower) and notMNIST AUROC (higher)."""
    return {i for i, r in enumerate(rows)
            if not any(o["nll"] < r["nll"] and o["auroc_notmnist"] > r["auroc_notmnist"] for o in rows)}


def pareto_table(quality: list[dict], pareto: list[dict], tag: str) -> str:
    """Markdown: every grid point of one checkpoint with its metrics, front membership and targets met."""
    map_row, best = references(quality, tag)
    rows = [r for r in pareto if _tag(r) == tag]
    on_front = front(rows)
    head = ("| N | τ | held-out NLL | held-out entropy | held-out ECE | accuracy | NLL (× MAP) | ECE (× MAP) "
            "| AUROC notMNIST | FashionMNIST | KMNIST | front | targets met |")
    lines = [head, "|" + "---:|" * 11 + "---|---|"]
    for i, r in enumerate(rows):
        met = targets_met(r, map_row, best)
        lines.append(
            f"| {grid_point(r)[0]:,.0f} | {grid_point(r)[1]:.3g} | {r['val_nll']:.4f} | {r['val_entropy']:.3f} "
            f"| {r.get('val_ece', float('nan')):.4f} | {r['accuracy']:.2%} | {r['nll']:.4f} ({r['nll'] / map_row['nll']:.3f}) "
            f"| {r['ece']:.4f} ({r['ece'] / map_row['ece']:.2f}) | {r['auroc_notmnist']:.3f} | {r['auroc_fashionmnist']:.3f} "
            f"| {r['auroc_kmnist']:.3f} | {'●' if i in on_front else ''} | {', '.join(k for k, v in met.items() if v) or '—'} |")
    return "\n".join(lines)


def _path_style(method: str) -> tuple[str, str, str] | None:
    """Marker, colour and legend label of a documented path's row (None: not drawn)."""
    label = method.split(": ", 1)[1]
    if label == "uncert map":
        return "s", "black", "MAP"
    if "probit widest (default)" in label:
        return "*", "black", "default: fit → ood (widest)"
    if "tune widest" in label:
        return "o", "tab:purple", "README: fit → tune → ood (widest)"
    if "tune marglik, --prior-structure layer" in label:
        return "P", "tab:brown", "fit → tune marglik (layer) → ood"
    if "tune marglik" in label:
        return "X", "tab:brown", "fit → tune marglik → ood"
    if "laplace-torch" in label:
        return "^", "tab:red", "laplace-torch " + label.rsplit(", ", 1)[1]
    return None


def pareto_png(quality: list[dict], pareto: list[dict], tag: str, path: Path) -> Path:
    """Two panels over the grid: NLL and ECE (each ÷ the MAP's) against notMNIST AUROC, one line per N,
    with the targets' limits, laplace-torch's best AUROC and the rows of the documented paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter

    map_row, best = references(quality, tag)
    rows = [r for r in pareto if _tag(r) == tag]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, metric, limit in ((axes[0], "nll", 1.02), (axes[1], "ece", 1.5)):
        for n in sorted({grid_point(r)[0] for r in rows}):
            line = sorted((r for r in rows if grid_point(r)[0] == n), key=lambda r: grid_point(r)[1])
            ax.plot([r[metric] / map_row[metric] for r in line], [r["auroc_notmnist"] for r in line], "o-", ms=3,
                    label=f"grid, N = {n:,.0f} (τ 10⁻² … 10⁴)")
        for r in quality:
            style = _path_style(r["method"]) if _tag(r) == tag else None
            if style is not None:
                ax.plot(r[metric] / map_row[metric], r["auroc_notmnist"], style[0], color=style[1], ms=8, mfc="none",
                        mew=1.5, label=style[2] if metric == "nll" else None)
        ax.axvline(limit, color="grey", ls="--", lw=1)
        ax.axhline(best["notmnist"], color="tab:red", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlim(0.3 if metric == "ece" else 0.95, 8 if metric == "ece" else 3)
        ticks = [0.5, 1, 1.5, 2, 4, 8] if metric == "ece" else [1, 1.5, 2, 3]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FixedFormatter([f"{t:g}" for t in ticks]))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{metric.upper()} ÷ MAP's ({map_row[metric]:.4f}); target ≤ {limit:g}")
    axes[0].set_ylabel("entropy AUROC, notMNIST")
    axes[0].text(0.02, best["notmnist"], " laplace-torch's best", color="tab:red", fontsize=7, va="bottom",
                 transform=axes[0].get_yaxis_transform())
    axes[0].legend(fontsize=6.5, loc="lower right")
    fig.suptitle(f"{tag}: the probit predictive over the tuning grid (full test sets)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

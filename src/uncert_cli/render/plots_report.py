"""PNG figures for ``uncert report``, ``uncert prune --evaluate`` and ``uncert track``.

Headless: figures are built with :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot, no
display, no global state) and written atomically. Presentation only: the numbers come from
:mod:`uncert_cli.analysis`; the only arithmetic here is what a plot needs (logs, subsampling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from mpl_toolkits.axes_grid1 import make_axes_locatable

from uncert_cli.analysis.layer_stats import LayerDetail, UncertaintyReport
from uncert_cli.analysis.pruning import BASELINE, PruneEvaluation
from uncert_cli.analysis.tracking import TrackResult
from uncert_cli.atomic import in_memory_output, make_output_directory
from uncert_cli.render import palette

_DPI = 110
_MAX_VIOLIN_POINTS = 20_000  # a KDE over millions of points is slow and looks the same
_CMAP = "viridis"


def png_directory(path: Path) -> Path:
    """Create ``path`` (and parents) for PNGs; refuse a path that is a file or cannot be created."""
    return make_output_directory(path, "--png")


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    with in_memory_output(path) as image:
        fig.savefig(image, format="png", dpi=_DPI, bbox_inches="tight")
    return path


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _subsample(values: np.ndarray, limit: int = _MAX_VIOLIN_POINTS) -> np.ndarray:
    # A regular stride over the sorted values keeps every quantile of the distribution.
    if values.size <= limit:
        return values
    return np.sort(values)[np.linspace(0, values.size - 1, limit).astype(np.int64)]


# ----------------------------------------------------------------------------------------- report
def write_report_pngs(report: UncertaintyReport, directory: Path, title: str) -> list[Path]:
    """All report figures into ``directory``; returns the files written."""
    out = [_log_std_violin(report, directory / "log_std_by_layer.png", title)]
    for detail in report.details:
        if detail.sigma_map is not None:
            out.append(_sigma_heatmap(detail, directory / f"sigma_{_safe_name(detail.name)}.png"))
    if report.first_layer is not None:
        out.append(_first_layer(report, directory / "first_layer_inputs.png"))
    if any(d.input_eigenvalues is not None for d in report.details):
        out.append(_spectra(report.details, directory / "kfac_spectra.png", title))
    out.append(_snr_histogram(report.details, directory / "snr_hist.png", title))
    return out


def _log_std_violin(report: UncertaintyReport, path: Path, title: str) -> Path:
    names = [d.name for d in report.details]
    data = [_subsample(np.log10(np.maximum(_np(d.std), 1e-300))) for d in report.details]
    fig = Figure(figsize=(max(5.0, 1.1 * len(names) + 2), 4.5))
    ax = fig.add_subplot()
    positions = np.arange(1, len(names) + 1)
    parts = ax.violinplot(data, positions=positions, showextrema=False, widths=0.8)
    for body in parts["bodies"]:
        body.set_alpha(0.45)
    ax.boxplot(data, positions=positions, widths=0.18, showfliers=False, whis=(1, 99),
               medianprops={"color": "black"})
    for layer, x in zip(report.layers, positions):
        # The prior std is the ceiling of the posterior std (eigen prior mode): mark it per layer.
        ax.hlines(-0.5 * math.log10(layer.prior_precision), x - 0.4, x + 0.4, colors=palette.VERMILLION, linestyles="--")
    ax.set_xticks(positions, names, rotation=30 if len(names) > 6 else 0)
    ax.set_xlabel("layer (network order)")
    ax.set_ylabel("log10 posterior std σ")
    ax.set_title(f"{title}\nposterior std per weight (box: quartiles, whiskers 1-99%; red: prior std)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _sigma_heatmap(detail: LayerDetail, path: Path) -> Path:
    values = _np(detail.sigma_map)
    norm = LogNorm(vmin=max(values.min(), 1e-12), vmax=max(values.max(), 1e-12 * 1.01))
    if values.ndim == 2:  # Linear: the (out, in) weight matrix
        rows, cols = values.shape
        aspect = "auto" if max(rows, cols) / max(1, min(rows, cols)) > 4 else "equal"
        fig = Figure(figsize=(7.5, 6))
        ax = fig.add_subplot()
        # Large matrices have more entries than pixels: average them rather than alias.
        smooth = "antialiased" if max(rows, cols) > 300 else "nearest"
        im = ax.imshow(values, cmap=_CMAP, norm=norm, aspect=aspect, interpolation=smooth)
        ax.set_xlabel(f"input unit (0..{cols - 1})")
        ax.set_ylabel(f"output unit (0..{rows - 1})")
        ax.set_title(f"{detail.name}: posterior std σ of {detail.weight_name} ({rows}×{cols})")
        # A colour bar as tall as the image, however wide the matrix is.
        cax = make_axes_locatable(ax).append_axes("right", size="4%", pad=0.1)
        fig.colorbar(im, cax=cax, label="σ (log scale)")
        return _save(fig, path)
    # Convolution: one small kernel image per output channel (σ averaged over input channels).
    n = values.shape[0]
    cols = min(8, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(1.5 * cols + 1.2, 1.5 * rows + 0.9))
    axes = fig.subplots(rows, cols, squeeze=False)
    im = None
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k < n:
            im = ax.imshow(values[k], cmap=_CMAP, norm=norm, interpolation="nearest")
            ax.set_title(f"out {k}", fontsize=8)
        else:
            ax.axis("off")
    fig.suptitle(f"{detail.name}: σ of each output channel's kernel (mean over input channels)")
    fig.colorbar(im, ax=axes, label="σ (log scale)", shrink=0.9)
    return _save(fig, path)


def _first_layer(report: UncertaintyReport, path: Path) -> Path:
    first = report.first_layer
    assert first is not None
    values = _np(first.values)
    if values.ndim == 1:
        values = values.reshape(1, -1)
    if values.ndim == 2:
        values = values[None]
    channels = values.shape[0]
    fig = Figure(figsize=(4.2 * min(channels, 3) + 1.0, 4.2 * math.ceil(channels / 3)))
    axes = fig.subplots(math.ceil(channels / 3), min(channels, 3), squeeze=False)
    im = None
    for c, ax in enumerate(axes.flat):
        if c >= channels:
            ax.axis("off")
            continue
        im = ax.imshow(values[c], cmap="magma", vmin=values.min(), vmax=values.max(), interpolation="nearest")
        ax.set_xlabel("x (pixel)" if first.kind == "pixels" else "kernel column")
        ax.set_ylabel("y (pixel)" if first.kind == "pixels" else "kernel row")
        if channels > 1:
            ax.set_title(f"input channel {c}", fontsize=9)
    what = (
        "mean σ of the weights reading each input pixel"
        if first.kind == "pixels"
        else "mean σ per kernel tap (shared over positions)"
    )
    fig.suptitle(f"first layer {first.layer}: {what}\n(bright = the model is unsure how to use it)")
    fig.colorbar(im, ax=axes, label="mean posterior std σ", shrink=0.9)
    return _save(fig, path)


def _spectra(details: Sequence[LayerDetail], path: Path, title: str) -> Path:
    fig = Figure(figsize=(11, 4.5))
    ax_in, ax_out = fig.subplots(1, 2, sharey=True)
    kron = [d for d in details if d.input_eigenvalues is not None and d.output_eigenvalues is not None]
    top = max(float(_np(e).max()) for d in kron for e in (d.input_eigenvalues, d.output_eigenvalues))
    floor = max(top, 1e-300) * 1e-12  # below this an eigenvalue is round-off of a zero (dead unit, constant input)
    for d in kron:
        for ax, eig in ((ax_in, d.input_eigenvalues), (ax_out, d.output_eigenvalues)):
            lam = np.sort(_np(eig))[::-1]
            shown = lam[lam > floor]
            zeros = lam.size - shown.size
            label = f"{d.name} ({lam.size}" + (f", {zeros} ≈ 0 not shown)" if zeros else ")")
            ax.plot(np.arange(1, shown.size + 1), shown, label=label)
    for ax, which in ((ax_in, "input factor A = E[a aᵀ]"), (ax_out, "output factor G (pre-activation curvature)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue rank")
        ax.set_title(which)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    ax_in.set_ylabel("eigenvalue")
    fig.suptitle(f"{title}: KFAC factor spectra")
    return _save(fig, path)


def _snr_histogram(details: Sequence[LayerDetail], path: Path, title: str) -> Path:
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    all_snr = [np.log10(np.maximum(_np(d.snr), 1e-8)) for d in details]
    lo = min(float(np.percentile(s, 0.5)) for s in all_snr)
    hi = max(float(s.max()) for s in all_snr)
    bins = np.linspace(lo, max(hi, lo + 1e-6), 60)
    for d, s in zip(details, all_snr):
        # Density, so that layers of very different sizes are comparable.
        ax.hist(s, bins=bins, histtype="step", density=True, linewidth=1.6, label=d.name)
    ax.axvline(0.0, color="black", linestyle="--", linewidth=1)
    ax.text(0.0, 0.97, " SNR = 1", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    ax.set_xlabel("log10 SNR = log10(|μ| / σ)   (left: weight indistinguishable from 0)")
    ax.set_ylabel("density")
    ax.set_title(f"{title}: signal-to-noise ratio per weight")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------ prune
_STYLE = {"snr": palette.BLUE, "variance-ratio": palette.ORANGE, "obd": palette.GREEN, BASELINE: palette.BLACK}


def write_prune_png(evaluation: PruneEvaluation, path: Path) -> Path:
    """Accuracy (classification) and NLL against the pruned fraction, one line per criterion."""
    criteria = list(dict.fromkeys(p.criterion for p in evaluation.points))
    has_acc = evaluation.unpruned.accuracy is not None
    fig = Figure(figsize=(11 if has_acc else 6, 4.5))
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    metrics = (["accuracy"] if has_acc else []) + ["nll"]
    for ax, metric in zip(axes, metrics):
        for criterion in criteria:
            pts = [p for p in evaluation.points if p.criterion == criterion]
            xs = [0.0] + [p.fraction for p in pts]
            ys = [getattr(evaluation.unpruned, metric)] + [getattr(p, metric) for p in pts]
            baseline = criterion == BASELINE
            ax.plot(xs, ys, marker="o", color=_STYLE.get(criterion), linestyle="--" if baseline else "-",
                    linewidth=2 if baseline else 1.6, label=f"{criterion} (baseline)" if baseline else criterion)
        ax.set_xlabel("fraction of weights pruned (set to 0)")
        ax.set_ylabel("test accuracy" if metric == "accuracy" else "mean NLL per example")
        if metric == "nll":
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(
        f"Pruning the MAP network: {evaluation.dataset} {evaluation.split} ({evaluation.examples:,} examples, "
        f"{evaluation.total_candidates:,} candidate weights)"
    )
    return _save(fig, path)


# ------------------------------------------------------------------------------------------ track
def write_track_png(result: TrackResult, path: Path) -> Path:
    """Mean posterior std, variance ratio and effective parameters per layer over the checkpoints."""
    steps = [p.step for p in result.points]
    use_steps = all(s is not None for s in steps)
    xs = steps if use_steps else list(range(1, len(result.points) + 1))
    fig = Figure(figsize=(15, 4.5))
    axes = fig.subplots(1, 3)
    panels = (
        ("posterior_std_mean", "mean posterior std σ", False),
        ("variance_ratio", "variance ratio σ²/σ²_prior (1 = not identified)", False),
        ("effective_params", "effective parameters γ", True),
    )
    for ax, (key, label, log) in zip(axes, panels):
        for j, name in enumerate(result.layer_names):
            ys = [getattr(p.layers[j], key) for p in result.points]
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_xlabel("epoch (from the file name)" if use_steps else "checkpoint")
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        if key == "variance_ratio":
            ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.set_xticks(xs)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Uncertainty over training: {result.method} Laplace on {result.dataset} (N = {result.n_data:,}, "
        f"τ = {result.prior_precision:g})"
    )
    return _save(fig, path)

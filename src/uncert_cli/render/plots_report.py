"""PNG figures for ``uncert report``, ``uncert prune --evaluate`` and ``uncert track``.

Headless: figures are built with :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot, no
display, no global state) and written atomically. Presentation only: the numbers come from
:mod:`uncert_cli.analysis`; the only arithmetic here is what a plot needs (logs, subsampling).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from mpl_toolkits.axes_grid1 import make_axes_locatable

from uncert_cli.analysis.layer_stats import LayerDetail, UncertaintyReport
from uncert_cli.analysis.pruning import BASELINE, PruneEvaluation
from uncert_cli.core.atomic import in_memory_output, make_output_directory
from uncert_cli.render import palette
from uncert_cli.render.layer_groups import group_layers, top_layers
from uncert_cli.workflows.track import TrackResult

_DPI = 110
_MAX_VIOLIN_POINTS = 20_000  # a KDE over millions of points is slow and looks the same
_CMAP = "viridis"
# A deep network's figures stay one screen in size and readable (issue 20: 10,859 px wide violins,
# 110-entry legends and 60 PNGs for shufflenet):
MAX_PNG_PIXELS = 1600  # no PNG is wider or taller
MAX_VIOLINS = 24  # beyond, layers are pooled by module path (layer1.0.conv1 -> layer1.0 -> layer1)
MAX_SIGMA_MAPS = 6  # σ pictures only for the layers holding the largest shares of the variance
MAX_KERNELS = 32  # conv output channels in a σ picture (half with the smallest, half the largest mean σ)
MAX_CURVES = 8  # lines in the spectra and SNR figures


def png_directory(path: Path) -> Path:
    """Create ``path`` (and parents) for PNGs; refuse a path that is a file or cannot be created."""
    return make_output_directory(path, param="png")


def _save(fig: Figure, path: Path) -> Path:
    canvas = FigureCanvasAgg(fig)
    # Lower the resolution rather than write a picture larger than a screen: the tight bounding box
    # (plus savefig's 0.1-inch pad on each side) times the dpi is the PNG's size.
    box = fig.get_tightbbox(canvas.get_renderer())
    dpi = min(_DPI, 0.98 * MAX_PNG_PIXELS / (max(box.width, box.height) + 0.2))
    with in_memory_output(path) as image:
        fig.savefig(image, format="png", dpi=dpi, bbox_inches="tight")
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
    """The report figures into ``directory``; returns the files written.

    At most :data:`MAX_SIGMA_MAPS` σ pictures (the layers with the largest variance shares whose σ
    can be drawn as a picture: Linear weights, conv kernels larger than 1×1), so a deep network
    gets a handful of figures, not one per layer.
    """
    out = [_log_std_violin(report, directory / "log_std_by_layer.png", title)]
    shares = [layer.variance_share for layer in report.layers]
    drawable = [_has_picture(d) for d in report.details]
    for i in top_layers(shares, MAX_SIGMA_MAPS, drawable):
        detail = report.details[i]
        out.append(_sigma_heatmap(detail, directory / f"sigma_{_safe_name(detail.name)}.png"))
    if report.first_layer is not None:
        out.append(_first_layer(report, directory / "first_layer_inputs.png"))
    if any(d.input_eigenvalues is not None for d in report.details):
        out.append(_spectra(report, directory / "kfac_spectra.png", title))
    out.append(_snr_histogram(report, directory / "snr_hist.png", title))
    return out


def _has_picture(detail: LayerDetail) -> bool:
    """A σ map worth looking at: a weight matrix, or conv kernels with more than one tap (a 1×1
    conv's map would be one pixel per channel), whose σ varies by more than 0.1% (a uniform
    picture, e.g. σ = prior std everywhere, says nothing the violin plot does not).
    """
    m = detail.sigma_map
    if m is None or not (m.ndim == 2 or m[0].numel() > 1):
        return False
    lo, hi = float(m.min()), float(m.max())
    return hi > lo * (1 + 1e-3)


def _log_std_violin(report: UncertaintyReport, path: Path, title: str) -> Path:
    groups = group_layers([d.name for d in report.details], MAX_VIOLINS)
    pooled = len(groups) < len(report.details)
    data = []
    for g in groups:
        stds = np.concatenate([_np(report.details[i].std) for i in g.members])
        data.append(_subsample(np.log10(np.maximum(stds, 1e-300))))
    labels = [f"{g.label} ({len(g.members)})" if pooled and len(g.members) > 1 else g.label for g in groups]
    fig = Figure(figsize=(min(14.0, max(5.0, 0.6 * len(groups) + 2)), 5.0))
    ax = fig.add_subplot()
    positions = np.arange(1, len(groups) + 1)
    parts = ax.violinplot(data, positions=positions, showextrema=False, widths=0.8)
    for body in cast(list[Any], parts["bodies"]):
        body.set_alpha(0.45)
    ax.boxplot(data, positions=positions, widths=0.18, showfliers=False, whis=(1, 99),
               medianprops={"color": "black"})
    for g, x in zip(groups, positions):
        # The prior std is the ceiling of the posterior std (eigen prior mode): mark it per layer
        # (a pooled group shows its smallest and largest).
        priors = {-0.5 * math.log10(report.layers[i].prior_precision) for i in g.members}
        ax.hlines(sorted(priors), x - 0.4, x + 0.4, colors=palette.VERMILLION, linestyles="--")
    many = len(groups) > 6 or sum(len(label) for label in labels) > 50  # labels would overlap
    ax.set_xticks(positions, labels, rotation=40 if many else 0, ha="right" if many else "center", fontsize=9)
    ax.set_xlabel("layer (network order)" + (f"; {len(report.details)} layers pooled by module path, "
                                             "(n) = layers in a group" if pooled else ""))
    ax.set_ylabel("log10 posterior std σ")
    ax.set_title(f"{title}\nposterior std per weight (box: quartiles, whiskers 1-99%; red: prior std)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _sigma_norm(values: np.ndarray) -> tuple[Normalize, str]:
    """A log colour scale when σ spans a decade or more; a linear one otherwise (a log scale over
    0.9996..1 labels its colour bar 9.99995×10⁻¹, which nobody can read).
    """
    lo, hi = max(float(np.nanmin(values)), 1e-12), max(float(np.nanmax(values)), 1e-12 * 1.01)
    if hi / lo >= 10:
        return LogNorm(vmin=lo, vmax=hi), "σ (log scale)"
    return Normalize(vmin=lo, vmax=max(hi, lo * (1 + 1e-9))), "σ"


def _bar_format(norm: Normalize) -> str | None:
    # Plain numbers on a linear bar (no "1e-9+1" offset text); LogNorm keeps its own ticks.
    return None if isinstance(norm, LogNorm) else "%.5g"


def _sigma_heatmap(detail: LayerDetail, path: Path) -> Path:
    values = _np(detail.sigma_map)
    norm, bar_label = _sigma_norm(values)
    if values.ndim == 2:  # Linear: the (out, in) weight matrix
        rows, cols = values.shape
        aspect: Literal["auto", "equal"] = "auto" if max(rows, cols) / max(1, min(rows, cols)) > 4 else "equal"
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
        fig.colorbar(im, cax=cax, label=bar_label, format=_bar_format(norm))
        return _save(fig, path)
    # Convolution: one small kernel image per output channel (σ averaged over input channels); of
    # many channels, those with the smallest and the largest mean σ, in index order.
    total = values.shape[0]
    shown = np.arange(total)
    if total > MAX_KERNELS:
        # Both ends: the channels the data pinned down best and those it left closest to the prior.
        order = np.argsort(values.reshape(total, -1).mean(axis=1), kind="stable")
        shown = np.sort(np.concatenate([order[: MAX_KERNELS // 2], order[-(MAX_KERNELS // 2):]]))
    # One image of all kernels in a grid, separated by blank (NaN) lines: one axes draws and saves
    # in a fraction of the time of one axes per channel (32 subplots took seconds per figure).
    n = shown.size
    cols = min(8, n)
    rows = math.ceil(n / cols)
    kh, kw = values.shape[1], values.shape[2]
    mosaic = np.full((rows * (kh + 1) - 1, cols * (kw + 1) - 1), np.nan)
    for k, channel in enumerate(shown):
        r, c = divmod(k, cols)
        mosaic[r * (kh + 1): r * (kh + 1) + kh, c * (kw + 1): c * (kw + 1) + kw] = values[channel]
    fig = Figure(figsize=(min(12.0, 1.3 * cols + 1.5), min(12.0, 1.3 * rows * max(1.0, kh / kw) + 1.0)))
    ax = fig.add_subplot()
    im = ax.imshow(mosaic, cmap=_CMAP, norm=norm, interpolation="nearest")
    for k, channel in enumerate(shown):
        r, c = divmod(k, cols)
        ax.text(c * (kw + 1) + (kw - 1) / 2, r * (kh + 1) - 0.55, f"out {channel}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_frame_on(False)
    which = (f"of {total} output channels, the {n // 2} with the smallest and the {n // 2} with the largest mean σ"
             if n < total else f"all {n} output channels")
    ax.set_title(f"{detail.name}: σ of each {kh}×{kw} kernel, mean over input channels\n({which})", pad=14)
    fig.colorbar(im, ax=ax, label=bar_label, shrink=0.8, format=_bar_format(norm))
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
    assert im is not None  # at least one channel is drawn
    fig.colorbar(im, ax=axes, label="mean posterior std σ", shrink=0.9)
    return _save(fig, path)


def _spectra(report: UncertaintyReport, path: Path, title: str) -> Path:
    fig = Figure(figsize=(12, 5))
    ax_in, ax_out = fig.subplots(1, 2, sharey=True)
    kron = [i for i, d in enumerate(report.details) if d.input_eigenvalues is not None and d.output_eigenvalues is not None]
    # Layers spread evenly over the network (first and last included): the layers with the most
    # variance are those the curvature barely reaches, whose spectra are mostly zeros.
    chosen = sorted({kron[round(j)] for j in np.linspace(0, len(kron) - 1, min(MAX_CURVES, len(kron)))})
    details = [report.details[i] for i in chosen]
    top = max(float(_np(e).max()) for d in details for e in (d.input_eigenvalues, d.output_eigenvalues))
    floor = max(top, 1e-300) * 1e-12  # below this an eigenvalue is round-off of a zero (dead unit, constant input)
    drawn = {ax_in: 0, ax_out: 0}
    for d in details:
        for ax, eig in ((ax_in, d.input_eigenvalues), (ax_out, d.output_eigenvalues)):
            lam = np.sort(_np(eig))[::-1]
            shown = lam[lam > floor]
            zeros = lam.size - shown.size
            label = f"{d.name} ({lam.size}" + (f", {zeros} ≈ 0 not shown)" if zeros else ")")
            ax.plot(np.arange(1, shown.size + 1), shown, label=label, marker="o" if shown.size <= 3 else None)
            drawn[ax] += shown.size
    for ax, which in ((ax_in, "input factor A = E[a aᵀ]"), (ax_out, "output factor G (pre-activation curvature)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue rank")
        ax.set_title(which)
        ax.grid(alpha=0.3, which="both")
        if drawn[ax]:
            ax.legend(fontsize=8)
        else:  # an empty panel would look like a plotting failure
            ax.text(0.5, 0.5, "every eigenvalue ≈ 0:\nno curvature reaches these layers", transform=ax.transAxes,
                    ha="center", va="center", fontsize=10)
    ax_in.set_ylabel("eigenvalue")
    some = ""
    if len(details) < len(kron):
        some = f" of {len(details)} of {len(kron)} Kronecker layers, evenly spaced in network order"
    fig.suptitle(f"{title}: KFAC factor spectra{some}")
    return _save(fig, path)


def _snr_histogram(report: UncertaintyReport, path: Path, title: str) -> Path:
    details = report.details
    groups = group_layers([d.name for d in details], MAX_CURVES)
    pooled = len(groups) < len(details)
    fig = Figure(figsize=(8.5, 4.8))
    ax = fig.add_subplot()
    all_snr = [np.log10(np.maximum(np.concatenate([_np(details[i].snr) for i in g.members]), 1e-8)) for g in groups]
    lo = min(float(np.percentile(s, 0.5)) for s in all_snr)
    hi = max(float(s.max()) for s in all_snr)
    bins = np.linspace(lo, max(hi, lo + 1e-6), 60)
    for g, s in zip(groups, all_snr):
        # Density, so that layers of very different sizes are comparable.
        label = f"{g.label} ({len(g.members)} layers)" if len(g.members) > 1 else g.label
        ax.hist(s, bins=bins.tolist(), histtype="step", density=True, linewidth=1.6, label=label)
    ax.axvline(0.0, color="black", linestyle="--", linewidth=1)
    ax.text(0.0, 0.97, " SNR = 1", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    ax.set_xlabel("log10 SNR = log10(|μ| / σ)   (left: weight indistinguishable from 0)")
    ax.set_ylabel("density")
    ax.set_title(f"{title}: signal-to-noise ratio per weight" + (" (layers pooled by module path)" if pooled else ""))
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

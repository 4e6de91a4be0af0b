"""Presentation of ``uncert report`` and ``uncert track``: JSON documents and rich tables.

The JSON schemas are documented in ``docs/json.md``; keys are stable.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from uncert_cli.analysis.layer_stats import BARELY_IDENTIFIED_RATIO, UncertaintyReport
from uncert_cli.render.cells import accuracy_text, number_cell
from uncert_cli.render.console import stdout
from uncert_cli.render.layer_groups import block_rows
from uncert_cli.storage.factor_file import FactorFile, json_attribute
from uncert_cli.workflows.report import FactorFileReport
from uncert_cli.workflows.track import TrackResult


def model_section(factors: FactorFile, total_params: int, covered_params: int) -> dict[str, Any]:
    meta = factors.model_meta
    return {
        "arch": meta.arch,
        "input_shape": list(meta.input_shape) if meta.input_shape else None,
        "task": meta.task,
        "num_outputs": meta.num_outputs,
        "parameters": total_params,
        "covered_params": covered_params,
        "checkpoint": factors.checkpoint_path,
        "fingerprint": factors.fingerprint,
    }


def fit_section(factors: FactorFile) -> dict[str, Any]:
    fit = factors.fit
    return {
        "file": str(factors.path),
        "method": fit.get("method"),
        "fisher_type": fit.get("fisher_type"),
        "dataset": fit.get("dataset"),
        "split": fit.get("split"),
        "n_data": fit.get("n_data"),
        "map_accuracy": fit.get("map_accuracy"),
        "seconds": fit.get("seconds"),
        # requires_grad=False parameters the fit left out (files from before this field: unknown, None)
        "frozen_parameters": json_attribute(fit.get("frozen_parameters")),
    }


def prior_section(prior_precision: dict[str, float], n_data: float, prior_mode: str) -> dict[str, Any]:
    values = set(prior_precision.values())
    return {
        # One number when every layer shares τ, else {module: τ} (after per-layer tuning).
        "prior_precision": next(iter(values)) if len(values) == 1 else dict(prior_precision),
        "n_data": n_data,
        "prior_mode": prior_mode,
        "barely_identified_threshold": BARELY_IDENTIFIED_RATIO,
    }


def report_title(report: FactorFileReport) -> str:
    """``"f.h5 (kfac, τ=1)"`` for the figures (``τ=per layer`` after per-layer tuning)."""
    posterior = report.opened.posterior
    taus = set(posterior.prior_precision.values())
    tau = f"{next(iter(taus)):g}" if len(taus) == 1 else "per layer"
    return f"{Path(report.opened.factors.path).name} ({posterior.curvature.method}, τ={tau})"


def factor_file_report_document(report: FactorFileReport, pngs: list[Path]) -> dict[str, Any]:
    """The ``--json`` document of ``uncert report`` for :func:`~uncert_cli.workflows.report.report_factor_file`'s result."""
    posterior, factors = report.opened.posterior, report.opened.factors
    return report_document(
        report.layers,
        model=model_section(factors, report.total_params, report.layers.covered_params),
        fit=fit_section(factors),
        prior=prior_section(posterior.prior_precision, posterior.n_data, posterior.prior_mode),
        pngs=pngs,
    )


def report_document(
    report: UncertaintyReport, *, model: dict[str, Any], fit: dict[str, Any], prior: dict[str, Any], pngs: list[Path]
) -> dict[str, Any]:
    verdict = report.verdict
    return {
        "model": model,
        "fit": fit,
        "prior": prior,
        "summary": {
            "covered_params": report.covered_params,
            "effective_params": report.effective_params,
            "entropy": report.entropy,
            "total_variance": report.total_variance,
            "barely_identified_fraction": verdict.barely_identified_fraction,
            "top_layer": verdict.top_layer,
            "top_variance_share": verdict.top_variance_share,
            "top_barely_identified_fraction": verdict.top_barely_identified_fraction,
        },
        "layers": [asdict(layer) for layer in report.layers],
        "verdict": verdict.text,
        "pngs": [str(p) for p in pngs],
    }


def _table(title: str, columns: list[str]) -> Table:
    table = Table(title=title)
    for k, name in enumerate(columns):
        table.add_column(name, justify="left" if k == 0 or name == "type" else "right", no_wrap=True)
    return table


def print_report(doc: dict[str, Any]) -> None:
    model, fit, prior = doc["model"], doc["fit"], doc["prior"]
    tau = prior["prior_precision"]
    tau_text = f"{tau:g}" if isinstance(tau, (int, float)) else "per layer"
    shape = "×".join(map(str, model["input_shape"])) if model["input_shape"] else "?"
    acc = accuracy_text(fit.get("map_accuracy"), "; ")
    stdout.print(Text.assemble(
        (str(model['arch'] or 'model'), "bold"), f"  input {shape}  {model['task']}\n"
        f"{model['parameters']:,} parameters, {model['covered_params']:,} with a posterior{acc}\n"
        f"{fit['method']} Laplace ({fit['fisher_type']} fisher) on {fit['dataset']} {fit.get('split') or ''}, "
        f"N = {number_cell(fit['n_data'], ',')}\n"
        f"prior precision τ = {tau_text}, N used = {prior['n_data']:g}, prior mode {prior['prior_mode']}"
    ))
    frozen = fit.get("frozen_parameters") or []
    if frozen and model["covered_params"] < model["parameters"]:
        shown = ", ".join(frozen[:4]) + (f" and {len(frozen) - 4} more" if len(frozen) > 4 else "")
        stdout.print(f"not covered: frozen parameters ({shown}); refit with `uncert fit ... --include-frozen` to cover them")
    # Two narrow tables rather than one wide one: both fit an 80-column terminal.
    spread = _table(
        "Posterior std per layer (network order)",
        ["layer", "type", "params", "σ mean", "σ median", "σ max", "σ/|μ| median"],
    )
    identified = _table(
        "How much the data identified each layer",
        ["layer", "var share", "var ratio", "γ eff.", "γ/P", "H/param", "barely id."],
    )
    labels = block_rows([layer["name"] for layer in doc["layers"]])
    for layer, (heading, label) in zip(doc["layers"], labels):
        if heading is not None:  # one row naming the block; its layers follow by their path inside it
            spread.add_row(Text(heading, style="bold"))
            identified.add_row(Text(heading, style="bold"))
        spread.add_row(
            label, layer["kind"], f"{layer['params']:,}", number_cell(layer["posterior_std_mean"]),
            number_cell(layer["posterior_std_median"]), number_cell(layer["posterior_std_max"]),
            number_cell(layer["relative_std_median"]),
        )
        identified.add_row(
            label, number_cell(layer["variance_share"], ".1%"), number_cell(layer["variance_ratio"], ".3f"),
            number_cell(layer["effective_params"], ",.1f"), number_cell(layer["effective_params"] / layer["params"], ".1%"),
            number_cell(layer["entropy_per_param"], ".3f"), number_cell(layer["barely_identified_fraction"], ".1%"),
        )
    stdout.print(spread)
    stdout.print(identified)
    s = doc["summary"]
    stdout.print(
        f"γ = {s['effective_params']:,.1f} effective parameters of {s['covered_params']:,}; "
        f"entropy {s['entropy']:,.1f} nats. var ratio = mean σ²/σ²_prior; "
        f"barely id. = share of weights with σ²/σ²_prior > {prior['barely_identified_threshold']:g}; "
        "H/param = Gaussian entropy per parameter (nats)."
    )
    stdout.print(Text.assemble("\n", ("Verdict:", "bold"), f" {doc['verdict']}"))
    for png in doc["pngs"]:
        stdout.print(f"wrote {png}", soft_wrap=True)


# ------------------------------------------------------------------------------------------ track
TRACK_KEYS = ("posterior_std_mean", "variance_ratio", "effective_params", "barely_identified_fraction", "variance_share")


def track_document(result: TrackResult, pngs: list[Path]) -> dict[str, Any]:
    return {
        "method": result.method,
        "dataset": result.dataset,
        "n_data": result.n_data,
        "prior_precision": result.prior_precision,
        "layers": result.layer_names,
        "checkpoints": [
            {
                "checkpoint": p.checkpoint,
                "step": p.step,
                "map_accuracy": p.map_accuracy,
                "effective_params": p.effective_params,
                "layers": [{"name": layer.name, **{k: getattr(layer, k) for k in TRACK_KEYS}} for layer in p.layers],
            }
            for p in result.points
        ],
        "pngs": [str(p) for p in pngs],
    }


def print_track(doc: dict[str, Any]) -> None:
    # One narrow table per quantity (rows: checkpoints, columns: layers) rather than one wide one.
    panels = (
        ("posterior_std_mean", "mean posterior std σ", ".3g"),
        ("variance_ratio", "variance ratio σ²/σ²_prior", ".3f"),
        ("effective_params", "effective parameters γ", ",.0f"),
    )
    for key, label, spec in panels:
        table = Table(title=f"{label} over training ({doc['method']} on {doc['dataset']}, N = {doc['n_data']:,})")
        table.add_column("checkpoint", no_wrap=True)
        table.add_column("MAP acc.", justify="right")
        for name in doc["layers"]:
            table.add_column(name, justify="right")
        for point in doc["checkpoints"]:
            acc = point["map_accuracy"]
            table.add_row(
                Path(point["checkpoint"]).stem, f"{acc:.2%}" if acc is not None else "–",
                *[format(layer[key], spec) for layer in point["layers"]],
            )
        stdout.print(table)
    for png in doc["pngs"]:
        stdout.print(f"wrote {png}", soft_wrap=True)

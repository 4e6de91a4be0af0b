"""One HTML page per analysis, built from the command's JSON document and its PNGs.

Each builder takes exactly what ``--json`` prints (so the page and the JSON cannot disagree) plus the
figures the command wrote, and returns a :class:`~uncert_cli.render.html.page.Page`.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from uncert_cli import __version__
from uncert_cli.render.html.page import Cell, Figure, Page, Section, Table, fmt, table_from_records

__all__ = ["provenance", "report_page", "ood_page", "attack_page", "prune_page", "track_page"]

_FIGURE_TEXT = {
    "log_std_by_layer": "Distribution of log10 posterior std per layer; the dashed red line is the prior std.",
    "first_layer_inputs": "Mean posterior std of the first layer's weights per input pixel (or kernel tap).",
    "kfac_spectra": "Eigenvalues of every Kronecker factor: fast decay means few directions carry the curvature.",
    "snr_hist": "log10 signal-to-noise |μ|/σ per layer: weights on the left are pruning candidates.",
    "entropy_icdf": "Fraction of examples with predictive entropy ≥ h (Ritter et al. 2018, Fig. 2): curves further "
                    "up and right mean more uncertainty; out-of-distribution curves should lie above in-distribution ones.",
    "entropy_hist": "Predictive entropy in (grey) and out of distribution (lines), per predictive.",
    "reliability": "Reliability diagram: bars at the diagonal mean the confidence matches the accuracy.",
    "attack_untargeted": "Accuracy and mean entropy under one fast-gradient-sign step of growing size.",
    "attack_targeted": "Accuracy, rate of predicting the target class, and entropy over repeated targeted steps.",
    "prune_evaluation": "Accuracy and NLL of the MAP network with a growing fraction of weights set to zero.",
    "track": "Mean posterior std, variance ratio and effective parameters per layer over the checkpoints.",
}


def provenance(base: dict[str, Any], data: str | None = None) -> dict[str, Any]:
    """The run's provenance: the factor file's record, the data used, this uncert and the date."""
    values = {k: v for k, v in base.items() if v is not None}
    if data is not None:
        values["data"] = data
    values["report_by"] = f"uncert {__version__}"
    values["date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return values


def _figure(path: str | Path) -> Figure:
    path = Path(path)
    key = path.stem
    text = _FIGURE_TEXT.get(key) or (f"Posterior std of layer {key[len('sigma_'):]}" if key.startswith("sigma_") else key)
    return Figure(path, alt=text, caption=text)


def _layer_figure(pngs: list[str], layer: str) -> Figure | None:
    for png in pngs:
        if Path(png).stem == f"sigma_{layer.replace('/', '_')}" or Path(png).stem == f"sigma_{layer}":
            figure = _figure(png)
            figure.anchor = f"layer-{Path(png).stem}"
            return figure
    return None


def report_page(doc: dict[str, Any], base: dict[str, Any]) -> Page:
    """``uncert report``: per-layer table with each layer's plot in its row, then the figures."""
    pngs = list(doc.get("pngs") or [])
    layer_figures = {layer["name"]: _layer_figure(pngs, layer["name"]) for layer in doc["layers"]}
    has_plots = any(f is not None for f in layer_figures.values())
    columns = ["layer"] + (["σ plot"] if has_plots else []) + ["type", "structure", "params", "σ mean", "σ median", "σ max",
               "σ/|μ| median", "variance share", "variance ratio", "γ effective", "barely identified"]
    rows = []
    for layer in doc["layers"]:
        row = [Cell(layer["name"])]
        if has_plots:
            figure = layer_figures[layer["name"]]
            row.append(Cell("", figure=figure) if figure is not None else Cell("–"))
        row += [Cell(layer["kind"]), Cell(str(layer.get("structure", ""))), fmt(layer["params"]),
               fmt(layer["posterior_std_mean"]), fmt(layer["posterior_std_median"]), fmt(layer["posterior_std_max"]),
               fmt(layer["relative_std_median"]), fmt(layer["variance_share"]), fmt(layer["variance_ratio"]),
               fmt(layer["effective_params"]), fmt(layer["barely_identified_fraction"])]
        rows.append(row)
    summary = doc["summary"]
    model = doc["model"]
    overview = Table(["quantity", "value"], [
        [Cell("parameters (all / with a posterior)"), Cell(f"{model['parameters']:,} / {model['covered_params']:,}")],
        [Cell("effective parameters γ"), fmt(summary["effective_params"])],
        [Cell("entropy (nats)"), fmt(summary["entropy"])],
        [Cell("total posterior variance Σσ²"), fmt(summary["total_variance"])],
        [Cell("share of weights barely identified"), fmt(summary["barely_identified_fraction"])],
    ])
    others = [_figure(p) for p in pngs if not Path(p).stem.startswith("sigma_") or not has_plots]
    return Page(
        title=f"uncert report: {Path(doc['fit']['file']).name}",
        provenance=provenance({**base, "n_data": doc["prior"]["n_data"], "prior_precision": doc["prior"]["prior_precision"]}),
        sections=[
            Section("Verdict", paragraphs=[doc["verdict"]], tables=[overview],
                    how_to_read="γ counts the directions the data determined (MacKay 1992); a weight is barely "
                                "identified when the data removed less than 10% of its prior variance."),
            Section("Where the uncertainty lives, layer by layer", tables=[Table(columns, rows)],
                    how_to_read="Click a column header to sort. Variance share: the layer's part of the total posterior "
                                "variance (shares add up to 1). Variance ratio σ²/σ²_prior: near 1 the data did not "
                                "identify the weights (they are still at the prior), near 0 it pinned them down."),
            Section("Figures", figures=others) if others else Section("Figures", paragraphs=["No figures."]),
            *([Section("Each layer's posterior std", figures=[f for f in layer_figures.values() if f is not None],
                       how_to_read="One panel per layer (the thumbnails in the table link here): bright cells are "
                                   "weights the data left uncertain.")] if has_plots else []),
        ],
    )


def _predictive_table(doc: dict[str, Any], section: str, keys: list[tuple[str, str]]) -> Table:
    rows = [[Cell(kind)] + [fmt(doc[section][kind].get(k)) for k, _ in keys] for kind in doc["predictives"]
            if doc[section].get(kind) is not None]
    return Table(["predictive"] + [h for _, h in keys], rows)


def ood_page(doc: dict[str, Any], base: dict[str, Any]) -> Page:
    """``uncert ood``: calibration, OOD detection and own-error detection per predictive."""
    in_keys = [("accuracy", "accuracy"), ("nll", "NLL"), ("brier", "Brier"), ("ece", "ECE"), ("mean_entropy", "mean entropy")]
    ood_keys = [("auroc_entropy", "AUROC (entropy)"), ("aupr_entropy", "AUPR (entropy)"), ("fpr95_entropy", "FPR@95 (entropy)"),
                ("auroc_max_prob", "AUROC (max prob)"), ("mean_entropy", "mean entropy")]
    ood_rows = []
    for name, per_kind in doc["ood"].items():
        for kind in doc["predictives"]:
            metrics = per_kind.get(kind)
            if metrics is not None:
                ood_rows.append([Cell(name), Cell(kind), fmt(metrics.get("n"))] + [fmt(metrics.get(k)) for k, _ in ood_keys])
    hyper_rows = []
    for kind, hp in doc["hyperparameters"].items():
        if hp is not None:
            hyper_rows.append([Cell(kind), fmt(hp.get("prior_precision")), fmt(hp.get("n_data")), Cell(str(hp.get("prior_mode"))),
                               Cell(str(hp.get("source"))), fmt(hp.get("validation_nll"))])
    mis_keys = [("n_wrong", "errors"), ("mean_entropy_correct", "entropy when right"),
                ("mean_entropy_wrong", "entropy when wrong"), ("auroc_entropy", "AUROC (entropy)")]
    sections = [
        Section(f"In distribution: {doc['in_distribution_data']} ({doc['n_eval']:,} examples)",
                tables=[_predictive_table(doc, "in_distribution", in_keys)],
                how_to_read="Lower NLL, Brier and ECE are better; ECE is the gap between confidence and accuracy "
                            "(0 = perfectly calibrated). The Laplace predictives should keep the MAP's accuracy."),
        Section("Out of distribution", tables=[Table(["OOD set", "predictive", "n"] + [h for _, h in ood_keys], ood_rows)],
                how_to_read="AUROC is the chance that a random out-of-distribution input gets a higher score than a random "
                            "in-distribution one: 0.5 means the model cannot tell them apart, 1 means it always can. "
                            "FPR@95 is the share of in-distribution inputs flagged when 95% of OOD inputs are caught "
                            "(lower is better)."),
        Section("Detecting its own mistakes", tables=[_predictive_table(doc, "misclassification", mis_keys)],
                how_to_read="AUROC of the entropy for telling wrong predictions from right ones (Ritter et al. §5.4); "
                            "0.5 is chance."),
    ]
    if hyper_rows:
        sections.append(Section("Hyperparameters", tables=[Table(
            ["predictive", "τ", "N", "prior mode", "source", "validation NLL"], hyper_rows)],
            how_to_read="source: tuned on held-out data, taken from the file, or given on the command line."))
    sections.append(Section("Figures", figures=[_figure(p) for p in doc.get("pngs") or []]))
    return Page(f"uncert ood: {Path(doc['factors']).name}", provenance(base, doc["in_distribution_data"]), sections)


def attack_page(doc: dict[str, Any], base: dict[str, Any]) -> Page:
    """``uncert attack``: accuracy and entropy per step size (untargeted) and per step (targeted)."""
    sections = []
    if doc.get("untargeted"):
        rows = []
        for kind, curve in doc["untargeted"].items():
            for eta, acc, ent in zip(curve["step_sizes"], curve["accuracy"], curve["mean_entropy"]):
                rows.append([Cell(kind), fmt(eta), fmt(acc), fmt(ent)])
        sections.append(Section("Untargeted fast-gradient-sign attack", tables=[
            Table(["predictive", "step size η", "accuracy", "mean entropy"], rows)],
            how_to_read="A model that knows it is being fooled keeps a high entropy as its accuracy falls; "
                        "η is a fraction of the data's range per input dimension."))
    if doc.get("targeted"):
        rows = []
        for kind, curve in doc["targeted"].items():
            for step, acc, rate, ent in zip(curve["steps"], curve["accuracy"], curve["target_rate"], curve["mean_entropy"]):
                rows.append([Cell(kind), fmt(step), fmt(acc), fmt(rate), fmt(ent)])
        sections.append(Section(f"Targeted attack towards class {doc.get('target_class')}", tables=[
            Table(["predictive", "step", "accuracy", "target rate", "mean entropy"], rows)],
            how_to_read="The target rate is the share of inputs pushed into the target class; a lower rate and a "
                        "higher entropy at the same step mean a more robust predictive."))
    sections.append(Section("Figures", figures=[_figure(p) for p in doc.get("pngs") or []]))
    return Page(f"uncert attack: {Path(doc['factors']).name}", provenance(base, doc.get("data")), sections)


def prune_page(doc: dict[str, Any], base: dict[str, Any]) -> Page:
    """``uncert prune``: the selection's counts and the evaluation curves against magnitude pruning."""
    sections = []
    selection = doc.get("selection")
    if selection:
        sections.append(Section(
            f"Selection: {selection['pruned']:,} of {selection['total_candidates']:,} weights by {selection['criterion']}",
            paragraphs=[selection["score"]],
            tables=[table_from_records(selection["counts"], [("layer", "layer"), ("param", "parameter"),
                    ("candidates", "candidates"), ("pruned", "pruned"), ("fraction", "fraction")])],
            how_to_read="Where the pruned weights come from: a layer with a high fraction holds many weights the data "
                        "left uncertain."))
    evaluation = doc.get("evaluation")
    if evaluation:
        points = table_from_records(evaluation["points"], [("criterion", "criterion"), ("fraction", "fraction"),
                                    ("pruned", "pruned"), ("accuracy", "accuracy"), ("nll", "NLL")])
        comparison = table_from_records(evaluation["comparison"], [("criterion", "criterion"),
                                        ("better_accuracy", "better accuracy (count)"), ("better_nll", "better NLL (count)"),
                                        ("mean_accuracy_difference", "mean accuracy diff."),
                                        ("mean_nll_difference", "mean NLL diff.")])
        figures = [_figure(evaluation["png"])] if evaluation.get("png") else []
        sections.append(Section(
            f"Pruning curves on {evaluation['dataset']} ({evaluation['examples']:,} examples)",
            tables=[points, comparison], figures=figures,
            how_to_read="Each criterion against magnitude pruning at the same fractions: a positive accuracy "
                        "difference (negative NLL difference) means the criterion pruned better."))
    return Page(f"uncert prune: {Path(doc['factors']).name}", provenance(base), sections)


def track_page(doc: dict[str, Any], base: dict[str, Any]) -> Page:
    """``uncert track``: each layer's uncertainty over the checkpoints of a training run."""
    columns = ["checkpoint", "step", "MAP accuracy", "γ (network)"]
    rows = []
    for point in doc["checkpoints"]:
        rows.append([Cell(Path(point["checkpoint"]).stem), fmt(point["step"]), fmt(point["map_accuracy"]),
                     fmt(point["effective_params"])])
    per_layer = []
    for point in doc["checkpoints"]:
        for layer in point["layers"]:
            per_layer.append([Cell(Path(point["checkpoint"]).stem), Cell(layer["name"]), fmt(layer["posterior_std_mean"]),
                              fmt(layer["variance_ratio"]), fmt(layer["effective_params"]), fmt(layer["variance_share"])])
    return Page(
        f"uncert track: {len(doc['checkpoints'])} checkpoints",
        provenance(base, doc["dataset"]),
        [
            Section("Checkpoints", tables=[Table(columns, rows)],
                    how_to_read="One Laplace fit per checkpoint with the same data and prior."),
            Section("Per layer", tables=[Table(["checkpoint", "layer", "σ mean", "variance ratio", "γ effective",
                                                "variance share"], per_layer)],
                    how_to_read="As training goes on, layers whose variance ratio falls are being pinned down by "
                                "the data; a ratio that stays near 1 means the layer's weights are still at the prior."),
            Section("Figures", figures=[_figure(p) for p in doc.get("pngs") or []]),
        ],
    )

"""Presentation of ``uncert ood`` and ``uncert attack``: JSON documents and rich tables (computes nothing).

The JSON keys are documented in ``docs/json.md``.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from rich import box
from rich.table import Table

from uncert_cli.analysis.attack import AttackReport
from uncert_cli.analysis.ood import Hyperparameters, OODReport
from uncert_cli.render.console import stdout


def _hyper(hp: Hyperparameters | None) -> dict[str, Any] | None:
    if hp is None:
        return None
    return {
        "prior_precision": hp.prior_precision,
        "n_data": hp.n_data,
        "prior_mode": hp.prior_mode,
        "source": hp.source,
        "validation_nll": hp.validation_nll,
        "grid": hp.grid,
        "objective": hp.objective,
        "nll_tolerance": hp.nll_tolerance,
        "map_validation_nll": hp.map_validation_nll,
        "at_grid_edge": hp.at_grid_edge,
    }


def ood_document(report: OODReport) -> dict[str, Any]:
    """The ``--json`` document of ``uncert ood``."""
    kinds = list(report.results)
    doc: dict[str, Any] = {
        "command": "ood",
        **report.settings,
        "in_distribution_data": report.in_name,
        "n_eval": report.n_eval,
        "n_validation": report.n_validation,
        "predictives": kinds,
        "hyperparameters": {k: _hyper(r.hyperparameters) for k, r in report.results.items()},
        "samples": {k: r.samples for k, r in report.results.items()},
        "seconds": {k: r.seconds for k, r in report.results.items()},
        "in_distribution": {},
        "reliability": {},
        "misclassification": {},
        "ood": {name: {} for name in report.ood_names},
    }
    for kind, r in report.results.items():
        d = r.in_distribution
        doc["in_distribution"][kind] = {
            "n": d.n, "accuracy": d.accuracy, "nll": d.nll, "brier": d.brier, "ece": d.ece,
            "mean_entropy": d.mean_entropy,
        }
        rb = d.reliability
        doc["reliability"][kind] = {
            "edges": rb.edges.tolist(), "counts": rb.counts.tolist(),
            "accuracy": rb.accuracy.tolist(), "confidence": rb.confidence.tolist(),
        }
        doc["misclassification"][kind] = asdict(r.misclassification)
        for name, o in r.ood.items():
            doc["ood"][name][kind] = {
                "n": o.n,
                "mean_entropy": o.mean_entropy,
                "auroc_entropy": o.entropy.auroc,
                "aupr_entropy": o.entropy.aupr,
                "fpr95_entropy": o.entropy.fpr_at_95_tpr,
                "auroc_max_prob": o.max_prob.auroc,
                "aupr_max_prob": o.max_prob.aupr,
                "fpr95_max_prob": o.max_prob.fpr_at_95_tpr,
            }
    return doc


def _fmt(value: float | None, spec: str = ".3f") -> str:
    # NaN is a mean over no examples (no correct prediction): as missing as None, which the JSON writes for it
    return "—" if value is None or math.isnan(value) else format(value, spec)


def _hp_text(hp: Hyperparameters | None) -> str:
    if hp is None:
        return ""
    tau = hp.prior_precision
    tau_text = f"{tau:.3g}" if isinstance(tau, float) else "per layer"
    text = f"τ={tau_text} N={hp.n_data:.3g} ({hp.source}{', ' + hp.objective if hp.objective else ''}, {hp.prior_mode})"
    if hp.validation_nll is not None and hp.map_validation_nll is not None:
        text += f"; held-out NLL {hp.validation_nll:.4f} (MAP {hp.map_validation_nll:.4f})"
    return text


def print_ood(doc: dict[str, Any]) -> None:
    """Rich tables: calibration in distribution, detection per OOD set, own-error detection."""
    kinds = doc["predictives"]
    val = (f"; {doc['n_validation']:,} held-out examples ({doc.get('validation_examples')}) tuned N, τ"
           if doc["n_validation"] else "")
    which = doc.get("in_distribution_split") or "whole file"
    t = Table(title=f"In distribution: {doc['in_distribution_data']} {which} ({doc['n_eval']:,} examples{val})")
    for col in ("predictive", "acc", "NLL", "Brier", "ECE", "entropy", "s"):
        t.add_column(col, justify="left" if col == "predictive" else "right")
    for k in kinds:
        d = doc["in_distribution"][k]
        t.add_row(k, f"{d['accuracy']:.2%}", f"{d['nll']:.4f}", f"{d['brier']:.4f}", f"{d['ece']:.4f}",
                  f"{d['mean_entropy']:.3f}", f"{doc['seconds'][k]:.1f}")
    stdout.print(t)
    for k in kinds:
        hp = doc["hyperparameters"][k]
        if hp:
            stdout.print(f"  {k}: {_hp_text(Hyperparameters(**hp))}")

    if doc["ood"]:
        t = Table(title="OOD detection (positive = OOD): by entropy H | by max probability p", box=box.SIMPLE_HEAD)
        for col in ("data", "pred.", "mean H", "AUROC H", "AUPR H", "FPR95 H", "AUROC p", "AUPR p", "FPR95 p"):
            label = col in ("data", "pred.")
            t.add_column(col, justify="left" if label else "right", no_wrap=label, min_width=5)
        for name, per_kind in doc["ood"].items():
            for i, k in enumerate(kinds):
                o = per_kind[k]
                t.add_row(name if i == 0 else "", k, f"{o['mean_entropy']:.3f}", f"{o['auroc_entropy']:.3f}",
                          f"{o['aupr_entropy']:.3f}", f"{o['fpr95_entropy']:.3f}", f"{o['auroc_max_prob']:.3f}",
                          f"{o['aupr_max_prob']:.3f}", f"{o['fpr95_max_prob']:.3f}")
            t.add_section()
        stdout.print(t)

    t = Table(title="Misclassification (positive = wrong prediction)")
    for col in ("predictive", "correct", "wrong", "H correct", "H wrong", "AUROC H"):
        t.add_column(col, justify="left" if col == "predictive" else "right")
    for k in kinds:
        m = doc["misclassification"][k]
        t.add_row(k, f"{m['n_correct']:,}", f"{m['n_wrong']:,}", _fmt(m["mean_entropy_correct"]),
                  _fmt(m["mean_entropy_wrong"]), _fmt(m["auroc_entropy"], ".4f"))
    stdout.print(t)
    for path in doc["pngs"]:
        stdout.print(f"wrote {path}", soft_wrap=True)


def attack_document(report: AttackReport) -> dict[str, Any]:
    """The ``--json`` document of ``uncert attack``; several factor files add ``member_hyperparameters``."""
    doc = {
        "command": "attack",
        **report.settings,
        "predictives": list(report.untargeted),
        "hyperparameters": {k: _hyper(h) for k, h in report.hyperparameters.items()},
        "untargeted": {k: asdict(c) for k, c in report.untargeted.items()},
        "targeted": {k: asdict(c) for k, c in report.targeted.items()},
    }
    if report.member_hyperparameters is not None:
        doc["member_hyperparameters"] = [{k: _hyper(h) for k, h in member.items()}
                                         for member in report.member_hyperparameters]
    return doc


def print_attack(doc: dict[str, Any]) -> None:
    """Rich tables: accuracy and entropy per step size (untargeted) and per step (targeted)."""
    kinds = doc["predictives"]
    if doc["untargeted"]:
        t = Table(title=f"Untargeted FGSM on {doc['data']} ({doc['n']:,} examples): accuracy / mean entropy")
        t.add_column("step size η", justify="right")
        for k in kinds:
            t.add_column(k, justify="right")
        first = doc["untargeted"][kinds[0]]
        for i, eta in enumerate(first["step_sizes"]):
            t.add_row(f"{eta:g}", *(
                f"{doc['untargeted'][k]['accuracy'][i]:.1%} / {doc['untargeted'][k]['mean_entropy'][i]:.2f}" for k in kinds
            ))
        stdout.print(t)
    if doc["targeted"]:
        target = doc["target_class"]
        t = Table(title=f"Targeted FGSM towards class {target} (η={doc['targeted_step_size']:g}): "
                  "accuracy / on target / mean entropy")
        t.add_column("step", justify="right")
        for k in kinds:
            t.add_column(k, justify="right")
        first = doc["targeted"][kinds[0]]
        for i, step in enumerate(first["steps"]):
            t.add_row(str(step), *(
                f"{doc['targeted'][k]['accuracy'][i]:.1%} / {doc['targeted'][k]['target_rate'][i]:.1%} / "
                f"{doc['targeted'][k]['mean_entropy'][i]:.2f}" for k in kinds
            ))
        stdout.print(t)
    for path in doc["pngs"]:
        stdout.print(f"wrote {path}", soft_wrap=True)

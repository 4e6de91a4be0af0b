"""Presentation of ``uncert prune``: JSON documents and rich tables (schema in ``docs/json.md``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from uncert_cli.analysis.pruning import BASELINE, Comparison, PruneEvaluation, PruneSelection
from uncert_cli.render.cells import layer_cell, number_cell
from uncert_cli.render.console import stdout

_SCORE_TEXT = {
    "snr": "|μ|/σ, lowest pruned",
    "variance-ratio": "σ²/σ²_prior, highest pruned",
    "obd": "μ²·H_ii/2, lowest pruned",
    "magnitude": "|μ|, lowest pruned",
}


def selection_section(selection: PruneSelection, output: Path | None) -> dict[str, Any]:
    return {
        "criterion": selection.criterion,
        "score": _SCORE_TEXT[selection.criterion],
        "fraction": selection.fraction,
        "total_candidates": selection.total_candidates,
        "pruned": selection.pruned,
        "counts": [
            {"layer": c.layer, "param": c.param_name, "candidates": c.candidates, "pruned": c.pruned,
             "fraction": c.fraction}
            for c in selection.counts
        ],
        "candidates": [
            {"layer": c.layer, "param": c.param_name, "index": list(c.index), "mean": c.mean, "std": c.std,
             "snr": c.snr, "score": c.score}
            for c in selection.candidates
        ],
        "output": str(output) if output is not None else None,
    }


def evaluation_section(
    evaluation: PruneEvaluation, comparisons: list[Comparison], png: Path | None
) -> dict[str, Any]:
    return {
        "dataset": evaluation.dataset,
        "split": evaluation.split,
        "examples": evaluation.examples,
        "total_candidates": evaluation.total_candidates,
        "baseline": BASELINE,
        "unpruned": asdict(evaluation.unpruned),
        "points": [asdict(p) for p in evaluation.points],
        "comparison": [asdict(c) for c in comparisons],
        "png": str(png) if png is not None else None,
    }


def prune_document(
    factors: Path, prior: dict[str, Any], selection: dict[str, Any] | None, evaluation: dict[str, Any] | None
) -> dict[str, Any]:
    return {"factors": str(factors), "prior": prior, "selection": selection, "evaluation": evaluation}


def print_selection(sel: dict[str, Any]) -> None:
    shown = len(sel["candidates"])
    table = Table(title=f"Pruning candidates: {sel['criterion']} ({sel['score']}), first {shown} of {sel['pruned']:,}")
    # No layer column: the parameter's name starts with it, and 8 columns must fit 80 characters.
    for name in ("#", "param", "index", "μ", "σ", "SNR", "score"):
        table.add_column(name, justify="left" if name in ("param", "index") else "right", no_wrap=True)
    for k, c in enumerate(sel["candidates"], start=1):
        table.add_row(str(k), c["param"], str(tuple(c["index"])), number_cell(c["mean"]), number_cell(c["std"]),
                      number_cell(c["snr"]), number_cell(c["score"]))
    stdout.print(table)
    counts = Table(title=f"Pruned per layer at fraction {sel['fraction']:g}")
    for name in ("layer", "param", "candidates", "pruned", "share"):
        counts.add_column(name, justify="left" if name in ("layer", "param") else "right")
    for c in sel["counts"]:
        counts.add_row(layer_cell(c["layer"]), c["param"], f"{c['candidates']:,}", f"{c['pruned']:,}", f"{c['fraction']:.1%}")
    counts.add_row("total", "", f"{sel['total_candidates']:,}", f"{sel['pruned']:,}",
                   f"{sel['pruned'] / max(1, sel['total_candidates']):.1%}", style="bold")
    stdout.print(counts)
    if sel["output"]:
        stdout.print(Text.assemble("wrote ", (str(sel["output"]), "bold"), f" ({sel['pruned']:,} weights set to 0)"),
                     soft_wrap=True)  # a path in one piece


def print_evaluation(ev: dict[str, Any]) -> None:
    criteria = list(dict.fromkeys(p["criterion"] for p in ev["points"]))
    fractions = sorted({p["fraction"] for p in ev["points"]})
    has_acc = ev["unpruned"]["accuracy"] is not None
    by_key = {(p["criterion"], p["fraction"]): p for p in ev["points"]}
    metrics = ([("accuracy", "accuracy", ".2%")] if has_acc else []) + [("nll", "mean NLL", ".4f")]
    for key, label, spec in metrics:
        # One narrow table per metric, so that all criteria fit side by side in 80 columns.
        table = Table(title=f"Test {label} of the pruned MAP network ({ev['dataset']} {ev['split'] or 'whole file'}, "
                            f"{ev['examples']:,} examples)")
        table.add_column("pruned", justify="right", no_wrap=True)
        for c in criteria:
            table.add_column(f"{c}{' (baseline)' if c == ev['baseline'] else ''}", justify="right", no_wrap=True)
        table.add_row("0%", *[format(ev["unpruned"][key], spec)] * len(criteria))
        for f in fractions:
            table.add_row(f"{f:.0%}", *[format(by_key[(c, f)][key], spec) for c in criteria])
        stdout.print(table)
    for c in ev["comparison"]:
        if has_acc:
            stdout.print(
                f"{c['criterion']}: higher accuracy than {ev['baseline']} at {c['better_accuracy']}/{c['fractions']} "
                f"fractions (mean {c['mean_accuracy_difference'] * 100:+.2f} points), lower NLL at "
                f"{c['better_nll']}/{c['fractions']} (mean {c['mean_nll_difference']:+.3g})"
            )
        else:
            stdout.print(
                f"{c['criterion']}: lower NLL than {ev['baseline']} at {c['better_nll']}/{c['fractions']} fractions "
                f"(mean {c['mean_nll_difference']:+.3g})"
            )
    if ev["png"]:
        stdout.print(f"wrote {ev['png']}", soft_wrap=True)

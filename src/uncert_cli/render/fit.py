"""Presentation of a finished fit: a JSON-able summary and its rich table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text

from uncert_cli.core.memory import format_size
from uncert_cli.data import ImageConversion
from uncert_cli.render.cells import accuracy_text, column_table
from uncert_cli.render.console import stdout
from uncert_cli.workflows.fit import FitResult


def fit_summary(result: FitResult, output: Path, conversion: ImageConversion | None = None) -> dict[str, Any]:
    """The fit's JSON document; ``conversion`` is the image conversion recorded in the file (None: none)."""
    curvature = result.curvature
    layers = [
        {
            "module": block.module,
            "structure": block.structure,
            "params": block.num_params,
            "param_names": list(block.param_names),
            "factor_shapes": block.factor_shapes(),
        }
        for block in curvature.blocks
    ]
    return {
        "output": str(output),
        "method": curvature.method,
        "fisher_type": curvature.fisher_type,
        "task": curvature.task,
        "n_data": curvature.n_data,
        "parameters": curvature.num_params,
        "layers": layers,
        **{k: result.info[k] for k in ("seconds", "peak_memory_bytes", "dataset", "log_likelihood") if k in result.info},
        "estimated_peak_memory_bytes": result.memory.peak if result.memory is not None else None,
        "split": result.info.get("split"),  # null: the whole data file (it has no splits)
        "include_frozen": result.info.get("include_frozen", False),
        "frozen_parameters": result.info.get("frozen_parameters", []),
        "map_accuracy": result.info.get("map_accuracy"),
        "eigen_repairs": result.info.get("eigen_repairs") or {},
        # {"channels": 3, "size": [32, 32]} as recorded for later commands; null: the images as stored
        "input_conversion": conversion.to_dict() if conversion is not None else None,
        # --method vi: its settings and the ELBO with its two terms per epoch; null for a Laplace fit
        "vi": result.info.get("vi"),
    }


def print_fit_summary(summary: dict[str, Any]) -> None:
    vi = summary.get("vi")
    kind = "mean-field Gaussian by the ELBO" if vi else f"Laplace ({summary['fisher_type']} fisher)"
    table = column_table(f"{summary['method']} {kind} on {summary['dataset']}", ("module", "structure", "params", "factors"))
    for layer in summary["layers"]:
        shapes = layer["factor_shapes"]
        factors = " ⊗ ".join("×".join(map(str, s)) for s in shapes) if shapes else layer["structure"]
        table.add_row(layer["module"], layer["structure"], f"{layer['params']:,}", factors)
    stdout.print(table)
    acc = accuracy_text(summary.get("map_accuracy"), ", ")
    stdout.print(
        f"{summary['parameters']:,} parameters, N = {summary['n_data']:,}{acc}; "
        f"{summary['seconds']:.1f} s, peak memory {format_size(summary['peak_memory_bytes'])}"
    )
    stdout.print(Text.assemble("wrote ", (str(summary["output"]), "bold")), soft_wrap=True)  # a path in one piece
    if vi:
        stdout.print(f"ELBO {vi['elbo'][0]:,.6g} after the first epoch, {vi['elbo'][-1]:,.6g} after {vi['epochs']} "
                     f"(E log p {vi['expected_log_likelihood'][-1]:,.6g}, KL {vi['kl'][-1]:,.6g}); N = "
                     f"{vi['n_data']:,.6g}, τ = {vi['prior_precision']:g}, lr {vi['lr']:g}, {vi['mc_samples']} sample(s) "
                     "per step; MAP accuracy is the checkpoint's")
    conversion = summary.get("input_conversion")
    if conversion:
        shown = ImageConversion(conversion["channels"], tuple(conversion["size"]) if conversion["size"] else None)
        stdout.print(f"images converted to {shown.describe()} (recorded: later commands convert their data alike)")
    repairs = summary.get("eigen_repairs") or {}
    if repairs:  # the decomposition is still exact up to the jitter; say which layers needed help
        stdout.print(f"plain eigh did not converge for {len(repairs)} layer(s), decomposed with a fallback: "
                     + "; ".join(f"{m} ({', '.join(r)})" for m, r in repairs.items()))

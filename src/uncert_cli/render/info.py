"""Presentation of a loaded model: layers, parameter counts, structure per layer."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from uncert_cli.checkpoint import LayerInfo, LoadedModel
from uncert_cli.checkpoint.shapes import input_hint, output_hint
from uncert_cli.data import ImageConversion
from uncert_cli.render.cells import column_table, layer_cell
from uncert_cli.render.console import stdout


def model_summary(loaded: LoadedModel, layers: list[LayerInfo]) -> dict[str, Any]:
    meta = loaded.meta
    return {
        "source": str(loaded.source),
        "fingerprint": loaded.fingerprint,
        "arch": meta.arch,
        "arch_kwargs": meta.arch_kwargs,
        "input_shape": list(meta.input_shape) if meta.input_shape else None,
        "task": meta.task,
        "num_outputs": meta.num_outputs,
        "dataset": meta.dataset,
        "normalize": (
            {"mean": list(meta.normalize_mean), "std": list(meta.normalize_std)}
            if meta.normalize_mean is not None and meta.normalize_std is not None
            else None
        ),
        # The images' conversion recorded by `fit --channels/--grayscale/--resize`; null: used as stored.
        "input_conversion": ImageConversion(
            channels=meta.convert_channels, size=cast(tuple[int, int] | None, meta.convert_size)
        ).to_dict(),
        # The part of a structured forward result (dict, tuple, ModelOutput) analysed; null: the tensor it returns.
        "model_output": meta.output,
        # Read off the first and last layers when the metadata has no input shape / output count.
        "input_hint": None if meta.input_shape else input_hint(loaded.module),
        "num_outputs_from_layers": None if meta.num_outputs else output_hint(loaded.module),
        "parameters": sum(layer.params for layer in layers),
        "layers": [asdict(layer) for layer in layers],
    }


def print_model_summary(summary: dict[str, Any]) -> None:
    # the full path is in the JSON; a title must not wrap
    table = column_table(Path(summary["source"]).name, ("layer", "type", "params", "Laplace structure"))
    for layer in summary["layers"]:
        structure = layer["structure"]
        if layer.get("tied_block"):
            structure += f" (tied: {layer['tied_block']})"
        if layer.get("frozen_params"):
            structure = "none: frozen" if layer["frozen_params"] == layer["params"] else structure + ", part frozen"
        table.add_row(layer_cell(layer["name"]), layer["type"], f"{layer['params']:,}", structure)
    stdout.print(table)
    shape = "×".join(map(str, summary["input_shape"])) if summary["input_shape"] else summary.get("input_hint") or "unknown"
    outputs = summary["num_outputs"] or summary.get("num_outputs_from_layers")
    kind = "classes" if summary["task"] == "classification" else "outputs"
    if outputs and not summary["num_outputs"]:
        outputs = f"{outputs} (last layer)"
    stdout.print(
        f"arch {summary['arch'] or '(pickled module)'}  input {shape}  task {summary['task']}  "
        f"{kind} {outputs or '?'}  trained on {summary['dataset'] or '?'}\n"
        f"{summary['parameters']:,} parameters  fingerprint {summary['fingerprint'][:16]}…"
    )
    conversion = summary.get("input_conversion")
    if conversion:
        shown = ImageConversion(conversion["channels"], tuple(conversion["size"]) if conversion["size"] else None)
        stdout.print(f"images converted to {shown.describe()} before the model (recorded by fit)")
    if summary.get("model_output") is not None:
        stdout.print(f"analyses the model's output {summary['model_output']!r} (recorded by fit)")

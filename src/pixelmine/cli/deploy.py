"""pixelmine export and pixelmine compress. Thin: parse, call pixelmine.deploy, print."""

from __future__ import annotations

from pathlib import Path

import click

from .common import common_options

FORMATS = ("onnx",)  # the one format written today; a Choice so that others are refused by the parser
PRECISIONS = ("fp32", "int8")


def _interval(interval) -> str:
    return "" if not interval else f" [{interval[0]:.3f}, {interval[1]:.3f}]"


def run_snippet(graph: str, sidecar: str) -> str:
    """Four lines that run the exported file with only onnxruntime, Pillow and numpy installed."""
    return (f"import json, numpy as np, onnxruntime as ort; from PIL import Image, ImageOps\n"
            f"session = ort.InferenceSession({graph!r}, providers=['CPUExecutionProvider'])\n"
            f"pixels = np.asarray(ImageOps.exif_transpose(Image.open('photo.jpg')).convert('RGB'))[None]\n"
            f"print(json.load(open({sidecar!r}))['classes'][session.run(None, {{'image': pixels}})[0][0].argmax()])")


def render_export(result) -> str:
    lines = [(f"wrote {result.path} ({result.size_bytes / 1e6:.3g} MB, {result.precision}) and {result.sidecar} "
              f"in {result.seconds:.0f} s")]
    test = result.test
    if test:
        lines.append(f"test accuracy of the exported file: {test['accuracy']:.3f}{_interval(test.get('interval'))} "
                     f"on n = {test['n']} test images")
    else:
        lines.append("test accuracy: not measured (the model's test split is no longer in the workspace)")
    parity = result.parity
    if parity.get("max_abs_diff") is not None:
        lines.append(f"parity with Model.predict: max abs probability difference {parity['max_abs_diff']:.2g} "
                     f"on {parity['images']} images")
    if result.precision == "int8" and result.reference_accuracy is not None and test:
        lines.append(f"int8 against the original: accuracy {result.reference_accuracy:.3f} -> {test['accuracy']:.3f} "
                     f"(drop {result.reference_accuracy - test['accuracy']:.3f})")
    lines.append("\nrun it with onnxruntime alone (big JPEGs, transparency and the full example: docs/deploy.md):")
    lines.extend("  " + line for line in run_snippet(result.path, result.sidecar).splitlines())
    lines.append(f"serve it: pixelmine serve --model {Path(result.path).parent}")
    return "\n".join(lines)


@click.command("export")
@click.option("--model", "model_name", help="Model name (default: the most recently trained).")
@click.option("--format", "file_format", type=click.Choice(FORMATS), default="onnx", show_default=True,
              help="File format of the export.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="fp32: the model as trained; int8: quantised networks, refused if it loses more than --max-drop.")
@click.option("--max-drop", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="With int8: test accuracy it may lose against the original (0.01 = one point).")
@click.option("--output", type=click.Path(file_okay=False), required=True,
              help="Folder for model.onnx and classifier.json (created when missing).")
@common_options
def export_command(ws, out, model_name, file_format, precision, max_drop, output):
    """Export a model as one ONNX file (decoded image in, class probabilities out) plus its sidecar.

    \b
    Examples:
      pixelmine export --output shipped/
      pixelmine export --model best --precision int8 --output shipped-int8/
      pixelmine serve --model shipped/              # /predict answered by the exported file

    The file is measured on the model's test split before it is kept: its accuracy, and how far its
    probabilities are from Model.predict's. int8 losing more than --max-drop is refused, leaving nothing.
    Running it without pixelmine: docs/deploy.md.
    """
    model = ws.model(model_name)
    result = model.export(output, precision=precision, max_drop=max_drop, progress=out.progress)
    out.result(result.to_dict())
    out.say(render_export(result))



def render_compress(result) -> str:
    from ..deploy.compress import VARIANTS

    lines = [f"compressed {result.model} at sparsity {result.sparsity:.2f} in {result.seconds:.0f} s; head "
             f"{result.head}"]
    lines.extend(f"  distilled {d['network']}: {d['steps']} steps ({d['epochs']:.1f} epochs) in {d['seconds']:.0f} s, "
                 f"stopped by {d['stopped_by']}; loss {d['loss_first']:.3f} -> {d['loss_last']:.3f}"
                 for d in result.distillation)
    lines += ["", result.format_table(), ""]
    for row in result.rows[1:]:
        lines.append(f"{row['variant']}: {row['speedup_b8']:.2f}x throughput at batch 8, {row['speedup_b1']:.2f}x "
                     f"latency at batch 1, test accuracy {row['accuracy_change']:+.3f} against {VARIANTS[0]}")
    lines.append("")
    lines.extend(f"{row['variant']}: pixelmine serve --model {Path(row['path']).parent}" for row in result.rows)
    return "\n".join(lines)


@click.command("compress")
@click.option("--model", "model_name", help="Model name (default: the most recently trained).")
@click.option("--sparsity", type=float, default=0.5, show_default=True,
              help="Share of each network's channels removed (0.1-0.9; 0.3-0.6 is typical).")
@click.option("--budget", "budget_s", type=float, default=600.0, show_default=True,
              help="Seconds of distillation, all the model's networks together.")
@click.option("--report", "show_report", is_flag=True,
              help="Print the table of an earlier compress at this sparsity instead of compressing.")
@common_options
def compress_command(ws, out, model_name, sparsity, budget_s, show_report):
    """Prune and distil a model's networks, then measure the original and pruned files at fp32 and int8.

    \b
    Examples:
      pixelmine compress                                  # the newest model, sparsity 0.5, 10 minutes
      pixelmine compress --model best --sparsity 0.3 --budget 900
      pixelmine compress --model best --sparsity 0.3 --report

    Channels are removed for real (the stem and the pooled feature size kept); each pruned network then
    learns the original's features on the workspace's images (no labels; the test split is never used),
    within --budget, resumably (run the same command again after an interruption). The head is refitted on
    the new features. The table: file size, parameters, MACs, latency and throughput measured here, test
    accuracy, agreement with the original, feature cosine. The four files can be served or shipped.
    """
    from ..deploy.compress import CompressResult, compressed_dir
    from ..deploy.prune import check_sparsity

    model = ws.model(model_name)
    if show_report:
        result = CompressResult.load(compressed_dir(model, check_sparsity(sparsity)))
    else:
        result = model.compress(sparsity=sparsity, budget_s=budget_s, progress=out.progress)
    out.result(result.to_dict())
    out.say(render_compress(result))


COMMANDS = [export_command, compress_command]

"""pixelmine explain / robustness. Thin: parse, call pixelmine.trust, print."""

from __future__ import annotations

import re
from pathlib import Path

import click

from ..errors import InputError
from .common import common_options, table


def _overlay_name(explanation, contrastive: bool) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(explanation.path).stem)[:80]
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", explanation.label)
    suffix = f"-vs-{re.sub(r'[^A-Za-z0-9._-]+', '_', explanation.runner_up)}" if contrastive else ""
    return f"{stem}-{(explanation.image_id or 'x')[:8]}-{label}{suffix}.png"


def render_faithfulness(card) -> str:
    checks = "\n".join(f"  [{'x' if ok else ' '}] {name}" for name, ok in card.checks.items())
    return (f"faithfulness of {card.model}'s {card.method} maps on {card.images} held-out images "
            f"({card.grid[0]}x{card.grid[1]} grid, {card.steps} steps, {card.seconds:.0f} s):\n"
            + table(card.table(), ("map", "deletion area (lower is better)", "insertion area (higher is better)"))
            + f"\ndeletion area {card.deletion_gain:.0%} below the random map's, insertion area "
              f"{card.insertion_gain:.0%} above it; randomised-head rank correlation "
              f"{card.random_head_correlation:.2f}\n" + checks)


@click.command("explain")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--model", "model_name", help="Model name (default: the most recently trained).")
@click.option("--class", "label", help="Explain this class (default: each image's predicted class).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Folder for the overlay PNGs (default: WORKSPACE/explanations/MODEL).")
@click.option("--contrastive/--no-contrastive", default=True, show_default=True,
              help="Also draw why the class rather than the runner-up.")
@click.option("--evaluate", is_flag=True,
              help="Measure how faithful the maps are on held-out images (deletion / insertion curves against a "
                   "random map and a centred blob, randomised-head check) instead of explaining files.")
@click.option("--images", "n_images", type=click.IntRange(min=1), default=100, show_default=True,
              help="With --evaluate: how many held-out images.")
@common_options
def explain_command(ws, out, paths, model_name, label, out_dir, contrastive, evaluate, n_images):
    """Show where the model looks: a class activation map per image, drawn over it.

    \b
    Examples:
      pixelmine explain photos/a.jpg photos/b.jpg
      pixelmine explain photos/ --class defect --out maps/
      pixelmine explain photos/a.jpg --json          # class, probability and the map as a 2-D list
      pixelmine explain --evaluate                    # the faithfulness card on 100 held-out images

    A probe (logreg, svm) is explained exactly with CAM on the ONNX graph; a fine-tuned network with
    Grad-CAM. With --json each image gives its class, probability and map (rows top to bottom of the upright
    image, values in [0, 1]) at the network's grid; the overlays are written either way.
    """
    model = ws.model(model_name)
    if evaluate:
        if paths:
            raise InputError("--evaluate measures the maps on the model's held-out images; give no files with it")
        _evaluate(ws, out, model, n_images)
        return
    if not paths:
        raise InputError("give image files or folders to explain, or --evaluate to measure the maps")
    explanations = model.explain(list(paths), label=label, contrastive=contrastive, progress=out.progress)
    folder = Path(out_dir) if out_dir else ws.root / "explanations" / model.name
    from ..trust.explain import save_overlay

    records, rows = [], []
    for e in explanations:
        record = e.to_dict(maps=out.as_json)
        if e.ok:
            record["overlay"] = str(save_overlay(e, folder / _overlay_name(e, False)))
            if e.contrastive_map is not None:
                record["contrastive_overlay"] = str(save_overlay(e, folder / _overlay_name(e, True), contrastive=True))
            rows.append((Path(e.path).name, e.label, f"{e.probability:.3f}", e.runner_up or "-",
                         Path(record["overlay"]).name))
        else:
            rows.append((Path(e.path).name, "error", "", "", e.error))
        records.append(record)
    out.result({"model": model.name, "explanations": records})
    out.say(table(rows, ("image", "class", "probability", "runner-up", "overlay / error")))
    failed = sum(1 for e in explanations if not e.ok)
    out.say(f"\n{len(explanations) - failed} explained by {model.name} ({explanations[0].method if explanations and explanations[0].ok else model.head}), "
            f"{failed} could not be read; overlays in {folder}")


def _evaluate(ws, out, model, n_images: int) -> None:
    from ..fileio import atomic_write_json
    from ..trust.faithfulness import measure
    from ..trust.held_out import held_out

    data = held_out(model, limit=n_images)
    card = measure(model, data.paths, progress=out.progress)
    atomic_write_json(model.dir / "faithfulness.json", card.to_dict())
    out.result(card.to_dict())
    out.say(render_faithfulness(card))
    out.say(f"\nsaved to {model.dir / 'faithfulness.json'} (shown in the report)")


COMMANDS = [explain_command]

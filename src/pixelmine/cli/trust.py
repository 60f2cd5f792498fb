"""pixelmine explain / robustness / fairness. Thin: parse, call pixelmine.trust, print."""

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


def render_robustness(report) -> str:
    clean = report.clean
    lines = [f"robustness of {report.model} on {report.images} held-out images ({report.seconds:.0f} s): clean accuracy "
             f"{clean['accuracy']:.3f} [{clean['low']:.3f}, {clean['high']:.3f}]"]
    if report.attacks:
        lines.append(table(report.attack_table(), ("attack", "eps", "accuracy", "95% interval")))
    if report.int8:
        check = report.int8
        lines.append(f"int8 check at eps {check['eps']:g}/255: fp32 {check['fp32']['accuracy']:.3f}, int8 "
                     + ("n/a" if check.get("int8") is None else f"{check['int8']['accuracy']:.3f}")
                     + f" ({check['note']})")
    if report.corruptions:
        lines.append(table(report.corruption_table(), ("corruption", "1", "2", "3", "4", "5", "mean")))
        relative = report.relative_corruption_error
        lines.append(f"mean corruption accuracy {report.corruption_mean:.3f}; relative corruption error "
                     + ("n/a" if relative is None else f"{relative:.2f}") + " (mean error / clean error)")
    lines.extend(report.notes)
    return "\n".join(lines)


@click.command("robustness")
@click.option("--model", "model_name", help="Model name (default: the most recently trained).")
@click.option("--images", "n_images", type=click.IntRange(min=1), default=100, show_default=True,
              help="Held-out (test split) images to measure on.")
@click.option("--eps", "epsilons", multiple=True, type=click.FloatRange(min=0), default=(0.5, 1.0, 2.0, 4.0),
              show_default=True, help="Attack strengths in 1/255 (repeat the option).")
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True, help="PGD steps.")
@click.option("--attacks/--no-attacks", default=True, show_default=True, help="FGSM and PGD.")
@click.option("--corruptions/--no-corruptions", default=True, show_default=True, help="ImageNet-C corruptions.")
@click.option("--against", "baseline", help="Another model to show beside this one (e.g. before robust training).")
@common_options
def robustness_command(ws, out, model_name, n_images, epsilons, steps, attacks, corruptions, baseline):
    """How the model holds up under adversarial attacks and everyday corruptions, on held-out images.

    \b
    Examples:
      pixelmine robustness
      pixelmine robustness --model robust-ft --against demo-classifier
      pixelmine robustness --eps 1 --eps 2 --no-corruptions

    Attacks (FGSM, PGD with a random start, L-inf) run on the model as one PyTorch network; PGD images are
    also tried on the int8 graph (much higher int8 accuracy is gradient masking). Corruptions follow
    ImageNet-C at 5 severities. Saves models/NAME/robustness.json, shown in the report.
    """
    from ..fileio import atomic_write_json
    from ..trust.robust import measure

    reports = []
    for name in [model_name] + ([baseline] if baseline else []):
        model = ws.model(name)
        report = measure(model, images=n_images, epsilons=epsilons, steps=steps, attacks=attacks,
                         corruptions=corruptions, progress=out.progress)
        atomic_write_json(model.dir / "robustness.json", report.to_dict())
        reports.append(report)
    out.result([r.to_dict() for r in reports] if baseline else reports[0].to_dict())
    out.say("\n\n".join(render_robustness(r) for r in reports))
    out.say(f"\nsaved to {', '.join(str(ws.model(r.model).dir / 'robustness.json') for r in reports)} "
            "(shown in the report)")


def render_balance(balance: dict) -> str:
    """Every group of the balanced column before and after the refit, on the same test images."""
    lines = [f"group x class balanced refit of {balance['base']!r} on {balance['column']!r}: "
             f"{len(balance['cells'])} cells, head refitted in {balance['refit_s']:.1f} s"]
    if balance.get("before") and balance.get("after"):
        rows = []
        for stats in balance["before"]["groups"]:
            after = next(g for g in balance["after"]["groups"] if g["group"] == stats["group"])
            rows.append((stats["group"], stats["n"], f"{stats['accuracy']:.3f}", f"{after['accuracy']:.3f}",
                         f"{100 * (after['accuracy'] - stats['accuracy']):+.1f}"))
        rows.append(("all test images", sum(g["n"] for g in balance["before"]["groups"]),
                     f"{balance['before_accuracy']:.3f}", f"{balance['after_accuracy']:.3f}",
                     f"{100 * (balance['after_accuracy'] - balance['before_accuracy']):+.1f}"))
        lines.append(table(rows, ("group", "test images", "accuracy before", "after", "points")))
    return "\n".join(lines)


@click.command("fairness")
@click.option("--by", "columns", multiple=True, metavar="COLUMN",
              help="Metadata column to group by (repeatable; default: every column that splits the test images).")
@click.option("--model", "model_name", help="Model name (default: the most recently trained).")
@click.option("--min-group", type=click.IntRange(min=2), default=20, show_default=True,
              help="Groups with fewer test images are listed but not ranked or tested.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples (stratified by group) for the intervals.")
@click.option("--columns", "list_columns", is_flag=True, help="List the columns images can be grouped by.")
@common_options
def fairness_command(ws, out, columns, model_name, min_group, bootstrap, list_columns):
    """Who the model fails: accuracy, macro-F1, per-class recall and calibration per group, with the gaps.

    \b
    Examples:
      pixelmine fairness                          # every column that splits the test images
      pixelmine fairness --by camera_model --by site
      pixelmine fairness --columns                # what can be grouped by
      pixelmine train --balance-groups site       # then: refit the head so no site is left behind

    Columns are the manifest's own and derived ones: camera_make, camera_model (EXIF), capture_hour,
    orientation, resolution, brightness, folder, source. Measured on the model's test split, with intervals
    from a bootstrap stratified by group; gaps (accuracy, and one-vs-rest selection rate, TPR and FPR per
    class) get simultaneous intervals over all the gaps tested. Groups the model fails become group_gap
    findings (pixelmine findings --kind group_gap, the report, the association rules).
    """
    if list_columns:
        found = ws.group_columns()
        out.result(found)
        out.say(table(sorted(found.items(), key=lambda kv: kv[1] != "manifest column"), ("column", "what it is")))
        return
    result = ws.fairness(list(columns) or None, model=model_name, min_group=min_group, n_bootstrap=bootstrap,
                         progress=out.progress)
    out.result(result.to_dict())
    out.say(result.format_table())
    if result.flagged:
        out.say(f"\n{result.flagged} test images are in a group the model fails: pixelmine findings --kind group_gap; "
                "to mend: pixelmine train --balance-groups COLUMN")
    out.say(f"\nsaved to {ws.model(result.model).dir / 'fairness.json'} (shown in the report)")


COMMANDS = [explain_command, robustness_command, fairness_command]

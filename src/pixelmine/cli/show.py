"""pixelmine show: one image in full (the CLI twin of GET /images/{id})."""

from __future__ import annotations

import json

import click

from ..defaults import DEFAULT_BACKBONE
from ..show import show
from .common import common_options, table

_DETAILS_WIDTH = 90  # characters of a finding's details printed; --json has them whole


@click.command("show")
@click.argument("image")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True,
              help="Features whose ImageNet tags are shown (and that tag a file the catalog has not seen).")
@click.option("--model", help="Model whose prediction is shown (default: the newest).")
@common_options
def show_command(ws, out, image, backbone, model):
    """Everything known about one image: properties, paths, ImageNet tags, findings, prediction, corrections.

    IMAGE is an image id or a unique prefix of one (at least 4 hex characters), a path the catalog has
    seen, or any image file; a file the catalog has not seen is hashed, checked and tagged without being
    catalogued.

    \b
    Examples:
      pixelmine show 3fa2c1
      pixelmine show photos/cats/001.jpg --json
      pixelmine show ~/Downloads/new-photo.jpg --backbone mobilenet_v2
    """
    item = show(ws, image, backbone=backbone, model=model)
    out.result(item)
    out.say(render(item))


def render(item: dict) -> str:
    resolved = item["resolved"]
    lines = [f"image {item['id']}"]
    if resolved["as"] == "file-new":
        lines.append(f"  not catalogued: {resolved['path']} (run pixelmine ingest to add it)")
    elif resolved["as"] == "file-catalogued":
        lines.append(f"  {resolved['path']} is not catalogued at this path, but the same bytes are")

    label = item["label"] if item["label"] is not None else "-"
    if item["correction"]:
        label += f"  (corrected: {item['correction']}; originally {item['original_label'] or '-'})"
    shape = f"{item['width']} x {item['height']}" if item["width"] is not None else "-"
    status = item["status"] + (f": {item['error']}" if item["error"] else "")
    rows = [("size", f"{item['size']:,} bytes" if item["size"] is not None else "-"),
            ("format", item["format"] or "-"), ("width x height", shape), ("mode", item["mode"] or "-"),
            ("bit depth", item["bit_depth"] or "-"), ("frames", item["frames"] or "-"),
            ("label", label), ("split", item["split"] or "-"), ("status", status)]
    rows += [(f"metadata.{key}", value) for key, value in sorted(item["metadata"].items())]
    lines += ["", "properties"] + [f"  {key:<15} {value}" for key, value in rows]

    lines += ["", "paths"]
    lines += [f"  {p['path']}" + (f"  (label {p['label']})" if p["label"] is not None else "")
              + ("" if p["present"] else "  (missing from disk)") for p in item["paths"]] or ["  -"]

    tags = item["tags"]
    lines += ["", f"ImageNet tags ({tags['backbone']})"]
    if tags["items"]:
        rows = [(t["label"], f"{t['probability']:.3f}") for t in tags["items"]]
        lines += _indent(table(rows, ("tag", "probability")))
    else:
        lines.append(f"  - {tags['note']}")

    lines += ["", "findings (newest run of each kind)"]
    if item["findings"]:
        lines += _indent(table([(f["kind"], f"{f['score']:.3f}", "yes" if f["is_issue"] else "no", f["run_id"],
                                 _short(f["details"])) for f in item["findings"]],
                               ("kind", "score", "issue", "run", "details")))
    else:
        lines.append("  - none" + ("" if item["paths"] else " (the image is not catalogued)"))

    prediction = item["prediction"]
    lines += ["", "prediction" + (f" ({prediction['model']})" if prediction.get("model") else "")]
    if prediction.get("note"):
        lines.append(f"  - {prediction['note']}")
    elif prediction.get("error"):
        lines.append(f"  - the model could not use the file: {prediction['error']}")
    else:
        verdict = f"  {prediction['label']}  {prediction['probability']:.3f}"
        verdict += f"  (uncertain: {prediction['reason']})" if prediction["uncertain"] else ""
        lines.append(verdict)
        lines.append("  top: " + ", ".join(f"{t['label']} {t['probability']:.3f}" for t in prediction["top_k"]))

    lines += ["", "label corrections"]
    if item["corrections"]:
        lines += _indent(table([((c.get("created_at") or "")[:19].replace("T", " "), c["action"],
                                 c.get("old_label") or "-", c.get("new_label") or "-") for c in item["corrections"]],
                               ("when", "action", "from", "to")))
    else:
        lines.append("  - none")
    return "\n".join(lines)


def _indent(text: str) -> list[str]:
    return [("  " + line).rstrip() for line in text.splitlines()]


def _short(details: dict) -> str:
    text = str(details.get("reason")) if details.get("reason") else json.dumps(details, sort_keys=True, default=str)
    return text if len(text) <= _DETAILS_WIDTH else text[:_DETAILS_WIDTH - 3] + "..."


COMMANDS = [show_command]

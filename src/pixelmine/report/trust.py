"""The report's "Trust" section: the most confident mistakes explained, the faithfulness card of the maps,
the robustness curves (attacks and corruptions) and the compression table of the model the report shows."""

from __future__ import annotations

import base64
import json
import logging

from . import plots
from .html import esc, figure, missing, section, table

log = logging.getLogger(__name__)

MISTAKES_EXPLAINED = 6


def trust(ctx) -> tuple[str, str, str]:
    lead = ("Where the model looks when it is wrong, whether those maps mean something, and how the model holds "
            "up under attacks and everyday corruptions.")
    model = ctx.trained
    if model is None:
        return "trust", "Trust", section("trust", "Trust", lead, missing("No trained model yet.", "pixelmine train"))
    body = _mistakes(ctx, model) + _faithfulness(model) + _robustness(model) + _compression(model)
    return "trust", "Trust", section("trust", "Trust", lead, body)


def _read(model, name: str) -> dict | None:
    path = model.dir / name
    return _read_path(path) if path.is_file() else None


def _mistakes(ctx, model) -> str:
    from ..errors import PixelmineError
    from ..trust.explain import overlay_png

    try:
        mistakes = model.metrics.get("test", {}).get("mistakes", [])[:MISTAKES_EXPLAINED]
    except (OSError, ValueError):
        mistakes = []
    rows = [(m, ctx.images.get(m["id"], {}).get("path")) for m in mistakes if m.get("id")]
    rows = [(m, path) for m, path in rows if path]
    if not rows:
        return "<h3>Most confident mistakes, explained</h3><p>No mistakes on the test split to explain.</p>"
    try:
        explanations = model.explain([path for _, path in rows])
    except (PixelmineError, ImportError) as exc:
        return f"<h3>Most confident mistakes, explained</h3><p class=\"missing\">{esc(exc)}</p>"
    except Exception as exc:  # noqa: BLE001 - one section must not cost the whole report
        log.warning("report: explaining the mistakes of %s failed (%s: %s)", model.name, type(exc).__name__, exc)
        return "<h3>Most confident mistakes, explained</h3><p class=\"missing\">The maps could not be made.</p>"
    figures = []
    for (mistake, _), explained in zip(rows, explanations):
        if not explained.ok:
            continue
        uri = "data:image/png;base64," + base64.b64encode(overlay_png(explained, max_side=256)).decode("ascii")
        figures.append(figure(uri, f"true <b>{esc(mistake['true'])}</b><br>predicted {esc(mistake['predicted'])} "
                                   f"{float(mistake['probability']):.2f}", title=ctx.file_name(mistake["id"])))
    return ("<h3>Most confident mistakes, explained</h3><p>The map of the predicted class over each image: red is "
            f"where the evidence for the wrong class lies ({esc(explanations[0].method)}).</p>"
            f'<div class="grid">{"".join(figures)}</div>')


def _faithfulness(model) -> str:
    card = _read(model, "faithfulness.json")
    if card is None:
        return "<h3>Faithfulness of the maps</h3>" + missing("The maps have not been measured yet.",
                                                            f"pixelmine explain --evaluate --model {model.name}")
    names = {"map": f"{card['method']} map", "random": "random map", "centre": "centred blob"}
    rows = [[names[k], card["deletion"][k], card["insertion"][k]] for k in ("map", "random", "centre")]
    checks = "".join(f"<li>{'✔' if ok else '✘'} {esc(name)}</li>" for name, ok in card["checks"].items())
    return ("<h3>Faithfulness of the maps</h3>"
            f"<p>On {card['images']} held-out images: removing the cells the map ranks first should make the "
            "probability fall fast (deletion area low), adding them first should make it rise fast (insertion "
            "area high), compared with a random order and a centred blob.</p>"
            + table(["map", "deletion area (lower is better)", "insertion area (higher is better)"], rows,
                    numeric={1, 2})
            + f"<p>Randomised-head rank correlation: {card['random_head_correlation']:.2f} (low: the map depends "
              f"on what the model learned).</p><ul>{checks}</ul>")


def _robustness(model) -> str:
    report = _read(model, "robustness.json")
    if report is None:
        return "<h3>Robustness</h3>" + missing("Robustness has not been measured yet.",
                                              f"pixelmine robustness --model {model.name}")
    clean = report["clean"]
    parts = [f"<h3>Robustness</h3><p>On {report['images']} held-out images: clean accuracy "
             f"{clean['accuracy']:.3f} [{clean['low']:.3f}, {clean['high']:.3f}].</p>"]
    figures = []
    if report.get("attacks"):
        figures.append(plots.attack_curves(report["attacks"], "accuracy under attack (FGSM, PGD; L-inf)"))
    if report.get("corruptions"):
        figures.append(plots.corruption_curves(report["corruptions"], clean["accuracy"], "accuracy under corruption"))
        relative = report.get("relative_corruption_error")
        parts.append(f"<p>Mean accuracy over {len(report['corruptions'])} corruptions at 5 severities: "
                     f"{report['corruption_mean']:.3f}; relative corruption error (mean error under corruption / "
                     f"clean error): {'n/a' if relative is None else f'{relative:.2f}'}.</p>")
    parts.append('<div class="cols">' + "".join(f'<img class="plot" src="{uri}" alt="robustness curve">'
                                                for uri in figures if uri) + "</div>")
    if report.get("int8") and report["int8"].get("int8"):
        check = report["int8"]
        parts.append(f"<p>int8 check at eps {check['eps']:g}/255: fp32 {check['fp32']['accuracy']:.3f}, int8 "
                     f"{check['int8']['accuracy']:.3f} on the same attacked images: {esc(check['note'])}.</p>")
    for note in report.get("notes", []):
        parts.append(f"<p class=\"muted\">{esc(note)}</p>")
    return "".join(parts)


def _compression(model) -> str:
    tables = sorted((model.dir / "compressed").glob("s*/compress.json"))
    if not tables:
        return "<h3>Deploying small</h3>" + missing("The model has not been compressed yet.",
                                                   f"pixelmine compress --model {model.name}")
    parts = ["<h3>Deploying small</h3><p>The original and the pruned + distilled networks, each at fp32 and int8, "
             "as exported files measured on this machine (latency at batch 1 and throughput at batch 8: medians "
             "of interleaved runs) and on the test split.</p>"]
    for path in tables:
        result = _read_path(path)
        if result is None:
            continue
        rows = [[row["variant"], row["size_mb"], row["params_m"], row["macs_m"], row["latency_ms"], row["throughput"],
                 f"{row['accuracy']:.3f} [{row['interval'][0]:.3f}, {row['interval'][1]:.3f}]" if row.get("interval")
                 else f"{row['accuracy']:.3f}", row["agreement"], row["cosine"]] for row in result["rows"]]
        parts.append(f"<p><b>Sparsity {result['sparsity']:.2f}</b>: head {esc(result['head'])}.</p>"
                     + table(["file", "size MB", "params M", "MACs M", "latency b1 ms", "throughput b8 img/s",
                              "test accuracy [95 % CI]", "agreement", "feature cosine"], rows,
                             numeric={1, 2, 3, 4, 5, 7, 8}))
    return "".join(parts)


def _read_path(path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.info("report: cannot read %s (%s)", path, exc)
        return None


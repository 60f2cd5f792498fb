"""The report's "Groups and privacy" section: who the model fails (the group tables of ``fairness.json``), every
group before and after a ``--balance-groups`` refit, and what the images carry that identifies places and
people (the privacy audit)."""

from __future__ import annotations

import json
import logging

from .html import esc, missing, section, table

log = logging.getLogger(__name__)

AUDIT_ROWS = 30  # images listed in the privacy table


def groups_and_privacy(ctx) -> tuple[str, str, str]:
    lead = ("How the model does for each group of images (a camera, a site, a resolution band...), whether a "
            "refit balanced over groups mends it, and what the files carry that identifies places and people.")
    body = "<h3>Groups</h3>" + _fairness(ctx) + _balanced(ctx) + "<h3>Privacy</h3>" + _privacy(ctx)
    return "groups", "Groups & privacy", section("groups", "Groups and privacy", lead, body)


def _interval(values) -> str:
    return f" [{values[0]:.2f}, {values[1]:.2f}]" if values else ""


def _fairness(ctx) -> str:
    from ..trust.fairness import load_fairness

    model = ctx.trained
    if model is None:
        return missing("No trained model yet.", "pixelmine train")
    result = load_fairness(model)
    if result is None:
        return missing(f"Model {model.name} has not been measured per group yet.",
                       f"pixelmine fairness --model {model.name}")
    parts = [f"<p>Model <b>{esc(model.name)}</b> on its {result.n} test images: "
             f"<b>{result.flagged}</b> are in a group it fails (a gap whose simultaneous interval excludes zero; "
             "listed as <code>group_gap</code> findings).</p>"]
    for report in result.reports:
        rows = []
        failed = {g.group for g in report.harmful_gaps()}
        for g in sorted(report.groups, key=lambda g: (not g.ranked, g.accuracy, g.group)):
            if not g.ranked:
                rows.append([g.group, g.n, f"too few to rank (< {report.min_group})", "", "", "", ""])
                continue
            recall = ", ".join(f"{c} {v:.2f}" for c, v in g.recall.items() if v is not None)
            rows.append([g.group + ("  ⚠ failed" if g.group in failed else ""), g.n,
                         f"{g.accuracy:.3f}{_interval(g.accuracy_interval)}", f"{g.macro_f1:.3f}", f"{g.ece:.3f}",
                         recall, "; ".join(x.text() for x in report.harmful_gaps() if x.group == g.group)])
        head = f"<p><b>{esc(report.column)}</b>"
        if report.largest_gap:
            gap = report.largest_gap
            head += (f": largest accuracy gap {gap['gap']:.3f}{esc(_interval(gap['interval']))} "
                     f"({esc(gap['best'])} over {esc(gap['worst'])})")
        head += "</p>"
        notes = "".join(f'<p class="muted">{esc(note)}</p>' for note in report.notes)
        parts.append(head + table(["group", "test images", "accuracy [95 % CI]", "macro-F1", "ECE",
                                   "recall per class", "gaps that fail the group"], rows, numeric={1}) + notes)
    if result.skipped:
        parts.append('<p class="muted">Not compared: ' + esc("; ".join(f"{c} ({why})" for c, why in
                                                                       result.skipped.items())) + ".</p>")
    return "".join(parts)


def _balanced(ctx) -> str:
    parts = []
    for entry in ctx.models:
        if not entry.get("balanced"):
            continue
        path = ctx.root / "models" / entry["name"] / "balance.json"
        try:
            balance = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.info("report: cannot read %s (%s)", path, exc)
            continue
        if not (balance.get("before") and balance.get("after")):
            continue
        rows = []
        for before in balance["before"]["groups"]:
            after = next(g for g in balance["after"]["groups"] if g["group"] == before["group"])
            rows.append([before["group"], before["n"], f"{before['accuracy']:.3f}{_interval(before['accuracy_interval'])}",
                         f"{after['accuracy']:.3f}{_interval(after['accuracy_interval'])}",
                         f"{100 * (after['accuracy'] - before['accuracy']):+.1f}"])
        rows.append(["all test images", sum(g["n"] for g in balance["before"]["groups"]),
                     f"{balance['before_accuracy']:.3f}", f"{balance['after_accuracy']:.3f}",
                     f"{100 * (balance['after_accuracy'] - balance['before_accuracy']):+.1f}"])
        parts.append(f"<p>Model <b>{esc(entry['name'])}</b> refitted <b>{esc(balance['base'])}</b>'s head with every "
                     f"<b>{esc(balance['column'])}</b> group × class cell weighted equally ({len(balance['cells'])} "
                     f"cells, {balance['refit_s']:.1f} s). Every group, before and after, on the same test images:</p>"
                     + table(["group", "test images", "accuracy before", "accuracy after", "points"], rows,
                             numeric={1, 4}))
    return "".join(parts)


def _privacy(ctx) -> str:
    from ..privacy.audit import load_audit

    audit = load_audit(ctx.root)
    if audit is None:
        return missing("The images have not been audited for location, serial numbers, owners, thumbnails and faces.",
                       "pixelmine privacy")
    data = audit.to_dict()
    counts = data.get("counts", {})
    total = counts.get("images", 0)
    names = [("with_location", "carry a location (EXIF GPS, XMP, IPTC)"), ("with_serial", "carry a serial number"),
             ("with_owner", "name an owner or author"), ("with_thumbnail", "embed a thumbnail (the unedited original)"),
             ("with_faces", "show faces")]
    rows = [[what, counts.get(key, 0), f"{counts.get(key, 0) / total:.1%}" if total else "-"] for key, what in names
            if key in counts]
    body = f"<p>{total:,} images audited.</p>" + table(["images that", "count", "share"], rows, numeric={1, 2})
    flagged = [r for r in data.get("rows", []) if _carries(r)]
    if flagged:
        shown = []
        for r in flagged[:AUDIT_ROWS]:
            name = r.get("id", "")[:12] if ctx.anonymise_paths else (r.get("path") or "").rsplit("/", 1)[-1]
            shown.append([name, ", ".join(r.get("location") or []) or "-", ", ".join(r.get("serials") or []) or "-",
                          ", ".join(r.get("owners") or []) or "-", "yes" if r.get("thumbnail") else "-",
                          r.get("faces") if r.get("faces") is not None else "not checked"])
        body += table(["image", "location fields", "serial numbers", "owners", "thumbnail", "faces"], shown) + (
            f'<p class="muted">{len(flagged) - AUDIT_ROWS} more: pixelmine privacy --all</p>'
            if len(flagged) > AUDIT_ROWS else "")
    body += ("<p>To share images without these, <code>pixelmine export-data --output DIR</code> writes copies with "
             "location and thumbnails removed (JPEG losslessly) and faces filled; the originals are never "
             "touched.</p>")
    return body


def _carries(row: dict) -> bool:
    return bool(row.get("location") or row.get("serials") or row.get("owners") or row.get("thumbnail")
                or row.get("faces"))

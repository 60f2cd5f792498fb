"""The report's sections. Each takes the :class:`Context` and returns (anchor, nav title, HTML); a stage
that has not run yields a short note naming the command that produces it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np

from ..discover.finders import KINDS
from ..discover.findings import latest_discover_run, load_findings
from . import plots
from .html import bar, cards, count_table, esc, figure, missing, score_badge, section, table
from .thumbs import Thumbnails

log = logging.getLogger(__name__)

DUPLICATE_KINDS = ("exact_duplicate", "near_duplicate")
EXPLORE_KINDS = ("cluster",)
PER_KIND = 24  # flagged images shown per finding kind, worst first
GROUPS_SHOWN = 12  # duplicate groups shown
GROUP_MEMBERS = 8  # members shown per duplicate group


@dataclass
class Context:
    catalog: object  # the workspace's Catalog
    root: object  # the workspace directory (stored clusters, map, rules)
    images: dict[str, dict]  # image id -> catalog row (path, label, split, status, ...)
    thumbs: Thumbnails
    trained: object | None  # the Model whose evaluation the report shows (None: no model yet)
    models: list[dict] = field(default_factory=list)  # every model of the workspace (learn's list_models)
    kinds: list[str] = field(default_factory=list)  # finding kinds present in the catalog
    anonymise_paths: bool = False  # for sharing: images are named by their id, never by their file

    def file_name(self, image_id: str) -> str:
        """What an image is called in the report: its file name, or its id when paths are anonymised."""
        if self.anonymise_paths:
            return image_id[:12]
        return (self.images.get(image_id, {}).get("path") or "").rsplit("/", 1)[-1]

    def caption(self, image_id: str, extra: str = "") -> str:
        row = self.images.get(image_id, {})
        label = row.get("label")
        name = self.file_name(image_id)
        parts = [f"<b>{esc(label)}</b>" if label else "<i>unlabelled</i>", esc(name[:28]) or esc(image_id[:12])]
        if extra:
            parts.append(extra)
        return "<br>".join(parts)


def _flagged_count(catalog, kind: str) -> tuple[int, int]:
    run = latest_discover_run(catalog, kind)
    if run is None:
        return 0, 0
    row = catalog.query("SELECT COUNT(*), COALESCE(SUM(is_issue), 0) FROM findings WHERE run_id = ? AND kind = ?",
                        (run, kind))[0]
    return int(row[1]), int(row[0])


def _threshold(catalog, kind: str) -> str:
    """The finder's own words for where it draws the line (``details.threshold`` of its latest run)."""
    run = latest_discover_run(catalog, kind)
    if run is None:
        return ""
    rows = catalog.query("SELECT details FROM findings WHERE run_id = ? AND kind = ? AND details LIKE '%\"threshold\"%' "
                         "ORDER BY is_issue DESC LIMIT 1", (run, kind))
    if not rows:
        return ""
    details = json.loads(rows[0]["details"])
    text = str(details.get("threshold") or "")
    if text and details.get("label") is not None and kind.startswith("class_"):
        text += f" (for class {details['label']}; each class has its own)"
    return text


# -- overview ------------------------------------------------------------------------------------
def overview(ctx: Context) -> tuple[str, str, str]:
    status = ctx.catalog.summary()
    ok = status["images_by_status"].get("ok", 0)
    problems = sum(n for s, n in status["files_by_status"].items() if s not in ("ok",))
    flagged = {kind: _flagged_count(ctx.catalog, kind)[0] for kind in ctx.kinds if kind not in EXPLORE_KINDS}
    any_issue = len({r[0] for r in ctx.catalog.query(
        "SELECT DISTINCT f.image_id FROM findings f WHERE f.is_issue = 1 AND f.kind != 'cluster' AND f.run_id = "
        "(SELECT MAX(g.run_id) FROM findings g WHERE g.kind = f.kind)")})
    body = cards([("files", status["files"], ""), ("usable images", ok, "good"),
                  ("files with problems", problems, "bad" if problems else "good"),
                  ("classes", len([k for k in status["images_by_label"] if k != "(unlabelled)"]), ""),
                  ("exact duplicates", len(status["exact_duplicates"]), "warn" if status["exact_duplicates"] else ""),
                  ("images flagged", any_issue, "warn" if any_issue else "good")])
    body += '<div class="cols">' + count_table(status["files_by_status"], "Files by status") \
        + count_table(status["images_by_label"], "Images by label") \
        + count_table(status["images_by_format"], "Images by format") + "</div>"
    if status["label_conflicts"]:
        body += f"<p>{len(status['label_conflicts'])} images carry different labels under different paths " \
                "(their label is left empty): see <code>pixelmine status</code>.</p>"
    if flagged:
        largest = max(flagged.values()) or 1
        rows = []
        for kind, n in sorted(((k, n) for k, n in flagged.items() if n), key=lambda kv: -kv[1]):
            meaning, action = KINDS.get(kind, ("", ""))
            rows.append([f'<a href="#kind-{esc(kind)}">{esc(kind)}</a>', n, bar(n, largest, 120), meaning, action])
        body += "<h3>Findings at a glance</h3>" + table(["finding", "flagged", "", "what it means", "what to do"],
                                                         rows, numeric={1}, raw={0, 2})
        clean = sorted(k for k, n in flagged.items() if not n)
        if clean:
            body += "<p>Checked, nothing flagged: " + " ".join(
                f'<span class="tag">{esc(k.replace("_", " "))}</span>' for k in clean) + "</p>"
    else:
        body += missing("No findings yet.", "pixelmine discover")
    return "overview", "Overview", section("overview", "Overview", "What the collection holds.", body)


# -- one section per finding kind -----------------------------------------------------------------
_SKIP_DETAILS = {"group", "keeper", "is_keeper", "members", "neighbours", "neighbors", "neighbour_ids", "label",
                 "reason", "suggested_label", "group_size"}


def _detail_text(details: dict) -> str:
    parts = []
    if details.get("suggested_label") is not None:
        parts.append(f"suggested: <b>{esc(details['suggested_label'])}</b>")
    if details.get("reason"):
        parts.append(esc(str(details["reason"])[:90]))
    else:
        for key, value in details.items():
            if key in _SKIP_DETAILS or isinstance(value, (list, dict)) or len(parts) >= 2:
                continue
            parts.append(f"{esc(key)}: {esc(f'{value:.3g}' if isinstance(value, float) else value)}")
    return "<br>".join(parts)


def finding_kind(ctx: Context, kind: str) -> str:
    meaning, action = KINDS.get(kind, ("", ""))
    flagged, total = _flagged_count(ctx.catalog, kind)
    shown = load_findings(ctx.catalog, kind=kind, issues_only=True, limit=PER_KIND)
    body = f'<div class="what"><b>What to do:</b> {esc(action or "review the flagged images")}</div>'
    threshold = _threshold(ctx.catalog, kind)
    if threshold:
        body += f"<p><b>Flagged when</b> {esc(threshold)}.</p>"
    body += f"<p>{flagged:,} of {total:,} images flagged" + (
        f"; the {len(shown)} most severe (lowest score) are shown." if shown else ".") + "</p>"
    body += '<div class="grid">' + "".join(
        figure(ctx.thumbs(f.image_id), ctx.caption(f.image_id, score_badge(f.score) + " " + _detail_text(f.details)),
               title=f.image_id) for f in shown) + "</div>"
    return section(f"kind-{kind}", kind.replace("_", " ").capitalize(), meaning, body)


def findings(ctx: Context) -> list[tuple[str, str, str]]:
    out = []
    flagged = {kind: _flagged_count(ctx.catalog, kind)[0] for kind in ctx.kinds
               if kind not in EXPLORE_KINDS and kind not in DUPLICATE_KINDS}
    for kind in sorted(flagged, key=lambda k: (-flagged[k], k)):  # the most frequent problem first
        if flagged[kind]:  # a check that flagged nothing is listed in the overview, not given a section
            out.append((f"kind-{kind}", kind.replace("_", " ").capitalize(), finding_kind(ctx, kind)))
    return out


# -- duplicates ----------------------------------------------------------------------------------
def duplicates(ctx: Context) -> tuple[str, str, str]:
    present = [k for k in DUPLICATE_KINDS if k in ctx.kinds]
    lead = "Groups of images that are copies or near-copies of each other, side by side; the suggested keeper is framed green."
    if not present:
        return "duplicates", "Duplicates", section("duplicates", "Duplicates", lead,
                                                   missing("No duplicate findings yet.", "pixelmine discover"))
    body = ""
    for kind in present:
        meaning, action = KINDS.get(kind, ("", ""))
        groups: dict = {}
        for f in load_findings(ctx.catalog, kind=kind):
            group = f.details.get("group")
            if group is not None:
                groups.setdefault(group, []).append(f)
        ordered = sorted(groups.values(), key=lambda members: (min(f.score for f in members), -len(members)))
        flagged = [g for g in ordered if any(f.is_issue for f in g)]
        body += f"<h3 id=\"kind-{esc(kind)}\">{esc(kind.replace('_', ' '))}: {len(flagged):,} groups</h3>"
        body += f'<p class="lead">{esc(meaning)}</p><div class="what"><b>What to do:</b> {esc(action)}</div>'
        for members in flagged[:GROUPS_SHOWN]:
            first = members[0].details
            notes = []
            if any(f.details.get("straddles_splits") or f.details.get("straddles") for f in members):
                notes.append('<span class="tag flag">straddles train/test</span>')
            if any(f.details.get("conflicting_labels") for f in members):
                notes.append('<span class="tag flag">conflicting labels</span>')
            labels = sorted({str(ctx.images.get(f.image_id, {}).get("label")) for f in members})
            head = (f"group {esc(first.get('group'))} · {esc(first.get('group_size', len(members)))} images · labels "
                    f"{esc(', '.join(labels))} {' '.join(notes)}")
            members = sorted(members, key=lambda f: (not f.details.get("is_keeper"), f.score))[:GROUP_MEMBERS]
            body += f'<div class="group"><div class="head">{head}</div><div class="grid">' + "".join(
                figure(ctx.thumbs(f.image_id), ctx.caption(
                    f.image_id, "keeper" if f.details.get("is_keeper") else score_badge(f.score)),
                    css="keeper" if f.details.get("is_keeper") else "", title=f.image_id) for f in members) + "</div></div>"
        if len(flagged) > GROUPS_SHOWN:
            body += f"<p>… and {len(flagged) - GROUPS_SHOWN:,} more groups in the findings table.</p>"
    return "duplicates", "Duplicates", section("duplicates", "Duplicates", lead, body)


# -- clusters and the map -------------------------------------------------------------------------
def clusters(ctx: Context) -> tuple[str, str, str]:
    from ..discover.explore import load_clusters, load_map
    from ..errors import NotFittedError

    lead = ("Groups the features form on their own, without the labels: the 2-D map (UMAP) places similar "
            "images together. A cluster with no dominant label may be a category the labels do not have.")
    data = load_clusters(ctx.root)
    if data is None:
        return "clusters", "Clusters", section("clusters", "Clusters and map", lead,
                                               missing("No clusters yet.", "pixelmine clusters"))
    body = cards([("clusters", data["k"], ""),
                  ("silhouette", round(data["silhouette"], 3) if data.get("silhouette") is not None else "n/a", ""),
                  ("possible new categories", len(data.get("new_category", [])),
                   "warn" if data.get("new_category") else "good"),
                  ("method", data["method"], "")])
    try:
        mapping = load_map(ctx.root)
    except NotFittedError:
        mapping = None
    if mapping is not None and plots.available():
        assignment = {f.image_id: f.details.get("cluster") for f in load_findings(ctx.catalog, kind="cluster")}
        by_cluster = [f"cluster {assignment.get(i)}" if assignment.get(i, -1) != -1 else "noise" for i in mapping.ids]
        by_label = [str(ctx.images.get(i, {}).get("label") or "(unlabelled)") for i in mapping.ids]
        flagged = _issue_mask(ctx, mapping.ids)
        left = plots.scatter_map(mapping.xy, by_cluster, f"Clusters ({mapping.method.upper()} map)")
        right = plots.scatter_map(mapping.xy, by_label, "Labels (images with a finding haloed red)", highlight=flagged)
        body += '<div class="cols">' + "".join(f'<img class="plot" src="{u}" alt="map">' for u in (left, right) if u) + "</div>"
        if mapping.reason:
            body += f"<p>The map uses PCA instead of UMAP: {esc(mapping.reason)}.</p>"
    elif mapping is None:
        body += missing("No 2-D map yet.", "pixelmine clusters")
    curve = plots.silhouette_curve({int(k): v for k, v in (data.get("scores") or {}).items()}, data["k"])
    if curve:
        body += (f'<p>Number of clusters chosen by silhouette (higher = better separated):</p>'
                 f'<img class="plot" style="max-width:420px" src="{curve}" alt="silhouette by k">')
    rows = []
    for c in data["clusters"]:
        tags = " ".join(f'<span class="tag">{esc(name)} {p:.0%}</span>' for name, p in c["tags"])
        labels = ", ".join(f"{esc(k)} {v}" for k, v in list(c["labels"].items())[:4])
        flag = '<span class="tag flag">possible new category</span>' if c["new_category"] else ""
        thumbs = "".join(f'<img src="{u}" alt="" style="width:56px;height:56px;object-fit:cover;border-radius:3px;margin-right:3px">'
                         for u in (ctx.thumbs(i) for i in c.get("centre_ids", [])[:5]) if u)
        words = ", ".join(esc(name) for name, _ in c.get("words") or []) or "—"
        rows.append([("noise" if c["id"] == -1 else str(c["id"])), c["size"], f"{c['purity']:.2f}",
                     esc(c["dominant_label"] or "—") + " " + flag, labels, words, tags, thumbs])
    body += "<h3>Clusters</h3>" + table(["cluster", "images", "purity", "dominant label", "labels", "in words",
                                         "ImageNet tags", "typical images"], rows, numeric={1, 2}, raw={3, 4, 5, 6, 7})
    body += ('<div class="what"><b>What to do:</b> open the flagged clusters: a group the labels do not explain is '
             "a candidate new class, a mixed class worth splitting, or a labelling convention to write down. "
             "A label spread over several clusters may hide sub-types.</div>")
    return "clusters", "Clusters", section("clusters", "Clusters and map", lead, body)


def _issue_mask(ctx: Context, ids: list[str]) -> np.ndarray:
    flagged = {r[0] for r in ctx.catalog.query(
        "SELECT DISTINCT f.image_id FROM findings f WHERE f.is_issue = 1 AND f.kind != 'cluster' AND f.run_id = "
        "(SELECT MAX(g.run_id) FROM findings g WHERE g.kind = f.kind)")}
    return np.fromiter((i in flagged for i in ids), dtype=bool, count=len(ids))


# -- the model -------------------------------------------------------------------------------------
def model(ctx: Context) -> tuple[str, str, str]:
    lead = "How well a classifier trained on these features recognises the classes, on images it never saw."
    listing = [m for m in ctx.models if m.get("status") == "ready"]
    if ctx.trained is None or not listing:
        return "model", "Model", section("model", "Model", lead, missing("No trained model yet.", "pixelmine train"))
    name = ctx.trained.name
    try:
        metrics = ctx.trained.metrics
    except (OSError, ValueError) as exc:  # an unreadable model folder: say so, keep the rest of the report
        log.info("report: cannot read the metrics of model %s (%s)", name, exc)
        return "model", "Model", section("model", "Model", lead,
                                         missing(f"Model {name!r} has no readable metrics.", f"pixelmine train --name {name}"))
    test = metrics.get("test", {})
    headline = test.get("metrics", {})
    intervals = test.get("intervals", {})
    body = f"<p>Model <code>{esc(name)}</code> — " + esc(", ".join(
        f"{m['name']} ({m.get('head')}, acc {m['accuracy']:.3f})" if m.get("accuracy") is not None else m["name"]
        for m in listing)) + f" in this workspace. Test split: n = {esc(test.get('n', '?'))}.</p>"
    items = []
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        if key in headline:
            span = intervals.get(key)
            items.append((key.replace("_", " ") + (f" (95 % CI {span[0]:.3f}–{span[1]:.3f})" if span else ""),
                          round(float(headline[key]), 3), ""))
    body += cards(items)
    classes = test.get("classes", [])
    confusion = test.get("confusion")
    cols = []
    if confusion and classes:
        cols.append("<div><h3>Confusion matrix (rows: true, columns: predicted)</h3>" + _confusion(classes, confusion) + "</div>")
    per_class = test.get("per_class", [])
    if per_class:
        cols.append("<div><h3>Per class</h3>" + table(
            ["class", "precision", "recall", "F1", "support"],
            [[r["class"], r["precision"], r["recall"], r["f1"], r["support"]] for r in per_class],
            numeric={1, 2, 3, 4}) + "</div>")
    body += '<div class="cols">' + "".join(cols) + "</div>"
    oof = metrics.get("oof", {}).get("metrics", {})
    if oof:
        body += (f"<p>Cross-validated over all labelled images: accuracy {oof.get('accuracy', float('nan')):.3f}, "
                 f"macro-F1 {oof.get('macro_f1', float('nan')):.3f}.</p>")
    body += _selection(metrics.get("selection")) + _cleaning(metrics.get("cleaning"))
    body += ('<div class="what"><b>What to do:</b> the largest off-diagonal cells are the class pairs to look at '
             "first: their label issues and overlaps usually explain most errors.</div>")
    return "model", "Model", section("model", "Model", lead, body)


def _selection(selection: dict | None, limit: int = 12) -> str:
    """The automatic search's leaderboard (candidate, rung, images, CV score +- spread, seconds)."""
    if not selection:
        return ""
    chosen = selection["chosen"]
    rows = [[t["candidate"] if t["head"] != "*" else f"features {t['features']}", t["rung"], t["n_images"],
             "" if t["score"] is None else round(float(t["score"]), 3),
             "" if t["spread"] is None else round(float(t["spread"]), 3), round(float(t["seconds"]), 1),
             t["status"] if t["status"] == "scored" else f"{t['status']}: {t['reason']}"]
            for t in selection["leaderboard"][:limit]]
    notes = "".join(f"<li>{esc(n)}</li>" for n in selection.get("notes", []))
    return (f"<h3>How this model was chosen</h3><p>Automatic selection in {selection['elapsed_s']:.0f} s of a "
            f"{selection['budget_s']:.0f} s budget, by cross-validated balanced accuracy on train + val (the test "
            f"split was not used): <b>{esc(chosen['head'])} on <code>{esc(chosen['features'])}</code></b>.</p>"
            + table(["candidate", "rung", "images", "CV score", "± folds", "seconds", "status"], rows,
                    numeric={2, 3, 4, 5})
            + (f"<ul>{notes}</ul>" if notes else ""))


def _cleaning(cleaning: dict | None) -> str:
    """The clean loop: what was left out, and test accuracy before and after on the same test images."""
    if not cleaning:
        return ""
    left = ", ".join(f"{n} {k.replace('_', ' ')}s" for k, n in cleaning.get("counts", {}).items()) or "nothing"
    text = f"<h3>Trained on cleaned data</h3><p>Left out of train and val: {esc(left)} (listed in cleaning.json).</p>"
    paired = cleaning.get("paired_accuracy_difference") or {}
    if cleaning.get("before") and paired.get("difference") is not None:
        text += (f"<p>Test accuracy {cleaning['before']['metrics']['accuracy']:.3f} before (same head, uncleaned "
                 f"data), {cleaning['after']['metrics']['accuracy']:.3f} after: {paired['difference']:+.3f} "
                 f"(paired 95 % CI {paired['interval'][0]:+.3f} to {paired['interval'][1]:+.3f}) on the same "
                 f"{paired['n']} test images.</p>")
    return text


def _confusion(classes: list[str], confusion: list[list[int]]) -> str:
    matrix = np.asarray(confusion, dtype=float)
    rows_total = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows_total, out=np.zeros_like(matrix), where=rows_total > 0)
    head = "<tr><th></th>" + "".join(f"<th>{esc(c)}</th>" for c in classes) + "</tr>"
    rows = []
    for i, name in enumerate(classes):
        cells = []
        for j in range(len(classes)):
            alpha = 0.08 + 0.85 * share[i, j]
            colour = ("transparent" if matrix[i, j] == 0 else f"rgba(11,95,255,{alpha:.2f})" if i == j
                      else f"rgba(198,40,40,{min(0.93, alpha * 1.6):.2f})")
            ink = "#fff" if share[i, j] > 0.45 else "#1d2330"
            cells.append(f'<td style="background:{colour};color:{ink}" title="{share[i, j]:.1%}">{int(matrix[i, j])}</td>')
        rows.append(f"<tr><th>{esc(name)}</th>{''.join(cells)}</tr>")
    return f'<table class="cm">{head}{"".join(rows)}</table>'


# -- association rules ------------------------------------------------------------------------------
def rules(ctx: Context) -> tuple[str, str, str]:
    from ..discover.explore import load_rules

    lead = ("Properties that go together more often than chance (FP-growth over one transaction per image: label, "
            "prediction, ImageNet tags, cluster, findings, metadata).")
    data = load_rules(ctx.root)
    if data is None:
        return "rules", "Rules", section("rules", "Association rules", lead, missing("No rules yet.", "pixelmine rules"))
    config = data.get("config", {})
    body = (f"<p>{len(data['rules'])} rules from {data['n_transactions']:,} images (support ≥ "
            f"{config.get('min_support')}, confidence ≥ {config.get('min_confidence')}, lift ≥ "
            f"{config.get('min_lift')}, Bonferroni-adjusted p ≤ {config.get('alpha')}); rules about labels and "
            "issues first.</p>")
    if data["rules"]:
        rows = [[*(r["described"].split(" ⇒ ") if r.get("described") else (" ∧ ".join(r["antecedent"]), r["consequent"])),
                 r["count"], r["support"], r["confidence"], r["lift"]] for r in data["rules"][:60]]
        rows = [[row[0], "⇒ " + row[1], *row[2:]] for row in rows]
        body += table(["if", "then", "images", "support", "confidence", "lift"], rows, numeric={2, 3, 4, 5})
    body += ('<div class="what"><b>How to read it:</b> <i>confidence</i> is how often the right side holds when the '
             "left side does; <i>lift</i> is how many times more often than for the collection as a whole. A rule "
             "that ends in an issue points at where problems come from (a camera, a site, a class); a rule that "
             "ends in a label may be a shortcut a model can learn instead of the object.</div>")
    return "rules", "Rules", section("rules", "Association rules", lead, body)


# -- thresholds and what to do ----------------------------------------------------------------------
def _flatten(prefix: str, value, out: list) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out.append((prefix, value))


def thresholds(ctx: Context) -> tuple[str, str, str]:
    lead = "The settings behind every finding, and what to do about each kind."
    body = ""
    runs = [r for r in ctx.catalog.runs("discover", 20) if r["status"] == "completed"]
    seen = set()
    for run in runs:
        key = json.dumps(run["config"], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        items: list = []
        _flatten("", run["config"], items)
        if items:
            body += f"<h3>Discover run {run['id']} ({esc(run['started_at'][:19])})</h3>" + table(
                ["setting", "value"], [[k, json.dumps(v) if isinstance(v, (list, tuple)) else v] for k, v in items])
        if len(seen) >= 3:
            break
    if not body:
        body += missing("No discover run recorded yet.", "pixelmine discover")
    kinds = [k for k in KINDS if k in ctx.kinds] + [k for k in ctx.kinds if k not in KINDS]
    if kinds:
        body += "<h3>Every finding kind</h3>" + table(
            ["kind", "what it means", "flagged when", "what to do"],
            [[k, KINDS.get(k, ("", ""))[0], _threshold(ctx.catalog, k) or "—", KINDS.get(k, ("", ""))[1]]
             for k in kinds])
    body += ("<p>Scores run from 0 to 1, low = severe; each finder flags an image (<i>is_issue</i>) past its own "
             "threshold, relative to this collection.</p>")
    return "thresholds", "Thresholds", section("thresholds", "Thresholds and what to do", lead, body)

"""pixelmine discover / findings."""

from __future__ import annotations

import click

from .common import common_options, table
from ..defaults import DEFAULT_BACKBONE


def render_discover(result) -> str:
    """The summary of a discover run: a table per kind, then the estimates and class tables."""
    from ..discover import KINDS

    rows = [(kind, c["findings"], c["issues"], _short(KINDS.get(kind, ("", ""))[0], 70))
            for kind, c in result.counts.items()]
    lines = [f"discover run {result.run_id}: {result.summary.get('images', 0)} images in {result.elapsed_s:.1f} s", "",
             table(rows, ("kind", "images", "issues", "meaning"))]
    if result.summary.get("without_features"):
        lines.append(f"\n{result.summary['without_features']} images have no features and were left out "
                     "(run: pixelmine extract)")
    errors = result.summary.get("label_errors", {})
    if "estimated" in errors:
        lines.append(f"\nlabel errors: about {errors['estimated']} of {errors['labelled']} labels are wrong "
                     f"(cleanlab estimate); {errors['flagged']} flagged, from {errors['probabilities']}")
    classes = result.summary.get("classes", {})
    if classes.get("counts"):
        lines.append(f"\nclasses: {len(classes['counts'])}, imbalance ratio {classes['imbalance_ratio']}"
                     + (f", rare: {', '.join(classes['rare_classes'])}" if classes["rare_classes"] else ""))
        pairs = classes.get("confusion_pairs") or []
        overlap = {tuple(p["classes"]): p["overlap"] for p in classes.get("overlap_pairs", [])}
        if pairs:
            lines.append(table([(" / ".join(p["classes"]), f"{p['confusion_rate']:.1%}",
                                 f"{overlap[tuple(p['classes'])]:.1%}" if tuple(p["classes"]) in overlap else "-")
                                for p in pairs[:5]], ("most confused classes", "confused", "feature overlap")))
    return "\n".join(lines)


@click.command("discover")
@click.option("--only", multiple=True, metavar="KIND",
              help="Run only this finder (quality, duplicates, outliers, label_issues, classes, clusters) or the finder "
                   "of this finding kind (repeatable). Default: all.")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True, help="Whose cached features to use.")
@click.option("--model", help="Model whose out-of-fold probabilities find label errors (default: the latest; "
                              "computed here when there is none).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Processes that decode images for the quality statistics.")
@common_options
def discover_command(ws, out, only, backbone, model, workers):
    """Find duplicates, outliers, label errors, quality problems and class imbalance.

    \b
    Examples:
      pixelmine discover
      pixelmine discover --only near_duplicate --only label_issue --json

    Needs features first (pixelmine extract). Every run is recorded; list what it found with
    pixelmine findings.
    """
    result = ws.discover(only=list(only) or None, backbone=backbone, model=model, workers=workers,
                         progress=out.progress)
    out.result(result.to_dict())
    out.say(render_discover(result))
    if not out.quiet:
        out.say("\nWorst first: pixelmine findings --issues --kind KIND")


@click.command("findings")
@click.option("--kind", help="Only findings of this kind (near_duplicate, outlier, label_issue, blurry, ...).")
@click.option("--issues", "issues_only", is_flag=True, help="Only flagged images (is_issue).")
@click.option("--run", "run_id", type=int, help="A discover run id (default: the latest that has the kind).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many rows (worst first).")
@click.option("--export", "export", type=click.Path(dir_okay=False),
              help="Write the findings to a .csv, .json or .parquet file instead of listing them.")
@common_options
def findings_command(ws, out, kind, issues_only, run_id, limit, export):
    """List findings, worst (lowest score) first, or export them.

    \b
    Examples:
      pixelmine findings --kind label_issue --issues
      pixelmine findings --issues --export findings.parquet
    """
    from ..discover import export_findings

    rows = ws.findings(kind, issues_only=issues_only, run_id=run_id, limit=limit)
    if export:
        path = export_findings(rows, export)
        out.result({"exported": path, "findings": len(rows)})
        out.say(f"{len(rows)} findings written to {path}")
        return
    out.result([f.to_dict() for f in rows])
    if not rows:
        out.say("no findings" + (f" of kind {kind!r}" if kind else "") + "; run: pixelmine discover")
        return
    out.say(table([(f.image_id[:12], f.kind, f"{f.score:.3f}", "yes" if f.is_issue else "no", _brief(f.details))
                   for f in rows], ("image", "kind", "score", "issue", "details")))


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _brief(details: dict) -> str:
    return _short(details.get("reason") or details.get("threshold") or "", 90)


COMMANDS = [discover_command, findings_command]

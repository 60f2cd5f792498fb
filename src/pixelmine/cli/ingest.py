"""pixelmine ingest / status / files."""

from __future__ import annotations

import click

from ..ingest import MISSING, STATUSES, IngestConfig
from .common import common_options, table

_DEFAULTS = IngestConfig()
_SHOWN_EXTENSIONS = 5  # extensions named in the "skipped" line; --json has them all


@click.command("ingest")
@click.argument("sources", nargs=-1, type=click.Path())
@click.option("--labels-from-folders", is_flag=True, help="Use each file's first folder below SOURCE as its label.")
@click.option("--manifest", type=click.Path(dir_okay=False),
              help="CSV/TSV/Parquet/JSONL with a path column (relative to the manifest), an optional label "
                   "column, and any other columns kept as metadata.")
@click.option("--path-column", help="Manifest column holding the paths (default: path, file, filename, ...).")
@click.option("--label-column", help="Manifest column holding the labels (default: label, class, ...).")
@click.option("--include", multiple=True, metavar="GLOB", help="Only files matching this glob (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files matching this glob (repeatable).")
@click.option("--workers", type=click.IntRange(min=1), help="Processes to use (default: all cores).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=_DEFAULTS.max_pixels, show_default=True,
              help="Images with more pixels are 'too_large' and never decoded (decompression-bomb guard).")
@click.option("--min-side", type=click.IntRange(min=1), default=_DEFAULTS.min_side, show_default=True,
              help="Images with a shorter side (pixels) are 'too_small'.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=_DEFAULTS.timeout_s,
              show_default=True, help="Seconds allowed to decode one file.")
@common_options
def ingest_command(ws, out, sources, manifest, **options):
    """Validate and catalogue images from folders, files or a manifest.

    \b
    Examples:
      pixelmine ingest photos/ --labels-from-folders
      pixelmine ingest --manifest labels.csv
      pixelmine ingest shots/ --include '*.jpg' --exclude 'thumbs/*' --json

    Re-running is cheap: unchanged files (same path, size and mtime) are not decoded again, changed and
    deleted files are detected, and an interrupted run resumes where it stopped. Your files are only read.
    """
    options = {k: v for k, v in options.items() if v is not None}
    result = ws.ingest(list(sources) or None, manifest=manifest, progress=out.progress, **options)
    data = result.to_dict()
    out.result(data)
    out.say(f"ingest run {result.run_id}: {result.files_seen} files in {result.elapsed_s:.1f} s "
            f"({result.new} new, {result.changed} changed, {result.unchanged} unchanged, {result.missing} missing)")
    if result.by_status:
        out.say(table(sorted(result.by_status.items(), key=lambda kv: -kv[1]), ("status", "files")))
    if result.skipped:
        out.say("\n" + render_skipped(result.skipped_by_extension, hint=not out.quiet))
    problems = {k: v for k, v in result.by_status.items() if k != "ok"}
    if problems and not out.quiet:
        out.say(f"\nSee why with: pixelmine files --status {max(problems, key=problems.get)}")


def render_skipped(by_extension: dict[str, int], *, hint: bool = True) -> str:
    """'skipped N files ...: .bin 40, .txt 3, ...' and the --include options that would take them."""
    ranked = sorted(by_extension.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ranked[:_SHOWN_EXTENSIONS]
    total = sum(by_extension.values())
    text = (f"skipped {total} {'file' if total == 1 else 'files'} without an image extension: "
            + ", ".join(f"{ext or '(no extension)'} {count}" for ext, count in shown))
    if len(ranked) > len(shown):
        text += f" and {len(ranked) - len(shown)} more extensions (--json lists all)"
    if hint:
        # --include replaces the extension filter, so a re-run with these patterns adds just those files;
        # what is catalogued already stays. A file without an extension has no pattern of its own but '*'.
        patterns = " ".join(f"--include '*{ext}'" for ext, _ in shown if ext)
        text += ("\nTo ingest them too, run the same command with " + (f"{patterns} (or " if patterns else "")
                 + "--include '*' for every file" + (")" if patterns else ""))
    return text


def render_status(summary: dict) -> str:
    lines = [f"{summary['files']} files, {summary['images']} unique images", ""]
    lines.append(table([(k, v, STATUSES.get(k, "seen before, gone from disk now")) for k, v in
                        summary["files_by_status"].items()], ("status", "files", "meaning")))
    if summary["images_by_label"]:
        lines += ["", table(list(summary["images_by_label"].items()), ("label", "ok images"))]
    if summary["images_by_format"]:
        lines += ["", table(list(summary["images_by_format"].items()), ("format", "images"))]
    duplicates = summary["exact_duplicates"]
    if duplicates:
        extra = sum(len(d["paths"]) - 1 for d in duplicates)
        lines += ["", f"exact duplicates: {len(duplicates)} images stored under more than one path "
                      f"({extra} redundant files)"]
        for group in duplicates[:5]:
            lines.append(f"  {group['image_id'][:12]}: " + ", ".join(group["paths"][:4])
                         + (" ..." if len(group["paths"]) > 4 else ""))
        if len(duplicates) > 5:
            lines.append(f"  ... and {len(duplicates) - 5} more (pixelmine status --json lists all)")
    conflicts = summary["label_conflicts"]
    if conflicts:
        lines += ["", f"conflicting labels: {len(conflicts)} images carry different labels at different paths"]
        for item in conflicts[:5]:
            lines.append(f"  {item['image_id'][:12]}: {', '.join(item['labels'])}")
    return "\n".join(lines)


@click.command("status")
@common_options
def status_command(ws, out):
    """Counts by status, label and format; exact duplicates; conflicting labels.

    \b
    Example:
      pixelmine status --workspace my-ws
    """
    summary = ws.status()
    out.result(summary)
    out.say(render_status(summary))


@click.command("files")
@click.option("--status", "status", type=click.Choice([*STATUSES, MISSING]),
              help="Only files with this status (default: all present files).")
@click.option("--problems", is_flag=True, help="Only files whose status is not 'ok'.")
@common_options
def files_command(ws, out, status, problems):
    """List files with their status and, for problems, what is wrong and what to do.

    \b
    Examples:
      pixelmine files --status truncated
      pixelmine files --problems --json
    """
    rows = ws.files(status)
    if problems:
        rows = [r for r in rows if r["status"] != "ok"]
    out.result([{k: r[k] for k in ("path", "status", "error", "image_id", "label", "size")} for r in rows])
    for row in rows:
        out.say(f"{row['status']}\t{row['path']}" + (f"\t{row['error']}" if row["error"] else ""))


COMMANDS = [ingest_command, status_command, files_command]

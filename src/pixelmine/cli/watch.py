"""pixelmine watch: recognise and flag each image as it arrives in a folder."""

from __future__ import annotations

import json
import sys

import click

from ..fileio import json_default
from .common import common_options


def _summary(event: dict) -> str | None:
    """One short line for a person watching the terminal (stderr); None for events not worth a line."""
    kind = event["type"]
    if kind == "image":
        what = event.get("label") or event["status"]
        if event.get("probability") is not None:
            what += f" {event['probability']:.2f}"
        flags = ", ".join(event.get("flags") or [])
        return f"{event['path']}: {what}" + (f"  [{flags}]" if flags else "")
    if kind == "missing":
        return f"{event['path']}: missing" + (f" ({event['error']})" if event.get("error") else "")
    if kind == "watch_started":
        counts = event["reconciled"]
        return (f"watching {', '.join(event['dirs'])} ({event['mode']}: {event['mode_reason']}); model "
                f"{event['model'] or '(none)'}; since last time: {counts['new']} new, {counts['changed']} changed, "
                f"{counts['missing']} missing, {counts['unchanged']} unchanged")
    if kind == "alarm":
        return "DRIFT ALARM: " + "; ".join(event.get("reasons") or [])
    if kind == "watch_stopped":
        counts = event.get("counts") or {}
        return f"stopped ({event['reason']}): {counts.get('images', 0)} images, {counts.get('missing', 0)} missing"
    return None


@click.command("watch")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--model", help="Model to predict with (default: the newest trained model, if any).")
@click.option("--backbone", help="Without a model: the backbone that embeds (default mobilenet_v2).")
@click.option("--polling", "mode", flag_value="polling", help="List the folders instead of inotify (network mounts).")
@click.option("--inotify", "mode", flag_value="inotify", help="Use inotify close-write events (Linux, local disks).")
@click.option("--webhook", metavar="URL", help="POST each event as JSON to this URL (retried, never blocking).")
@click.option("--labels-from-folders", is_flag=True, help="Use each file's first folder below DIR as its label.")
@click.option("--settle", "settle_s", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Polling: seconds a file's size and mtime must stay unchanged before it is read.")
@click.option("--batch-max", type=click.IntRange(min=1), default=32, show_default=True,
              help="Files embedded together at most when they arrive in a burst.")
@click.option("--max-events", type=click.IntRange(min=1), help="Stop after this many events.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.001), help="Stop after this many seconds.")
@common_options
def watch_command(ws, out, dirs, mode, **options):
    """Watch folders; catalogue, predict and flag each image as it arrives.

    On start, files that arrived (or left) while the watch was not running are reconciled. Then every
    complete new or changed image is validated and catalogued like ingest, predicted by the model, checked
    for near-duplicates and novelty, and printed as one JSON line on stdout (also stored in the catalog,
    and POSTed to --webhook). Deleted files become 'missing'. Ctrl-C stops cleanly.

    \b
    Examples:
      pixelmine watch incoming/ --model logreg-mobilenet_v2
      pixelmine watch /mnt/share/shots --polling --settle 2 --webhook http://127.0.0.1:9000/hook
      pixelmine watch incoming/ --max-events 10 > events.jsonl
    """
    events = ws.watch(list(dirs), mode=mode or "auto", **options)
    try:
        for event in events:
            sys.stdout.write(json.dumps(event, default=json_default) + "\n")
            sys.stdout.flush()
            if not out.quiet:
                line = _summary(event)
                if line:
                    click.echo(line, err=True)
    except KeyboardInterrupt:
        events.close()
        if not out.quiet:
            click.echo("watch stopped (Ctrl-C); every event so far is in the catalog.", err=True)


COMMANDS = [watch_command]

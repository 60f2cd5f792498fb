"""pixelmine demo."""

from __future__ import annotations

import click

from ..demo import run_demo
from .common import common_options
from .ingest import render_status


@click.command("demo")
@common_options
def demo_command(ws, out):
    """Run the whole pipeline on the embedded demo data set (2,000 textile photos, 3 classes).

    \b
    Example:
      pixelmine demo --workspace demo-ws
    """
    out.note(f"workspace: {ws.root}")
    results = run_demo(ws, progress=out.progress)
    ingest = results["ingest"]
    out.result({"data": results["data"], "ingest": ingest.to_dict(), "status": results["status"],
                "discover": results["discover"].to_dict() if results.get("discover") else None})
    out.say(f"demo data: {results['data']}")
    out.say(f"ingest: {ingest.files_seen} files in {ingest.elapsed_s:.1f} s "
            f"({ingest.validated} decoded, {ingest.unchanged} unchanged since the last run)\n")
    out.say(render_status(results["status"]))
    if results.get("discover") is not None:
        from .discover import render_discover

        out.say("\n" + render_discover(results["discover"]))
    elif results.get("discover_skipped"):
        out.say(f"\ndiscovery skipped: {results['discover_skipped']}")
    out.say(f"\nNext: pixelmine files --problems --workspace {ws.root}")


COMMANDS = [demo_command]

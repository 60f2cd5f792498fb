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
                "extract": results["extract"].to_dict() if results.get("extract") else None,
                "model": ({"name": results["model"].name, "test": results["model"].metrics["test"]}
                          if results.get("model") else None),
                "discover": results["discover"].to_dict() if results.get("discover") else None,
                "report": results.get("report")})
    out.say(f"demo data: {results['data']}")
    out.say(f"ingest: {ingest.files_seen} files in {ingest.elapsed_s:.1f} s "
            f"({ingest.validated} decoded, {ingest.unchanged} unchanged since the last run)")
    if results.get("extract") is not None:
        extract = results["extract"]
        out.say(f"features: {extract.backbone}, {extract.computed} computed, {extract.cached} cached, "
                f"{extract.failed} failed in {extract.elapsed_s:.1f} s ({extract.backend})")
    out.say()
    out.say(render_status(results["status"]))
    if results.get("model") is not None:
        model = results["model"]
        out.say(f"\nclassifier {model.name}: {model.head} on {model.backbone} features, "
                f"{model.info['n_train']} train / {model.info['n_val']} val / {model.info['n_test']} test images")
        selection = model.metrics.get("selection")
        if selection:
            scored = sum(1 for t in selection["leaderboard"] if t["status"] == "scored")
            out.say(f"chosen automatically: {scored} candidates scored by cross-validation in "
                    f"{selection['elapsed_s']:.0f} s (leaderboard: {model.dir / 'card.md'})")
        out.say(model.test_evaluation().table())
    if results.get("discover") is not None:
        from .discover import render_discover

        out.say("\n" + render_discover(results["discover"]))
    elif results.get("discover_skipped"):
        out.say(f"\ndiscovery skipped: {results['discover_skipped']}")
    if results.get("clusters"):
        clusters = results["clusters"]
        out.say(f"\nclusters: {clusters['k']} ({clusters['method']}), "
                f"{len(clusters.get('new_category', []))} possible new categories")
    if results.get("rules") is not None:
        out.say(f"association rules: {len(results['rules']['rules'])} (pixelmine rules --show)")
    if results.get("report"):
        out.say(f"\nreport: {results['report']}  (open it in a browser; it works offline)")
    out.say(f"\nNext: pixelmine files --problems --workspace {ws.root}")
    out.say(f"Web UI: pixelmine serve --workspace {ws.root}  (open the http://127.0.0.1:8000/ link it prints)")


COMMANDS = [demo_command]

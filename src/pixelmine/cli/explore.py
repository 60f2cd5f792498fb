"""pixelmine clusters / rules / similar / report."""

from __future__ import annotations

import click

from .common import common_options, table
from ..defaults import DEFAULT_BACKBONE


@click.command("clusters")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True, help="Features to cluster.")
@click.option("--method", type=click.Choice(["kmeans", "hdbscan"]), default="kmeans", show_default=True,
              help="k-means with k chosen by silhouette, or HDBSCAN (density; leaves noise unassigned).")
@click.option("--k-max", type=click.IntRange(min=2), default=20, show_default=True, help="Largest k tried (k-means).")
@click.option("--map", "map_method", type=click.Choice(["umap", "pca"]), default="umap", show_default=True,
              help="How the 2-D map is drawn.")
@click.option("--show", is_flag=True, help="List the stored clusters without computing them again.")
@common_options
def clusters_command(ws, out, backbone, method, k_max, map_method, show):
    """Group the images in feature space and draw the 2-D map (an automatic number of clusters).

    Each cluster is described by its dominant label, purity and ImageNet tags; a cluster with no dominant
    label is flagged as a possible new category.

    \b
    Examples:
      pixelmine clusters
      pixelmine clusters --method hdbscan --map pca --json
      pixelmine clusters --show
    """
    if not show:
        out.note("clustering (and drawing the map; UMAP compiles itself on its first run, ~30 s)...")
        ws.discover_clusters(backbone=backbone, method=method, k_max=k_max, map_method=map_method)
    data = ws.clusters()
    out.result(data)
    silhouette = f"{data['silhouette']:.3f}" if data.get("silhouette") is not None else "n/a"
    out.say(f"{data['k']} clusters ({data['method']}, silhouette {silhouette}); map: {ws.root / 'index' / 'map2d.npz'}")
    rows = [("noise" if c["id"] == -1 else c["id"], c["size"], f"{c['purity']:.2f}", c["dominant_label"] or "-",
             ", ".join(t for t, _ in (c.get("words") or c["tags"])[:3]), "NEW?" if c["new_category"] else "")
            for c in data["clusters"]]
    out.say(table(rows, ("cluster", "images", "purity", "dominant label", "in words", "flag")))


@click.command("rules")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True, help="Features whose ImageNet tags are items.")
@click.option("--model", help="Model whose out-of-fold predictions are items (default: the newest, if any).")
@click.option("--min-support", type=click.FloatRange(0, 1, min_open=True), default=0.02, show_default=True,
              help="Share of images a rule must cover.")
@click.option("--min-confidence", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="P(then | if).")
@click.option("--min-lift", type=click.FloatRange(min=0), default=1.2, show_default=True,
              help="How many times more often than chance.")
@click.option("--limit", type=click.IntRange(min=1), default=30, show_default=True, help="Rules printed.")
@click.option("--show", is_flag=True, help="List the stored rules without mining again.")
@common_options
def rules_command(ws, out, backbone, model, min_support, min_confidence, min_lift, limit, show):
    """Association rules: labels, predictions, tags, clusters, findings and metadata that go together.

    \b
    Examples:
      pixelmine rules
      pixelmine rules --min-support 0.01 --min-lift 1.5 --json
    """
    options = {} if show else {"min_support": min_support, "min_confidence": min_confidence, "min_lift": min_lift}
    data = ws.rules(backbone=backbone, model=model, refresh=not show, **options)
    out.result(data)
    out.say(f"{len(data['rules'])} rules over {data['n_transactions']} images")
    rows = [(*(r["described"].split(" ⇒ ") if r.get("described") else (" & ".join(r["antecedent"]), r["consequent"])),
             r["count"], f"{r['confidence']:.2f}", f"{r['lift']:.2f}") for r in data["rules"][:limit]]
    if rows:
        out.say(table(rows, ("if", "then", "images", "confidence", "lift")))


@click.command("similar")
@click.argument("image")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Neighbours to list.")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True, help="Features to search.")
@common_options
def similar_command(ws, out, image, k, backbone):
    """The images most similar to IMAGE: an image id (or a unique prefix), a catalogued path, or a new file.

    \b
    Examples:
      pixelmine similar 3fa2c1 -k 5
      pixelmine similar ~/Downloads/new-photo.jpg --json
    """
    neighbours = ws.similar(image, k, backbone=backbone)
    out.result([n.to_dict() for n in neighbours])
    out.say(table([(n.rank, f"{n.similarity:.3f}", n.image_id[:12], n.label or "-", n.path or "-")
                   for n in neighbours], ("rank", "cosine", "image", "label", "path")))


@click.command("report")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="HTML file to write "
              "(default: reports/report.html in the workspace).")
@click.option("--model", help="Model whose metrics are shown (default: the newest).")
@click.option("--anonymise-paths", is_flag=True,
              help="Name images by their id instead of their file, and leave out where the workspace is (to share).")
@common_options
def report_command(ws, out, output, model, anonymise_paths):
    """Write the audit as one self-contained HTML file (opens offline; thumbnails and plots embedded).

    \b
    Examples:
      pixelmine report
      pixelmine report --output audit.html
      pixelmine report --anonymise-paths --output to-share.html
    """
    path = ws.report(output, model=model, anonymise_paths=anonymise_paths)
    out.result({"report": str(path), "bytes": path.stat().st_size})
    out.say(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB)")


COMMANDS = [clusters_command, rules_command, similar_command, report_command]

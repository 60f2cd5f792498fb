"""pixelmine search / zero-shot: images found and labelled with words. Thin: parse, call, print."""

from __future__ import annotations

import click

from .common import common_options, table


@click.command("search")
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(min=1, max=10_000), default=20, show_default=True,
              help="Images to list.")
@click.option("--backbone", help="A clip:ARCH/PRETRAINED backbone, or one with ImageNet tags for the offline "
                                 "search (default: cached CLIP features, else mobilenet_v2's tags).")
@common_options
def search_command(ws, out, query, k, backbone):
    """Find images by what is in them, in words.

    \b
    Examples:
      pixelmine search "a dog on grass"
      pixelmine search "a cup of coffee" -k 5 --json
      pixelmine search "a scratched bottle cap" --backbone clip:ViT-B-32/laion2b_s34b_b79k

    With a CLIP backbone's features cached (pixelmine extract --backbone clip:...), images are ranked by
    cosine similarity to the query in CLIP's joint space. Otherwise, offline: the query is matched to the
    1,000 ImageNet concepts and images are ranked by their ImageNet tags on those concepts; a query far from
    every concept is said to be out of sight.
    """
    result = ws.search_text(query, k, backbone=backbone)
    out.result(result.to_dict())
    if result.note:
        out.say(f"note: {result.note}")
    if result.concepts:
        out.say("matched ImageNet concepts: " + ", ".join(f"{name} ({sim:.2f})" for name, sim in result.concepts))
    if not result.hits:
        out.say(f"no image matches {query!r} ({result.method} on {result.backbone})")
        return
    out.say(f"{len(result.hits)} images for {query!r} ({result.method} on {result.backbone}):")
    out.say(table([(h.rank, f"{h.score:.3f}", h.image_id[:12], h.label or "-", h.path or "-") for h in result.hits],
                  ("rank", "score", "image", "label", "path")))


@click.command("zero-shot")
@click.option("--labels", help="Comma-separated label names, e.g. \"cat,dog,car\".")
@click.option("--labels-from-folders", "from_labels", is_flag=True,
              help="Use the labels the images already carry (e.g. their folder names) as the label set.")
@click.option("--backbone", help="A clip:ARCH/PRETRAINED backbone, or one with ImageNet tags for the offline "
                                 "labeller (default: cached CLIP features, else mobilenet_v2's tags).")
@click.option("--template", "templates", multiple=True, metavar="TEXT",
              help="Prompt template with {} for the label (repeatable; CLIP only; default: 8 photo prompts).")
@click.option("--as-labels", is_flag=True,
              help="Record confident predictions of unlabelled images as label corrections (source zero-shot).")
@click.option("--min-probability", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="With --as-labels: the top probability a pseudo-label needs.")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True, help="Predictions listed.")
@common_options
def zero_shot_command(ws, out, labels, from_labels, backbone, templates, as_labels, min_probability, limit):
    """Label images from class names alone, without training.

    \b
    Examples:
      pixelmine zero-shot --labels "cat,dog,car"
      pixelmine zero-shot --labels-from-folders              # how well the names alone fit the labels
      pixelmine zero-shot --labels "cat,dog" --as-labels     # pseudo-labels for unlabelled images
      pixelmine zero-shot --labels "scratch,dent" --backbone clip:ViT-B-32/laion2b_s34b_b79k

    Every image gets a probability per label (CLIP: prompt templates averaged, softmax of the similarities;
    offline: the labels matched to ImageNet concepts and the images' tags on them). Stored as a run in
    zero-shot/run-ID.npz; measured against the labels the images already carry (accuracy, per-class recall,
    confusion matrix). --as-labels never writes the ingested labels and never overrides a person's label.
    """
    result = ws.zero_shot(labels, from_labels=from_labels, backbone=backbone, templates=templates or None,
                          as_labels=as_labels, min_probability=min_probability)
    out.result({**result.summary(), "predictions": result.predictions()})
    out.say(f"zero-shot ({result.method} on {result.backbone}), run {result.run_id}: {len(result.ids)} images, "
            "predicted " + ", ".join(f"{label} {n}" for label, n in result.counts().items()))
    for label, matched in result.concepts.items():
        out.say(f"  {label!r} read as: " + ", ".join(f"{name} ({sim:.2f})" for name, sim in matched))
    if result.evaluation is not None:
        from .learn import render_evaluation

        out.say(render_evaluation(result.evaluation, f"against the labels the images carry ({result.evaluation.n}):"))
    rows = [(p["image_id"][:12], p["label"], f"{p['probability']:.3f}",
             ", ".join(f"{t['label']} {t['probability']:.2f}" for t in p["top_k"][1:]))
            for p in sorted(result.predictions(), key=lambda p: -p["probability"])[:limit]]
    if rows:
        out.say(table(rows, ("image", "label", "probability", "runner-up")))
    for note in result.notes:
        out.say(f"note: {note}")


COMMANDS = [search_command, zero_shot_command]

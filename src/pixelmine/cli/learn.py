"""pixelmine split / train / evaluate / predict / models. Thin: parse, call pixelmine.learn, print."""

from __future__ import annotations

import click

from ..learn.config import HEAD_NAMES, TrainConfig
from .common import common_options, table
from ..defaults import DEFAULT_BACKBONE


def render_evaluation(evaluation, title: str) -> str:
    return f"{title}\n{evaluation.table()}"


def render_leaderboard(selection: dict, *, limit: int = 12) -> str:
    """The automatic search's leaderboard: candidate, rung, images, CV score +- spread, seconds."""
    rows = []
    for trial in selection["leaderboard"][:limit]:
        score = "" if trial["score"] is None else f"{trial['score']:.3f}" + (
            "" if trial["spread"] is None else f" ± {trial['spread']:.3f}")
        rows.append((trial["candidate"] if trial["head"] != "*" else f"(features) {trial['features']}",
                     trial["rung"], trial["n_images"], score, f"{trial['seconds']:.1f}",
                     trial["status"] if trial["status"] == "scored" else f"{trial['status']}: {trial['reason']}"))
    more = len(selection["leaderboard"]) - limit
    chosen = selection["chosen"]
    metric = selection["metric"].replace("_", " ")
    return (f"automatic selection ({selection['elapsed_s']:.0f} s of a {selection['budget_s']:.0f} s budget; "
            f"score: cross-validated {metric} on train + val):\n"
            + table(rows, ("candidate", "rung", "images", "score", "s", "status"))
            + (f"\n... {more} more in the model card" if more > 0 else "")
            + f"\nchosen: {chosen['head']} on {chosen['features']}")


def _epoch_printer(out):
    def show(record: dict) -> None:
        val = ("" if record["val_loss"] is None else
               f", val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.3f}")
        out.note(f"epoch {record['epoch']} ({record['phase']}): train loss {record['train_loss']:.4f} "
                 f"acc {record['train_accuracy']:.3f}{val}, {record['seconds']:.0f} s")
    return show


@click.command("train")
@click.option("--head", type=click.Choice(HEAD_NAMES),
              help="auto (the default): try backbones x framings x heads by cross-validation and keep the best; "
                   "logreg / svm / knn: that head on cached features (seconds); "
                   "finetune: train the network itself (slow on a CPU).")
@click.option("--name", help="Model name (folder under models/); default auto, or <head>-<backbone>.")
@click.option("--backbone", "backbone_names", multiple=True, metavar="NAME",
              help=f"Feature backbone / network to fine-tune (default {DEFAULT_BACKBONE}). With --head auto, "
                   "each one named is tried too (repeatable).")
@click.option("--budget", type=click.FloatRange(min=0),
              help="Seconds for the whole automatic search, extraction included (default 300).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="TOML or JSON file with TrainConfig settings (a [train] table); flags override it.")
@click.option("--split-column", help="Metadata (manifest) column giving train/val/test per image.")
@click.option("--seed", type=int, help="Seed of the split, the search and fine-tuning (default 0).")
@click.option("--exclude-class", "exclude_classes", multiple=True, metavar="LABEL",
              help="Leave this class out of training (repeatable).")
@click.option("--resplit", is_flag=True, help="Split again even if a stored split fits.")
@click.option("--resume", is_flag=True, help="Continue an interrupted fine-tuning from its last checkpoint.")
@click.option("--epochs", type=click.IntRange(min=0), help="Fine-tuning epochs with the top blocks unfrozen.")
@click.option("--frozen-epochs", type=click.IntRange(min=0), help="Fine-tuning epochs with the backbone frozen.")
@click.option("--max-train-images", type=click.IntRange(min=1), help="Fine-tune on a stratified sample of at most N.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Fine-tuning device (default auto).")
@click.option("--search-budget", type=click.FloatRange(min=0), help="Seconds for the hyper-parameter search (60).")
@common_options
def train_command(ws, out, head, name, backbone_names, budget, config_file, split_column, seed, exclude_classes,
                  resplit, resume, epochs, frozen_epochs, max_train_images, device, search_budget):
    """Train a classifier on the labelled images, measure it on a held-out test split, and save it.

    \b
    Examples:
      pixelmine train                                  # choose the backbone, framing and head by itself
      pixelmine train --budget 1500                    # ... with time to try fine-tuning too
      pixelmine train --head logreg                    # logistic regression on MobileNetV2 features
      pixelmine train --head svm --name best-svm
      pixelmine train --head finetune --epochs 6       # fine-tune MobileNetV2 itself
      pixelmine train --split-column fold --exclude-class other

    Splits are stratified 70/15/15 (seeded) and keep exact and near-duplicate images in one split; they are
    stored in the catalog and reused. Every labelled image also gets out-of-fold probabilities (for
    pixelmine discover). Features are extracted first when missing.

    With --head auto (the default) candidates are scored by cross-validation on train + val, grouped by
    near-duplicates, never on the test split; the leaderboard is printed and kept in the model card.
    """
    if len(backbone_names) > 1 and head not in (None, "auto"):
        raise click.UsageError(f"--head {head} trains on one backbone; name several --backbone only with --head auto")
    overrides: dict = {}  # only what was given: a --config file's settings stand otherwise
    if head:
        overrides["head"] = head
    if backbone_names:
        overrides["backbone"] = backbone_names[0]
    if len(backbone_names) > 1:  # the first is the reference, a candidate anyway
        overrides["auto.extra_backbones"] = list(backbone_names[1:])
    if budget is not None:
        overrides["auto.budget_s"] = budget
    if name:
        overrides["name"] = name
    if split_column:
        overrides["split.column"] = split_column
    if seed is not None:
        overrides["seed"] = seed
        overrides["split.seed"] = seed
    if exclude_classes:
        overrides["exclude_classes"] = list(exclude_classes)
    if search_budget is not None:
        overrides["search_budget_s"] = search_budget
    for key, value in (("epochs", epochs), ("frozen_epochs", frozen_epochs), ("max_train_images", max_train_images),
                       ("device", device)):
        if value is not None:
            overrides[f"finetune.{key}"] = value
    config = (TrainConfig.from_file(config_file, **overrides) if config_file
              else TrainConfig.from_mapping(None, **overrides))
    model = ws.train(config=config, resplit=resplit, resume=resume, progress=out.progress,
                     on_epoch=_epoch_printer(out))
    metrics = model.metrics
    out.result({"model": model.name, "dir": str(model.dir), "info": model.info, "test": metrics["test"],
                "oof": metrics["oof"]["metrics"], "split": metrics["split"], "notes": metrics["notes"],
                "timings": metrics["timings"]})
    split = metrics["split"]
    if metrics.get("selection"):
        out.say(render_leaderboard(metrics["selection"]) + "\n")
    out.say(f"model {model.name}: {model.kind} {model.head} on {model.backbone}, {len(model.classes)} classes; "
            f"split {split['source']}: " + ", ".join(f"{k} {v}" for k, v in split["counts"].items()))
    out.say(render_evaluation(model.test_evaluation(), "test split:"))
    oof = metrics["oof"]["metrics"]
    out.say(f"\nout-of-fold ({metrics['oof_model']}, all {metrics['oof']['n']} labelled images): "
            f"accuracy {oof['accuracy']:.3f}, macro-F1 {oof['macro_f1']:.3f}")
    for note in metrics["notes"]:
        out.say(f"note: {note}")
    out.say(f"\nsaved to {model.dir} (model card: card.md)\nNext: pixelmine predict PHOTOS... --model {model.name}")


@click.command("evaluate")
@click.option("--model", "model_name", help="Model name (default: the most recently trained).")
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples for the 95% intervals.")
@common_options
def evaluate_command(ws, out, model_name, bootstrap):
    """Evaluate a model on its test split with the catalog's current labels; writes evaluation.json and figures.

    \b
    Example:
      pixelmine evaluate --model logreg-mobilenet_v2
    """
    model = ws.model(model_name)
    evaluation = model.evaluate(progress=out.progress, n_bootstrap=bootstrap)
    out.result({"model": model.name, "evaluation": evaluation.to_dict()})
    out.say(render_evaluation(evaluation, f"model {model.name}, test split:"))
    if evaluation.mistakes:
        out.say("\nmost confident mistakes:")
        out.say(table([(m["id"][:12] if m["id"] else "", m["true"], m["predicted"], f"{m['probability']:.3f}")
                       for m in evaluation.mistakes[:5]], ("image", "true", "predicted", "probability")))
    out.say(f"\nfigures: {model.dir / 'evaluation_confusion_matrix.png'}, {model.dir / 'evaluation_reliability.png'}")


@click.command("predict")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--model", "model_name", help="Model name (default: the most recently trained).")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="Classes listed per image.")
@click.option("--output", type=click.Path(dir_okay=False), help="Write all predictions to a .csv or .json file.")
@common_options
def predict_command(ws, out, paths, model_name, top_k, output):
    """Predict the class of image files, folders or glob patterns.

    \b
    Examples:
      pixelmine predict new/*.jpg
      pixelmine predict incoming/ --model best-svm --top-k 2 --output predictions.csv

    Each image gets a label, its probability, the top-k classes and an `uncertain` flag (low confidence, two
    classes nearly tied, or unlike every training image). A file that cannot be read is reported in its row;
    the others are still predicted.
    """
    model = ws.model(model_name)
    predictions = model.predict(list(paths), top_k=top_k, progress=out.progress)
    if output:
        predictions.write(output)
    out.result(predictions.to_records())
    rows = [(p.path, p.label or "-", "" if p.probability is None else f"{p.probability:.3f}",
             "error" if p.error else ("yes" if p.uncertain else "no"), p.reason or "") for p in predictions]
    out.say(table(rows, ("path", "label", "probability", "uncertain", "why")))
    uncertain = sum(1 for p in predictions if p.ok and p.uncertain)
    out.say(f"\n{len(predictions)} files: {len(predictions) - predictions.errors} predicted by {model.name} "
            f"({uncertain} uncertain), {predictions.errors} could not be read"
            + (f"; written to {output}" if output else ""))


@click.command("models")
@common_options
def models_command(ws, out):
    """List the trained models of the workspace with their test scores.

    \b
    Example:
      pixelmine models --json
    """
    models = ws.models()
    out.result(models)
    if not models:
        out.say("no models yet; train one with: pixelmine train")
        return
    rows = []
    for m in models:
        if m["status"] != "ready":
            rows.append((m["name"], "unfinished" + (" (pixelmine train --resume)" if m.get("resumable") else ""),
                         "", "", "", "", "", ""))
            continue
        rows.append((m["name"], m["status"], m["head"], m["backbone"], len(m["classes"]),
                     f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}", (m["created_at"] or "")[:19]))
    out.say(table(rows, ("name", "status", "head", "backbone", "classes", "accuracy", "macro-F1", "created")))


@click.command("split")
@click.option("--train", "train_fraction", type=click.FloatRange(0, 1), default=0.70, show_default=True)
@click.option("--val", "val_fraction", type=click.FloatRange(0, 1), default=0.15, show_default=True)
@click.option("--test", "test_fraction", type=click.FloatRange(0, 1), default=0.15, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--column", help="Metadata (manifest) column giving train/val/test per image.")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True,
              help="Cached features used to find near-duplicates.")
@common_options
def split_command(ws, out, train_fraction, val_fraction, test_fraction, seed, column, backbone):
    """Split the labelled images into train / val / test (stratified; near-duplicates kept together).

    \b
    Example:
      pixelmine split --train 0.8 --val 0.1 --test 0.1 --seed 3
    """
    result = ws.split(backbone=backbone, train=train_fraction, val=val_fraction, test=test_fraction, seed=seed,
                      column=column)
    summary = result.summary()
    out.result(summary)
    out.say(table([(label, row["train"], row["val"], row["test"]) for label, row in summary["by_class"].items()],
                  ("class", "train", "val", "test")))
    out.say(f"\n{summary['grouped_images']} images in near-duplicate groups (largest {summary['largest_group']}); "
            "each group is in one split")
    for note in summary["notes"]:
        out.say(f"note: {note}")


COMMANDS = [split_command, train_command, evaluate_command, predict_command, models_command]

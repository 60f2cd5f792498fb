"""pixelmine split / train / evaluate / predict / models. Thin: parse, call pixelmine.learn, print."""

from __future__ import annotations

import click

from ..learn.config import AUGMENT_NAMES, HEAD_NAMES, TrainConfig
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
        if record.get("val_pgd_accuracy") is not None:
            val += f", val PGD-10 acc {record['val_pgd_accuracy']:.3f}"
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
@click.option("--adversarial", type=click.FloatRange(min=0, max=255), metavar="EPS",
              help="Fine-tune with fast adversarial training at an L-inf radius of EPS grey levels (EPS/255; "
                   "e.g. 2), keeping the epoch with the best PGD accuracy on val. With --head finetune.")
@click.option("--augment", type=click.Choice(AUGMENT_NAMES),
              help="Fine-tuning augmentation: standard (the default) or augmix (adds AugMix, for robustness to "
                   "corruptions). With --head finetune.")
@click.option("--search-budget", type=click.FloatRange(min=0), help="Seconds for the hyper-parameter search (60).")
@click.option("--clean", is_flag=True,
              help="Leave out near-copies of test images and confident label issues (from pixelmine discover; "
                   "run first when missing) and report test accuracy before and after. Preview: pixelmine clean.")
@click.option("--balance-groups", metavar="COLUMN",
              help="Refit a probe's head with every group x class cell of this metadata column weighted equally "
                   "(last-layer retraining); shows every group before and after. See pixelmine fairness.")
@click.option("--base", "balance_base", metavar="MODEL",
              help="With --balance-groups: the probe model to refit (default: the newest; trained first if none).")
@common_options
def train_command(ws, out, head, name, backbone_names, budget, config_file, split_column, seed, exclude_classes,
                  resplit, resume, epochs, frozen_epochs, max_train_images, device, adversarial, augment, search_budget,
                  clean, balance_groups, balance_base):
    """Train a classifier on the labelled images, measure it on a held-out test split, and save it.

    \b
    Examples:
      pixelmine train                                  # choose the backbone, framing and head by itself
      pixelmine train --budget 1500                    # ... with time to try fine-tuning too
      pixelmine train --head logreg                    # logistic regression on MobileNetV2 features
      pixelmine train --head svm --name best-svm
      pixelmine train --head finetune --epochs 6       # fine-tune MobileNetV2 itself
      pixelmine train --head finetune --adversarial 2  # ... robust to changes of 2 grey levels
      pixelmine train --split-column fold --exclude-class other
      pixelmine train --balance-groups camera          # refit the head so no camera is left behind

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
    if clean:
        overrides["clean"] = True
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
    if adversarial is not None:
        overrides["finetune.adversarial_eps"] = adversarial / 255  # the config keeps pixel units of [0, 1]
    if augment is not None:
        overrides["finetune.augment"] = augment
    if balance_base and not balance_groups:
        raise click.UsageError("--base names the model --balance-groups refits; give --balance-groups COLUMN too")
    if balance_groups:
        overrides["balance_groups"] = balance_groups
        overrides["balance_base"] = balance_base
    config = (TrainConfig.from_file(config_file, **overrides) if config_file
              else TrainConfig.from_mapping(None, **overrides))
    robust_flags = [flag for flag, value in (("--adversarial", adversarial), ("--augment", augment))
                    if value is not None]
    if robust_flags and config.head != "finetune":
        raise click.UsageError(f"only fine-tuning uses {' and '.join(robust_flags)}, and this training's head is "
                               f"{config.head}: add --head finetune")
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
    if metrics.get("cleaning"):
        out.say("\n" + render_cleaning(metrics["cleaning"]))
    if model.balance is not None:
        from .trust import render_balance

        out.say("\n" + render_balance(model.balance))
    out.say(f"\nsaved to {model.dir} (model card: card.md)\nNext: pixelmine predict PHOTOS... --model {model.name}")


def render_cleaning(cleaning: dict) -> str:
    """Before / after test accuracy of the clean loop, on the same test images."""
    lines = ["clean loop: " + (", ".join(f"{n} {kind.replace('_', ' ')}s" for kind, n in cleaning["counts"].items())
                               or "nothing") + " left out of training"
             + (f" (discover run {cleaning['discover_run']})" if cleaning.get("discover_run") else "")]
    if cleaning.get("before"):
        rows = []
        for name in ("accuracy", "balanced_accuracy", "macro_f1"):
            cells = [name]
            for when in ("before", "after"):
                value = cleaning[when]["metrics"][name]
                span = cleaning[when]["intervals"].get(name)
                cells.append(f"{value:.3f}" + (f" [{span[0]:.3f}, {span[1]:.3f}]" if span else ""))
            rows.append(cells)
        lines.append(table(rows, ("test metric", "before", "after")))
        paired = cleaning["paired_accuracy_difference"]
        if paired["difference"] is not None:
            lines.append(f"accuracy {paired['difference']:+.3f} (paired 95 % CI {paired['interval'][0]:+.3f} to "
                         f"{paired['interval'][1]:+.3f}) on the same {paired['n']} test images: {paired['improved']} "
                         f"now right, {paired['worsened']} now wrong")
    for note in cleaning.get("notes", []):
        lines.append(f"note: {note}")
    lines.append("the left-out images are listed in cleaning.json; nothing was changed in your files or labels")
    return "\n".join(lines)


@click.command("clean")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True,
              help="Features that group near-duplicates for the split.")
@click.option("--min-issue-probability", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Leave out a flagged label issue when its suggested class is at least this probable.")
@click.option("--discover/--no-discover", "run_discovery", default=True, show_default=True,
              help="Run discovery of copies and label issues first when no discover run has them.")
@click.option("--output", type=click.Path(dir_okay=False), help="Write the left-out images to this CSV.")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True, help="Rows shown.")
@common_options
def clean_command(ws, out, backbone, min_issue_probability, run_discovery, output, limit):
    """Preview what `pixelmine train --clean` leaves out of training, and why. Changes nothing.

    \b
    Examples:
      pixelmine clean
      pixelmine clean --output left-out.csv --min-issue-probability 0.7

    Near-copies of test images (they would leak the test set into training) and label issues cleanlab flags
    with confidence are listed; test images are never left out, so `train --clean` is measured on the same
    test images as a plain `train`. Corrections people made are applied in every training.
    """
    plan = ws.clean_plan(backbone=backbone, min_issue_probability=min_issue_probability,
                         run_discovery=run_discovery, progress=out.progress)
    if output:
        plan.write_csv(output)
    out.result(plan.to_dict())
    counts = plan.counts()
    out.say(f"train --clean would leave out {len(plan.left_out)} training images: "
            + (", ".join(f"{n} {k.replace('_', ' ')}s" for k, n in counts.items()) or "none")
            + (f" (from discover run {plan.discover_run})" if plan.discover_run else ""))
    if plan.left_out and limit:
        out.say(table([(i.image_id[:12], i.split, i.label, i.kind, i.suggested_label or "", i.reason)
                       for i in plan.left_out[:limit]], ("image", "split", "label", "kind", "suggested", "why")))
        if len(plan.left_out) > limit:
            out.say(f"... {len(plan.left_out) - limit} more" + ("" if output else " (--output FILE lists all)"))
    if plan.corrections:
        out.say("corrections in effect (applied in every training): "
                + ", ".join(f"{n} {action}" for action, n in plan.corrections.items()))
    for note in plan.notes:
        out.say(f"note: {note}")
    if output:
        out.say(f"written to {output}")
    out.say("Next: pixelmine train --clean")


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


@click.command("suggest")
@click.option("--n", "count", type=click.IntRange(min=1), default=50, show_default=True, help="Images to suggest.")
@click.option("--model", "model_name", help="Model whose uncertainty ranks them (default: the newest; none: "
                                              "diversity only).")
@click.option("--pool", type=click.Choice(["unlabelled", "review", "all"]), default="unlabelled", show_default=True,
              help="unlabelled images, images flagged as label issues (review), or both.")
@click.option("--output", type=click.Path(dir_okay=False),
              help="Write a CSV manifest (path,label) to fill in and ingest back with --manifest.")
@common_options
def suggest_command(ws, out, count, model_name, pool, output):
    """What to label next: the images whose label would help the model most.

    \b
    Examples:
      pixelmine suggest --n 50 --output to-label.csv   # fill in the label column, then:
      pixelmine ingest --manifest to-label.csv && pixelmine train
      pixelmine suggest --pool review                  # which flagged labels to check first

    Uncertain images (small margin between the model's two likeliest classes), taken one per cluster of the
    pool so that the first suggestions cover the whole collection instead of one confusing corner.
    """
    suggestions = ws.suggest(count, model=model_name, pool=pool)
    if output:
        from ..learn.suggest import write_manifest

        write_manifest(suggestions, output)
    out.result([s.to_dict() for s in suggestions])
    if not suggestions:
        out.say(f"nothing to suggest: the {pool} pool is empty"
                + (" (every image has a label)" if pool == "unlabelled" else ""))
        return
    out.say(table([(s.rank, s.image_id[:12], s.predicted_label or "-",
                    "" if s.margin is None else f"{s.margin:.2f}", s.cluster, s.path) for s in suggestions],
                  ("rank", "image", "model says", "margin", "cluster", "path")))
    clusters = len({s.cluster for s in suggestions})
    out.say(f"\n{len(suggestions)} images from {clusters} clusters of the {pool} pool"
            + (f"; manifest written to {output}: fill in its label column, then "
               f"pixelmine ingest --manifest {output}" if output else ""))


COMMANDS = [split_command, train_command, clean_command, suggest_command, evaluate_command, predict_command, models_command]

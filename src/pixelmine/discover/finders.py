"""The finders ``pixelmine discover`` runs, in one explicit table: name, the finding kinds it produces
(with what each means and what to do), and the adapter that runs it.

Each adapter is thin: it takes a :class:`~.context.DiscoverContext` and calls the pure functions of its
module. The table is a constant, so ``discover`` runs the same finders whoever imported what; add a finder
by writing its module (pure functions + a ``KINDS`` dict) and one row here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, NotFittedError
from . import classes as class_finders
from . import clusters, duplicates, label_issues, outliers, pixel_stats, quality
from .groups import KINDS as group_kinds
from .context import DiscoverContext
from .findings import Finding
from .neighbors import nearest_neighbours

log = logging.getLogger(__name__)

FinderFunction = Callable[[DiscoverContext], list[Finding]]


@dataclass(frozen=True)
class Finder:
    name: str
    kinds: dict[str, tuple[str, str]]  # kind -> (what it means, what to do)
    run: FinderFunction


# -- adapters: context -> pure finder functions ------------------------------------------------------
def _quality(ctx: DiscoverContext) -> list[Finding]:
    return quality.find_quality_issues(ctx.ids, ctx.pixels.stats, ctx.widths, ctx.heights)


def _duplicates(ctx: DiscoverContext) -> list[Finding]:
    pixels = ctx.pixels  # decode (process pool) before faiss starts its threads in this process
    status = ctx.catalog.summary()
    found = duplicates.exact_duplicate_findings(status["exact_duplicates"], status["label_conflicts"])
    paths = ctx.paths

    def crop_views(rows, views):
        return pixel_stats.view_coefficients_of([paths[r] for r in rows], views, workers=ctx.workers)

    found += duplicates.find_near_duplicates(
        ctx.ids, neighbours=ctx.neighbours, normalised=ctx.normalised, phashes=ctx.phashes, labels=ctx.labels,
        splits=ctx.splits, widths=ctx.widths, heights=ctx.heights, encoding_quality=pixels.encoding,
        file_sizes=ctx.sizes, seen=ctx.seen, view_hashes=pixels.views, views_valid=pixels.decoded,
        coefficients=pixels.coefficients, view_coefficients=crop_views)
    groups = {f.details["group"] for f in found if f.kind == "near_duplicate"}
    ctx.summary["near_duplicate_groups"] = len(groups)
    return found


def _outliers(ctx: DiscoverContext) -> list[Finding]:
    found = outliers.find_outliers(ctx.ids, ctx.neighbours)
    found += outliers.find_class_outliers(ctx.ids, ctx.normalised, ctx.labels)
    return found


def _labelled_probabilities(ctx: DiscoverContext) -> tuple[list[int], list[str], np.ndarray, list[str], str] | None:
    """(rows, labels, probs, classes, source) for labelled images in classes of >= 2 images, or None."""
    counts = class_finders.class_counts(ctx.labels)
    usable = {c for c, n in counts.items() if n >= 2}
    rows = [r for r, label in enumerate(ctx.labels) if label in usable]
    if len(usable) < 2:
        return None
    labels = [ctx.labels[r] for r in rows]
    cached = ctx.summary.get("_probabilities")
    if cached is not None:
        return cached
    result = None
    try:
        if ctx.trained is None:
            raise NotFittedError("no trained model")
        oof = ctx.trained.oof()
        position = {str(i): k for k, i in enumerate(oof["ids"].tolist())}
        stored = [position.get(ctx.ids[r]) for r in rows]
        oof_labels = oof["labels"].astype(str)
        classes = oof["classes"].astype(str).tolist()
        if all(p is not None and oof_labels[p] == label for p, label in zip(stored, labels)) \
                and set(labels) <= set(classes):
            result = (rows, labels, np.asarray(oof["probs"], dtype=np.float64)[stored], classes,
                      "out-of-fold probabilities of the trained model")
        else:
            log.info("the trained model's out-of-fold probabilities do not cover the current labels; recomputing")
    except (NotFittedError, FileNotFoundError, KeyError, AttributeError):
        pass
    if result is None:
        probs, classes = label_issues.out_of_fold_probabilities(ctx.raw[rows], labels)
        result = (rows, labels, probs, classes, "5-fold logistic regression on 64 principal components of the features")
    # a leave-one-out k-NN vote competes with the model; the more accurate predictor is used
    graph = nearest_neighbours(ctx.normalised[rows], max(label_issues.KNN_CHOICES), normalised=True)
    knn, k = label_issues.knn_probabilities(graph.index, labels, result[3])
    name, probs, accuracy = label_issues.choose_probabilities(
        labels, {result[4]: result[2], f"{k}-nearest-neighbour vote on the features": knn}, result[3])
    result = (rows, labels, probs, result[3], name)
    ctx.summary["label_probabilities_accuracy"] = accuracy
    ctx.summary["_probabilities"] = result
    return result


def _label_issues(ctx: DiscoverContext) -> list[Finding]:
    data = _labelled_probabilities(ctx)
    if data is None:
        ctx.summary["label_errors"] = {"note": "needs at least 2 labelled classes of 2+ images"}
        return []
    rows, labels, probs, classes, source = data
    found = label_issues.find_label_issues([ctx.ids[r] for r in rows], labels, probs, classes)
    # a label a person accepted is not flagged again (its score still says what the model thinks)
    found = [Finding(f.image_id, f.kind, f.score, False, {**f.details, "accepted_by_person": True})
             if f.image_id in ctx.accepted else f for f in found]
    ctx.summary["label_errors"] = {"estimated": label_issues.estimate_label_errors(labels, probs, classes),
                                   "flagged": sum(f.is_issue for f in found), "labelled": len(rows),
                                   "probabilities": source}
    return found


def _classes(ctx: DiscoverContext) -> list[Finding]:
    summary = class_finders.imbalance_summary(ctx.labels)
    found = class_finders.find_rare_classes(ctx.ids, ctx.labels)
    if len(summary["counts"]) >= 2:
        summary["overlap_pairs"] = class_finders.overlap_pairs(ctx.neighbours, ctx.labels)
        data = _labelled_probabilities(ctx)
        if data is not None:
            _, labels, probs, classes, _ = data
            summary["confusion_pairs"] = class_finders.confusion_pairs(labels, probs, classes)
        found += class_finders.find_class_overlap(ctx.ids, ctx.labels, ctx.neighbours, summary["overlap_pairs"])
    ctx.summary["classes"] = summary
    return found


def _groups(ctx: DiscoverContext) -> list[Finding]:
    """Group gaps of the trained model on its test split, over every metadata column that splits it."""
    from . import groups

    if ctx.trained is None:
        ctx.summary["groups"] = {"note": "needs a trained model (pixelmine train)"}
        return []
    try:
        reports, skipped, rows, values = groups.model_group_reports(ctx.catalog, ctx.root, ctx.trained)
    except (InputError, NotFittedError) as exc:
        ctx.summary["groups"] = {"note": str(exc)}
        return []
    found = groups.group_gap_findings(reports, rows, values, ctx.trained.name)
    ctx.summary["groups"] = {"model": ctx.trained.name, "columns": [r.column for r in reports], "skipped": skipped,
                             "failed_groups": sorted({(r.column, g.group) for r in reports
                                                             for g in r.harmful_gaps()})}
    return found


def _clusters(ctx: DiscoverContext) -> list[Finding]:
    from .explore import clusters_finder

    return clusters_finder(ctx)


FINDERS: dict[str, Finder] = {finder.name: finder for finder in (
    Finder("quality", quality.KINDS, _quality),
    Finder("duplicates", duplicates.KINDS, _duplicates),
    Finder("outliers", outliers.KINDS, _outliers),
    Finder("label_issues", label_issues.KINDS, _label_issues),
    Finder("classes", class_finders.KINDS, _classes),
    Finder("groups", group_kinds, _groups),
    Finder("clusters", clusters.KINDS, _clusters),
)}

# every finding kind -> (what it means, what to do), in finder order; the CLI, report and web UI read it
KINDS: dict[str, tuple[str, str]] = {kind: text for finder in FINDERS.values() for kind, text in finder.kinds.items()}


def resolve_only(only: Iterable[str] | str | None) -> list[str]:
    """Finder names to run for ``only`` (finder names or finding kinds; None: all)."""
    if only is None:
        return list(FINDERS)
    if isinstance(only, str):
        only = [only]
    chosen = set()
    for item in only:
        matches = [f.name for f in FINDERS.values() if item == f.name or item in f.kinds]
        if not matches:
            valid = sorted(set(FINDERS) | set(KINDS))
            raise InputError(f"unknown finder or finding kind {item!r} in --only; choose from: {', '.join(valid)}")
        chosen.update(matches)
    return [name for name in FINDERS if name in chosen]

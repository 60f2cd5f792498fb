"""The audit-fix-retrain loop: train on better data using what discovery found (``pixelmine train --clean``;
``pixelmine clean`` previews it).

Left out of training (train and val; the test split is never touched, so "before" and "after" are
measured on the same test images with the same labels):

- **leaking copies**: members of a near-duplicate group (discovery's copy detection: resized, re-encoded,
  cropped, flipped) that has a member in the test split. Training on a copy of a test image measures memory,
  not skill. (Exact duplicates are one image already: the catalog is keyed by content hash.)
- **label issues with high confidence**: images cleanlab flagged (confident learning on out-of-fold
  probabilities) whose suggested class is at least ``min_issue_probability`` likely. Findings about a label
  a person has changed since are stale and ignored.

The corrections people made (relabel, ignore) are applied as in every training. Nothing is written into
the user's files or the ingested labels: the plan lives in the model folder (``cleaning.json``).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import asdict, dataclass, field

import numpy as np

log = logging.getLogger(__name__)

LEFT_OUT = "left_out"  # the split value of an image training leaves out (SplitResult only, never the catalog)
CLEAN_FINDINGS = ("duplicates", "label_issues")


@dataclass
class LeftOut:
    image_id: str
    path: str
    label: str
    split: str  # where the image was: train | val
    kind: str  # leaking_copy | label_issue
    reason: str
    suggested_label: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CleanPlan:
    discover_run: int | None
    left_out: list[LeftOut] = field(default_factory=list)
    corrections: dict = field(default_factory=dict)  # corrections in effect: {"relabel": n, "ignore": n, ...}
    checked: dict = field(default_factory=dict)  # findings read: {"label_issue": n flagged, "near_duplicate": n}
    min_issue_probability: float = 0.5
    notes: list[str] = field(default_factory=list)

    @property
    def ids(self) -> set[str]:
        return {item.image_id for item in self.left_out}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.left_out:
            out[item.kind] = out.get(item.kind, 0) + 1
        return out

    def to_dict(self) -> dict:
        return {"discover_run": self.discover_run, "counts": self.counts(), "corrections": self.corrections,
                "checked": self.checked, "min_issue_probability": self.min_issue_probability, "notes": self.notes,
                "left_out": [item.to_dict() for item in self.left_out]}

    def write_csv(self, path) -> str:
        """The left-out images as CSV (image_id, path, label, split, kind, suggested_label, reason)."""
        from ..fileio import atomic_write_text
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["image_id", "path", "label", "split", "kind", "suggested_label", "reason"])
        for item in self.left_out:
            writer.writerow([item.image_id, item.path, item.label, item.split, item.kind,
                             item.suggested_label or "", item.reason])
        atomic_write_text(path, buffer.getvalue())
        return str(path)


def plan_cleaning(catalog, data, split, *, min_issue_probability: float = 0.5) -> CleanPlan:
    """What to leave out of ``split``'s train and val images, from the newest discover run's findings."""
    from ..corrections import latest_corrections
    from ..discover.findings import latest_discover_run, load_findings

    run_id = latest_discover_run(catalog, "label_issue") or latest_discover_run(catalog, "near_duplicate")
    plan = CleanPlan(discover_run=run_id, min_issue_probability=min_issue_probability)
    in_effect = latest_corrections(catalog, data.ids)
    for row in in_effect.values():
        plan.corrections[row["action"]] = plan.corrections.get(row["action"], 0) + 1
    if run_id is None:
        plan.notes.append("no discover run yet: nothing to leave out (run pixelmine discover first)")
        return plan
    where = {image_id: k for k, image_id in enumerate(split.ids)}
    path_of = dict(zip(data.ids, data.paths))
    taken: set[str] = set()

    def leave_out(image_id: str, kind: str, reason: str, suggested: str | None = None) -> None:
        row = where[image_id]
        if image_id in taken or split.splits[row] not in ("train", "val"):
            return
        taken.add(image_id)
        plan.left_out.append(LeftOut(image_id, path_of.get(image_id, ""), str(split.labels[row]),
                                     str(split.splits[row]), kind, reason, suggested))

    copies = [f for f in load_findings(catalog, kind="near_duplicate", run_id=run_id) if f.image_id in where]
    groups: dict = {}
    for finding in copies:
        groups.setdefault(finding.details.get("group"), []).append(finding.image_id)
    plan.checked["near_duplicate"] = len(copies)
    for members in groups.values():
        in_test = [m for m in members if split.splits[where[m]] == "test"]
        if not in_test:
            continue
        for member in members:
            leave_out(member, "leaking_copy", f"a near-copy of test image {in_test[0][:12]}: training on it would "
                                              "let the test score measure memory")
    issues = [f for f in load_findings(catalog, kind="label_issue", run_id=run_id, issues_only=True)
              if f.image_id in where]
    plan.checked["label_issue"] = len(issues)
    stale = 0
    for finding in issues:
        given = finding.details.get("given_label")
        label = str(split.labels[where[finding.image_id]])
        if given is not None and given != label:
            stale += 1  # relabelled since discovery ran: the finding is about a label that is gone
            continue
        probability = float(finding.details.get("suggested_probability") or 0.0)
        if probability < min_issue_probability:
            continue
        suggested = finding.details.get("suggested_label")
        leave_out(finding.image_id, "label_issue",
                  f"labelled {label!r}, but a model that never saw it gives {suggested!r} p={probability:.2f}",
                  suggested)
    if stale:
        plan.notes.append(f"{stale} label-issue findings are about labels changed since discover run {run_id}; "
                          "ignored")
    return plan


def apply_plan(split, plan: CleanPlan):
    """``split`` with the plan's images marked ``left_out`` (out of train and val; test unchanged)."""
    from dataclasses import replace

    splits = split.splits.astype(object).copy()
    ids = plan.ids
    for row, image_id in enumerate(split.ids):
        if image_id in ids and splits[row] in ("train", "val"):
            splits[row] = LEFT_OUT
    return replace(split, splits=np.asarray(splits, dtype="U16"))


def before_and_after(head, X: np.ndarray, split_before, split_after, config, after_probs: np.ndarray,
                     test_after) -> dict:
    """The same head and settings fitted on the uncleaned train (+ val), measured on the same test images
    as the cleaned model (``after_probs``, ``test_after``); the paired difference with a bootstrap interval."""
    from sklearn.base import clone

    from .metrics import evaluate

    fit_rows = np.concatenate([split_before.rows("train"), split_before.rows("val")]) if config.refit_on_val \
        else split_before.rows("train")
    test = split_after.rows("test")
    before_head = clone(head).fit(X[fit_rows], split_before.labels[fit_rows])
    probs = before_head.predict_proba(X[test])
    y = split_after.labels[test]
    before = evaluate(y, probs, before_head.classes_, ids=[split_after.ids[i] for i in test],
                      n_bootstrap=config.bootstrap, seed=config.seed)
    correct_before = before_head.classes_[np.argmax(probs, axis=1)] == y
    correct_after = np.asarray(head.classes_)[np.argmax(after_probs, axis=1)] == y
    keys = ("accuracy", "balanced_accuracy", "macro_f1")
    return {"n_train_before": int(len(fit_rows)),
            "before": {"metrics": {k: before.metrics[k] for k in keys},
                       "intervals": {k: before.intervals.get(k) for k in keys}},
            "after": {"metrics": {k: test_after.metrics[k] for k in keys},
                      "intervals": {k: test_after.intervals.get(k) for k in keys}},
            "paired_accuracy_difference": paired_difference(correct_before, correct_after,
                                                            n_bootstrap=max(config.bootstrap, 200), seed=config.seed)}


def paired_difference(correct_before: np.ndarray, correct_after: np.ndarray, *, n_bootstrap: int = 1000,
                      seed: int = 0) -> dict:
    """Accuracy after minus before on the same images, with a 95 % paired bootstrap interval."""
    correct_before = np.asarray(correct_before, dtype=np.float64)
    correct_after = np.asarray(correct_after, dtype=np.float64)
    diff = correct_after - correct_before
    rng = np.random.default_rng(seed)
    n = len(diff)
    if n == 0:
        return {"difference": None, "interval": None, "n": 0}
    samples = diff[rng.integers(0, n, (max(1, n_bootstrap), n))].mean(axis=1)
    low, high = np.percentile(samples, [2.5, 97.5])
    return {"difference": float(diff.mean()), "interval": [float(low), float(high)], "n": int(n),
            "improved": int(((correct_after == 1) & (correct_before == 0)).sum()),
            "worsened": int(((correct_after == 0) & (correct_before == 1)).sum())}


def plan_for_training(catalog, data, split, config, *, discover=None, progress="auto") -> CleanPlan:
    """The plan for ``train(clean=True)``: discovery's copies and label issues first, when no run has them
    and ``discover`` (``Workspace.discover``) is given."""
    from ..discover.findings import latest_discover_run

    if latest_discover_run(catalog, "label_issue") is None and discover is not None:
        log.info("no label-issue findings yet: running discovery of copies and label issues first")
        discover(only=list(CLEAN_FINDINGS), backbone=config.backbone, progress=progress)
    return plan_cleaning(catalog, data, split, min_issue_probability=config.clean_min_issue_probability)


def cleaning_report(root, plan: CleanPlan, outcome, features, split_before, split_after, config) -> dict:
    """What metrics.json / cleaning.json keep of the clean loop: the plan and the before/after numbers."""
    report = plan.to_dict()
    if outcome.head is None or outcome.test_probs is None:
        report["note"] = ("the clean loop trained a fine-tuned network: the uncleaned comparison would cost a second "
                          "fine-tuning and was not run")
        return report
    X = np.asarray(features.vectors[features.rows(split_after.ids)], dtype=np.float32)
    report.update(before_and_after(outcome.head, X, split_before, split_after, config, outcome.test_probs,
                                   outcome.test))
    paired = report["paired_accuracy_difference"]
    if paired["difference"] is not None:
        low, high = paired["interval"]
        report["note"] = (f"clean loop: {len(plan.left_out)} training images left out "
                          + ", ".join(f"{n} {k.replace('_', ' ')}s" for k, n in plan.counts().items())
                          + f"; test accuracy {report['before']['metrics']['accuracy']:.3f} before, "
                          f"{report['after']['metrics']['accuracy']:.3f} after "
                          f"({paired['difference']:+.3f}, 95 % CI {low:+.3f} to {high:+.3f}, same "
                          f"{paired['n']} test images)")
    return report

"""How well a model does for each group of images, with the gaps between groups: pure functions of arrays.

For the images of each group (a value of a metadata column): n, accuracy, macro-F1, recall of every class,
expected calibration error. For every group against the rest of the images, one-vs-rest per class: the gap in
selection rate (share predicted as the class), in true-positive rate (recall) and in false-positive rate,
and the gap in accuracy. Fairlearn's named parity metrics are binary only; these are their multiclass,
one-vs-rest counterparts, computed from confusion matrices.

Intervals come from a bootstrap stratified by group: each resample draws every group's images with
replacement within the group, so group sizes stay as observed. Group metrics get 95 % percentile
intervals. Gaps get *simultaneous* intervals: normal intervals from the bootstrap standard error at the
Bonferroni level 1 - alpha / m over the m gaps tested together, so that testing many groups, classes and
columns does not make chance gaps look real. A gap is ``significant`` when its interval excludes zero.

Groups with fewer than ``min_group`` images are reported with ``ranked = False``: they are neither the worst
group nor tested for gaps (their images still count in every other group's "rest").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

from ..errors import InputError

GAP_METRICS = ("accuracy", "tpr", "fpr", "selection_rate")
# gaps that mean the model fails a group: lower accuracy or recall, more false alarms. A different selection
# rate alone follows from a different class mix and is shown, not flagged.
HARMFUL = {"accuracy": -1, "tpr": -1, "fpr": +1}
N_BINS = 15


@dataclass
class GroupStats:
    group: str
    n: int
    ranked: bool  # n >= min_group: ranked and tested; otherwise marked as too small
    accuracy: float
    accuracy_interval: list[float] | None
    macro_f1: float
    macro_f1_interval: list[float] | None
    ece: float
    ece_interval: list[float] | None
    recall: dict[str, float | None]  # per class; None when the group has no image of the class
    classes_present: dict[str, int]  # images of each class in the group


@dataclass
class Gap:
    group: str
    metric: str  # accuracy | tpr | fpr | selection_rate
    label: str | None  # the class, for one-vs-rest metrics
    value: float  # the group's
    rest: float  # the other images'
    gap: float  # value - rest
    se: float | None  # bootstrap standard error of the gap (None without a bootstrap)
    interval: list[float] | None  # simultaneous interval of the gap (None without a bootstrap)
    significant: bool  # the interval excludes zero
    harmful: bool  # significant and in the direction that means the group is failed

    def text(self) -> str:
        what = self.metric.replace("_", " ") + (f" of {self.label}" if self.label is not None else "")
        span = f", [{self.interval[0]:+.3f}, {self.interval[1]:+.3f}]" if self.interval else ""
        return f"{what} {self.value:.3f} vs {self.rest:.3f} for the rest ({self.gap:+.3f}{span})"


@dataclass
class GroupReport:
    column: str
    n: int
    classes: list[str]
    groups: list[GroupStats]
    gaps: list[Gap]
    worst_group: str | None  # the ranked group with the lowest accuracy
    largest_gap: dict | None  # best and worst ranked groups' accuracy difference, with a 95 % interval
    min_group: int
    n_bootstrap: int
    level: float  # the simultaneous level of the gap intervals
    notes: list[str] = field(default_factory=list)
    label_column: bool = False  # every group holds one class: gaps describe classes, not groups

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GroupReport":
        data = dict(data)
        data["groups"] = [GroupStats(**g) for g in data["groups"]]
        data["gaps"] = [Gap(**g) for g in data["gaps"]]
        return cls(**data)

    def group(self, name: str) -> GroupStats:
        return next(g for g in self.groups if g.group == name)

    def harmful_gaps(self) -> list[Gap]:
        """Significant gaps that mean the model fails a group (none for a column that follows the label)."""
        return [] if self.label_column else [g for g in self.gaps if g.harmful]


def _rates(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of confusion matrices (..., K, K) -> arrays (...) or (..., K); NaN where undefined."""
    cm = cm.astype(np.float64)
    n = cm.sum(axis=(-1, -2))
    diag = np.einsum("...ii->...i", cm)
    true_n = cm.sum(axis=-1)
    pred_n = cm.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = diag.sum(axis=-1) / n
        tpr = np.where(true_n > 0, diag / true_n, np.nan)
        precision = np.where(pred_n > 0, diag / pred_n, 0.0)
        recall0 = np.where(true_n > 0, diag / true_n, 0.0)
        f1 = np.where(precision + recall0 > 0, 2 * precision * recall0 / (precision + recall0), 0.0)
        present = (true_n > 0) | (pred_n > 0)
        macro_f1 = (f1 * present).sum(axis=-1) / present.sum(axis=-1)
        negatives = n[..., None] - true_n
        fpr = np.where(negatives > 0, (pred_n - diag) / negatives, np.nan)
        selection = pred_n / n[..., None]
    return {"accuracy": accuracy, "macro_f1": macro_f1, "tpr": tpr, "fpr": fpr, "selection_rate": selection}


def _percentile(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def group_report(column: str, labels: Sequence[str], probs: np.ndarray, classes: Sequence[str],
                 groups: Sequence[str], *, min_group: int = 20, n_bootstrap: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> GroupReport:
    """The group table of ``column`` for predictions ``probs`` (n, K, ``classes`` order) of images with true
    ``labels`` in ``groups``; its gap intervals are simultaneous over this column's gaps (:func:`simultaneous`
    re-levels several columns tested together)."""
    classes = [str(c) for c in classes]
    k = len(classes)
    probs = np.asarray(probs, dtype=np.float64)
    groups = np.asarray([str(g) for g in groups])
    position = {c: i for i, c in enumerate(classes)}
    if probs.shape != (len(labels), k) or len(groups) != len(labels):
        raise InputError(f"need one probability row ({k} classes) and one group per image; got {probs.shape} "
                         f"probabilities, {len(labels)} labels and {len(groups)} groups")
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if len(names) < 2:
        raise InputError(f"the column {column!r} has one value ({names[0] if len(names) else 'none'!r}) across the "
                         f"{len(labels)} images measured: there are no groups to compare; choose a column whose "
                         "values differ between images")
    truth = np.fromiter((position[y] for y in labels), dtype=np.int64, count=len(labels))
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    correct = (predicted == truth).astype(np.float64)
    bins = np.clip((confidence * N_BINS).astype(np.int64), 0, N_BINS - 1)
    g_count = len(names)
    ranked = counts >= min_group

    observed_cm = np.zeros((g_count, k, k))
    np.add.at(observed_cm, (inverse, truth, predicted), 1)
    observed_ece = _ece(inverse, bins, confidence, correct, g_count, counts)
    boot_cm, boot_ece = _bootstrap(inverse, truth, predicted, bins, confidence, correct, g_count, k, counts,
                                   n_bootstrap, seed)

    point = _rates(observed_cm)
    boot = _rates(boot_cm) if boot_cm is not None else None
    stats = []
    for g, name in enumerate(names):
        in_group = observed_cm[g].sum(axis=1)
        stats.append(GroupStats(
            group=str(name), n=int(counts[g]), ranked=bool(ranked[g]),
            accuracy=float(point["accuracy"][g]),
            accuracy_interval=_percentile(boot["accuracy"][:, g]) if boot else None,
            macro_f1=float(point["macro_f1"][g]),
            macro_f1_interval=_percentile(boot["macro_f1"][:, g]) if boot else None,
            ece=float(observed_ece[g]), ece_interval=_percentile(boot_ece[:, g]) if boot else None,
            recall={c: (None if in_group[i] == 0 else float(point["tpr"][g, i])) for i, c in enumerate(classes)},
            classes_present={c: int(in_group[i]) for i, c in enumerate(classes) if in_group[i]}))

    total_cm = observed_cm.sum(axis=0)
    rest_point = _rates(total_cm[None] - observed_cm)
    rest_boot = _rates(boot_cm.sum(axis=1, keepdims=True) - boot_cm) if boot_cm is not None else None
    candidates = []
    for g in np.flatnonzero(ranked):
        for metric in GAP_METRICS:
            for c in ([None] if metric == "accuracy" else range(k)):
                pick = (lambda arr, g=g, c=c: arr[..., g] if c is None else arr[..., g, c])
                value, rest = float(pick(point[metric])), float(pick(rest_point[metric]))
                if not (np.isfinite(value) and np.isfinite(rest)):
                    continue
                spread = None
                if boot is not None:
                    diffs = pick(boot[metric]) - pick(rest_boot[metric])
                    diffs = diffs[np.isfinite(diffs)]
                    spread = float(diffs.std(ddof=1)) if len(diffs) > 1 else None
                candidates.append((str(names[g]), metric, None if c is None else classes[c], value, rest, spread))
    level = 1 - alpha / max(len(candidates), 1)
    gaps = []
    for name, metric, label, value, rest, spread in candidates:
        gap = Gap(name, metric, label, value, rest, value - rest, spread, [], False, False)
        _set_interval(gap, level)
        gaps.append(gap)

    ranked_stats = [s for s in stats if s.ranked]
    notes = []
    small = [s.group for s in stats if not s.ranked]
    if small:
        notes.append(f"{len(small)} group(s) have fewer than {min_group} images and are not ranked: "
                     + ", ".join(map(repr, small[:8])) + (" ..." if len(small) > 8 else ""))
    worst = min(ranked_stats, key=lambda s: (s.accuracy, s.group)).group if ranked_stats else None
    largest = None
    if len(ranked_stats) >= 2:
        best = max(ranked_stats, key=lambda s: (s.accuracy, s.group))
        worst_stats = next(s for s in ranked_stats if s.group == worst)
        index = {str(n): i for i, n in enumerate(names)}
        interval = (_percentile(boot["accuracy"][:, index[best.group]] - boot["accuracy"][:, index[worst]])
                    if boot else None)
        largest = {"best": best.group, "worst": worst, "best_accuracy": best.accuracy,
                   "worst_accuracy": worst_stats.accuracy, "gap": best.accuracy - worst_stats.accuracy,
                   "interval": interval}
    else:
        notes.append(f"fewer than two groups have {min_group} images or more: no group is ranked against another")
    return GroupReport(column=column, n=len(labels), classes=classes, groups=stats, gaps=gaps, worst_group=worst,
                       largest_gap=largest, min_group=min_group, n_bootstrap=n_bootstrap, level=level, notes=notes)


def simultaneous(reports: Sequence[GroupReport], *, alpha: float = 0.05) -> None:
    """Re-level the gap intervals of ``reports`` (several columns, tested together) at 1 - alpha / m, m = all
    their gaps, in place."""
    m = sum(len(r.gaps) for r in reports)
    for report in reports:
        report.level = 1 - alpha / max(m, 1)
        for gap in report.gaps:
            _set_interval(gap, report.level)


def _set_interval(gap: Gap, level: float) -> None:
    if gap.se is None:  # no bootstrap: nothing is claimed
        gap.interval, gap.significant, gap.harmful = None, False, False
        return
    half = NormalDist().inv_cdf(1 - (1 - level) / 2) * gap.se
    gap.interval = [gap.gap - half, gap.gap + half]
    gap.significant = bool(gap.interval[0] > 0 or gap.interval[1] < 0)
    direction = HARMFUL.get(gap.metric)
    gap.harmful = bool(gap.significant and direction is not None and np.sign(gap.gap) == direction)


def _ece(inverse, bins, confidence, correct, g_count, counts) -> np.ndarray:
    codes = inverse * N_BINS + bins
    size = g_count * N_BINS
    conf_sum = np.bincount(codes, weights=confidence, minlength=size).reshape(g_count, N_BINS)
    correct_sum = np.bincount(codes, weights=correct, minlength=size).reshape(g_count, N_BINS)
    return np.abs(correct_sum - conf_sum).sum(axis=1) / counts


def _bootstrap(inverse, truth, predicted, bins, confidence, correct, g_count, k, counts, n_bootstrap, seed,
               chunk: int = 100):
    """(confusion matrices (B, G, K, K), ECE (B, G)) of resamples drawn within each group, or (None, None)."""
    if n_bootstrap <= 0:
        return None, None
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(inverse == g) for g in range(g_count)]
    cms = np.zeros((n_bootstrap, g_count, k, k))
    eces = np.zeros((n_bootstrap, g_count))
    codes = truth * k + predicted
    for g, rows in enumerate(members):
        for start in range(0, n_bootstrap, chunk):
            b = min(chunk, n_bootstrap - start)
            draws = rows[rng.integers(0, len(rows), size=(b, len(rows)))]
            offset = (np.arange(b) * k * k)[:, None]
            cms[start:start + b, g] = np.bincount((codes[draws] + offset).ravel(),
                                                  minlength=b * k * k).reshape(b, k, k)
            bin_codes = (bins[draws] + (np.arange(b) * N_BINS)[:, None]).ravel()
            conf_sum = np.bincount(bin_codes, weights=confidence[draws].ravel(), minlength=b * N_BINS)
            correct_sum = np.bincount(bin_codes, weights=correct[draws].ravel(), minlength=b * N_BINS)
            eces[start:start + b, g] = (np.abs(correct_sum - conf_sum).reshape(b, N_BINS).sum(axis=1)
                                        / counts[g])
    return cms, eces

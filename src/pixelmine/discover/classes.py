"""Class structure: imbalance and the class pairs most easily confused.

- **Imbalance**: counts per class and the ratio largest / smallest. A class is *rare* when it holds less
  than ``rare_ratio`` of the largest class or fewer than ``min_images`` images; its images get a
  ``rare_class`` finding (score = class size / largest class size).
- **Confusable pairs**, two independent views:
  - from the out-of-fold confusion matrix: the share of images of either class predicted as the other,
    ``(C[a, b] + C[b, a]) / (n_a + n_b)``;
  - from feature overlap: the share of each image's k nearest neighbours (in feature space) that carry the
    other label, averaged over both classes — no model involved.
  Images of the top pairs whose neighbourhood holds the other class get a ``class_overlap`` finding: score =
  the share of neighbours with its own label; an issue when the other class outnumbers its own there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from .findings import Finding
from .neighbors import Neighbours

RARE_RATIO = 0.2  # a class under 20 % of the largest class is rare (imbalance worse than 5 : 1)
MIN_IMAGES = 10  # fewer images than this cannot train or evaluate a class reliably
TOP_PAIRS = 5

KINDS = {  # kind -> (what it means, what to do)
    "rare_class": ("its class has far fewer images than the largest class",
                   "collect more images of this class; training already weights classes by their frequency "
                   "(class_weight 'balanced', the default)"),
    "class_overlap": ("sits where two easily confused classes overlap in feature space",
                      "check the label; write down what tells the two classes apart, and collect clearer examples"),
}


def class_counts(labels: Sequence[str | None]) -> dict[str, int]:
    return dict(sorted(Counter(str(label) for label in labels if label is not None).items()))


def imbalance_summary(labels: Sequence[str | None], *, rare_ratio: float = RARE_RATIO,
                      min_images: int = MIN_IMAGES) -> dict:
    counts = class_counts(labels)
    if not counts:
        return {"counts": {}, "imbalance_ratio": None, "rare_classes": []}
    largest, smallest = max(counts.values()), min(counts.values())
    rare = sorted(c for c, n in counts.items() if n < rare_ratio * largest or n < min_images)
    return {"counts": counts, "imbalance_ratio": round(largest / smallest, 3), "rare_classes": rare,
            "rule": f"rare: fewer than {rare_ratio:.0%} of the largest class ({largest}) or fewer than {min_images}"}


def find_rare_classes(ids: Sequence[str], labels: Sequence[str | None], *, rare_ratio: float = RARE_RATIO,
                      min_images: int = MIN_IMAGES) -> list[Finding]:
    if len(ids) != len(labels):
        raise InputError(f"ids ({len(ids)}) and labels ({len(labels)}) must have one entry per image")
    summary = imbalance_summary(labels, rare_ratio=rare_ratio, min_images=min_images)
    rare = set(summary["rare_classes"])
    if not rare:
        return []
    largest = max(summary["counts"].values())
    return [Finding(image_id, "rare_class", float(summary["counts"][label] / largest), True, {
        "label": label, "class_size": summary["counts"][label], "largest_class_size": largest,
        "threshold": summary["rule"]}) for image_id, label in zip(ids, labels) if label in rare]


def confusion_pairs(labels: Sequence[str], probs: np.ndarray, classes: Sequence[str], *, top: int = TOP_PAIRS) -> list[dict]:
    """Class pairs ranked by how often the out-of-fold model mixes them up (either direction)."""
    classes = list(classes)
    position = {c: k for k, c in enumerate(classes)}
    y = np.array([position[label] for label in labels], dtype=np.int64)
    predicted = np.asarray(probs).argmax(axis=1)
    k = len(classes)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (y, predicted), 1)
    sizes = matrix.sum(axis=1)
    pairs = []
    for a in range(k):
        for b in range(a + 1, k):
            if sizes[a] + sizes[b] == 0:
                continue
            mixed = int(matrix[a, b] + matrix[b, a])
            pairs.append({"classes": [classes[a], classes[b]], "confusion_rate": round(mixed / int(sizes[a] + sizes[b]), 4),
                          f"{classes[a]}->{classes[b]}": int(matrix[a, b]), f"{classes[b]}->{classes[a]}": int(matrix[b, a])})
    pairs.sort(key=lambda p: (-p["confusion_rate"], p["classes"]))
    return pairs[:top]


def _neighbour_labels(neighbours: Neighbours, labels: Sequence[str | None]) -> np.ndarray:
    label_array = np.asarray([label if label is not None else "" for label in labels], dtype=object)
    found = neighbours.index
    out = np.where(found >= 0, label_array[np.clip(found, 0, None)], "")
    return out


def overlap_pairs(neighbours: Neighbours, labels: Sequence[str | None], *, top: int = TOP_PAIRS) -> list[dict]:
    """Class pairs ranked by feature-space overlap: the mean share of an image's neighbours carrying the
    other class, averaged over the two classes."""
    counts = class_counts(labels)
    classes = list(counts)
    position = {c: k for k, c in enumerate(classes)}
    neighbour_labels = _neighbour_labels(neighbours, labels)
    k = len(classes)
    share = np.zeros((k, k))
    for row, label in enumerate(labels):
        if label is None:
            continue
        mates = [m for m in neighbour_labels[row] if m]
        if not mates:
            continue
        for mate, n in Counter(mates).items():
            share[position[label], position[mate]] += n / len(mates)
    sizes = np.array([counts[c] for c in classes], dtype=np.float64)
    share = share / np.maximum(sizes[:, None], 1)
    pairs = [{"classes": [classes[a], classes[b]], "overlap": round(float((share[a, b] + share[b, a]) / 2), 4)}
             for a in range(k) for b in range(a + 1, k)]
    pairs.sort(key=lambda p: (-p["overlap"], p["classes"]))
    return pairs[:top]


def find_class_overlap(ids: Sequence[str], labels: Sequence[str | None], neighbours: Neighbours,
                       pairs: Sequence[dict]) -> list[Finding]:
    """``class_overlap`` findings for images of the given pairs with neighbours of the pair's other class."""
    if len(ids) != len(labels) or len(ids) != len(neighbours.index):
        raise InputError(f"ids ({len(ids)}), labels ({len(labels)}) and neighbours ({len(neighbours.index)}) "
                         "must have one row per image")
    partners: dict[str, list[str]] = {}
    for pair in pairs:
        a, b = pair["classes"]
        partners.setdefault(a, []).append(b)
        partners.setdefault(b, []).append(a)
    neighbour_labels = _neighbour_labels(neighbours, labels)
    findings = []
    for row, label in enumerate(labels):
        if label not in partners:
            continue
        mates = [m for m in neighbour_labels[row] if m]
        if not mates:
            continue
        tally = Counter(mates)
        other = max(partners[label], key=lambda c: (tally.get(c, 0), c))
        if tally.get(other, 0) == 0:
            continue
        own_share = tally.get(label, 0) / len(mates)
        other_share = tally[other] / len(mates)
        findings.append(Finding(ids[row], "class_overlap", float(own_share), bool(other_share > own_share), {
            "label": label, "other_class": other, "own_share": round(own_share, 3),
            "other_share": round(other_share, 3), "k": len(mates),
            "reason": f"{tally[other]} of its {len(mates)} nearest neighbours are {other!r}, "
                      f"{tally.get(label, 0)} are {label!r}"}))
    return findings

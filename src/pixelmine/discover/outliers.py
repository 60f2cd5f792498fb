"""Outliers: images far from their nearest neighbours in feature space.

An image's *distance* is the mean cosine distance (1 - cosine of L2-normalised features) to its k nearest
neighbours. Distances are calibrated against the collection with a robust z-score,
``z = (d - median) / (1.4826 * MAD)``, and turned into a score that halves every ``z_threshold`` robust
standard deviations above the median: ``score = 2 ** (-max(z, 0) / z_threshold)``. An image is an outlier when
``z > z_threshold`` (score < 0.5). ``outlier`` compares an image with the whole collection, ``class_outlier``
with the images that carry its own label (a photo that fits the collection but not its class).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from .findings import Finding
from .neighbors import Neighbours, nearest_neighbours

OUTLIER_K = 10  # neighbours averaged into an image's distance
CLASS_EXACT_LIMIT = 5_000  # images per class searched exactly; larger classes use the IVF index (keeps N^1.5)
Z_THRESHOLD = 4.0  # robust standard deviations above the median distance that make an outlier

KINDS = {  # kind -> (what it means, what to do)
    "outlier": ("far from every other image in feature space (out of domain, corrupted or rare)",
                "look at it: remove it if it does not belong, or collect more images like it if it does"),
    "class_outlier": ("far from the other images of its own class",
                      "check its label; if it is right, the class has a rare mode worth more examples"),
}


def robust_z(values: np.ndarray, min_scale: float = 1e-6) -> tuple[np.ndarray, float, float]:
    """(z-scores, median, scale) with scale = 1.4826 * MAD (the standard deviation for normal data)."""
    values = np.asarray(values, dtype=np.float64)
    median = float(np.median(values))
    scale = max(1.4826 * float(np.median(np.abs(values - median))), min_scale)
    return (values - median) / scale, median, scale


def knn_distance(neighbours: Neighbours, k: int = OUTLIER_K) -> np.ndarray:
    """Mean cosine distance to the ``k`` nearest neighbours (the ones that exist)."""
    sims = neighbours.similarity[:, :k].astype(np.float64)
    present = np.isfinite(sims)
    counts = present.sum(axis=1)
    total = np.where(present, 1.0 - sims, 0.0).sum(axis=1)
    return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)


def _score(z: np.ndarray, z_threshold: float) -> np.ndarray:
    return np.power(2.0, -np.maximum(z, 0.0) / z_threshold)


def find_outliers(ids: Sequence[str], neighbours: Neighbours, *, k: int = OUTLIER_K,
                  z_threshold: float = Z_THRESHOLD, kind: str = "outlier") -> list[Finding]:
    """One finding per image: its k-NN distance calibrated into a score (see the module docstring)."""
    if len(ids) != len(neighbours.index):
        raise InputError(f"neighbours has {len(neighbours.index)} rows but there are {len(ids)} image ids")
    if z_threshold <= 0:
        raise InputError(f"z_threshold must be > 0 (robust standard deviations); got {z_threshold!r}")
    distance = knn_distance(neighbours, k)
    known = np.isfinite(distance)
    if known.sum() < 3:
        return []
    z = np.full(len(ids), np.nan)
    z[known], median, scale = robust_z(distance[known])
    scores = _score(np.nan_to_num(z, nan=0.0), z_threshold)
    threshold = median + z_threshold * scale
    findings = []
    for row in np.flatnonzero(known):
        nearest = neighbours.index[row, :3]
        findings.append(Finding(ids[row], kind, float(scores[row]), bool(z[row] > z_threshold), {
            "knn_distance": round(float(distance[row]), 5), "robust_z": round(float(z[row]), 3),
            "k": int(min(k, neighbours.k)), "median_distance": round(median, 5),
            "threshold_distance": round(threshold, 5), "nearest": [ids[j] for j in nearest if j >= 0],
            "threshold": (f"mean cosine distance to its {min(k, neighbours.k)} nearest neighbours above "
                          f"{threshold:.4f} = median {median:.4f} + {z_threshold:g} x robust s.d. {scale:.4f}")}))
    return findings


def find_class_outliers(ids: Sequence[str], normalised: np.ndarray, labels: Sequence[str | None], *,
                        k: int = OUTLIER_K, z_threshold: float = Z_THRESHOLD, min_class_size: int = 5) -> list[Finding]:
    """Outliers within each class: k-NN among the images of the same label, calibrated per class.

    ``normalised``: L2-normalised features of the whole collection (so that "far" means the same
    thing in every class). Classes with fewer than ``min_class_size`` images are skipped.
    """
    if len(labels) != len(ids) or len(normalised) != len(ids):
        raise InputError(f"ids ({len(ids)}), features ({len(normalised)}) and labels ({len(labels)}) must "
                         "have one row per image")
    findings: list[Finding] = []
    label_array = np.asarray([label if label is not None else "" for label in labels], dtype=object)
    for label in sorted({label for label in labels if label is not None}):
        rows = np.flatnonzero(label_array == label)
        if len(rows) < max(min_class_size, 3):
            continue
        graph = nearest_neighbours(normalised[rows], min(k, len(rows) - 1), normalised=True,
                                   exact_limit=CLASS_EXACT_LIMIT)
        for finding in find_outliers([ids[r] for r in rows], graph, k=k, z_threshold=z_threshold,
                                     kind="class_outlier"):
            finding.details["label"] = label
            findings.append(finding)
    return findings

"""ImageNet tags: each image's top-5 classes of the backbone's classifier, stored beside its features.

Later stages (discovery, search, association rules) read them as words describing an image.
"""

from __future__ import annotations

from collections import Counter

from .store import FeatureSet


def tags_by_image(features: FeatureSet, labels: list[str], *, min_prob: float = 0.0) -> dict[str, list[tuple[str, float]]]:
    """``{image_id: [(label, probability), ...]}``, best first, keeping tags with probability >= min_prob."""
    if features.tag_indices is None or not labels:
        return {image_id: [] for image_id in features.ids}
    result = {}
    for image_id, indices, probs in zip(features.ids, features.tag_indices, features.tag_probs):
        result[image_id] = [(labels[i], round(float(p), 4)) for i, p in zip(indices, probs)
                            if i >= 0 and p >= min_prob]
    return result


def top1_counts(features: FeatureSet, labels: list[str], n: int = 10) -> list[tuple[str, int]]:
    """The ``n`` most frequent top-1 tags with their image counts."""
    if features.tag_indices is None or not labels or len(features) == 0:
        return []
    counts = Counter(int(i) for i in features.tag_indices[:, 0] if i >= 0)
    return [(labels[i], c) for i, c in counts.most_common(n)]

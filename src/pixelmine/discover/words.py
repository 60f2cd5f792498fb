"""Clusters in words: each cluster's nearest text concepts, for the report, the CLI and the rules.

With a ``clip:`` backbone the cluster's mean image embedding is compared with CLIP text embeddings of the
1,000 ImageNet concepts ("a photo of a bottle cap."), cached in ``text/`` of the workspace. With any other
backbone the concepts are the ImageNet classes its members are tagged with (mean tag probability), which is
what the offline text fallback reads too. Either way: "cluster 3: mostly 'bottle cap', 'screw'".
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np

from ..fileio import atomic_save_npy

log = logging.getLogger(__name__)

CONCEPT_PROMPT = "a photo of a {}."
WORDS_PER_CLUSTER = 3


def cluster_words(root, features, ids, assignments, clusters, *, k: int = WORDS_PER_CLUSTER) -> dict[int, list]:
    """{cluster id: [(concept, weight), ...]} for the clusters of ``ids`` (``assignments`` per id)."""
    from ..backbones.clip import is_clip

    if not is_clip(features.backbone):
        return {c.id: [(name, round(float(p), 4)) for name, p in c.tags[:k]] for c in clusters}
    try:
        names, text = _clip_concepts(root, features.backbone)
    except Exception as exc:  # noqa: BLE001 - words are a description; clusters stand without them
        log.warning("clusters are not described in words: %s", exc)
        return {}
    vectors = np.asarray(features.vectors[features.rows(ids)], dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    assignments = np.asarray(assignments)
    found = {}
    for c in clusters:
        members = vectors[assignments == c.id]
        if not len(members):
            continue
        centre = members.mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        similarity = text @ centre
        best = np.argsort(-similarity)[:k]
        found[c.id] = [(names[i], round(float(similarity[i]), 4)) for i in best]
    return found


def _clip_concepts(root, backbone: str) -> tuple[list[str], np.ndarray]:
    """The ImageNet concept names and their CLIP text embeddings (computed once per backbone, cached)."""
    from ..search.text import open_text_space
    from ..text.concepts import ImageNetConcepts

    names = list(ImageNetConcepts.load().classes)
    key = hashlib.sha256(("\n".join(names) + CONCEPT_PROMPT).encode()).hexdigest()[:12]
    path = Path(root) / "text" / f"clip-concepts-{re.sub(r'[^A-Za-z0-9_.-]+', '_', backbone)}-{key}.npy"
    if path.exists():
        text = np.load(path)
        if text.shape[0] == len(names):
            return names, text
    space = open_text_space(root, backbone)
    text = space.clip_text([CONCEPT_PROMPT.format(name) for name in names])
    atomic_save_npy(path, text.astype(np.float32))
    return names, text


def described(item: str, words: dict) -> str:
    """``cluster=3`` -> ``cluster=3 ('bottle cap', 'screw')`` when the cluster has words."""
    attribute, _, value = item.partition("=")
    if attribute != "cluster" or value not in words or not words[value]:
        return item
    return f"{item} (" + ", ".join(repr(name) for name, _ in words[value][:2]) + ")"

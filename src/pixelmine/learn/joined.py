"""Concatenated feature sets: the backbone name ``A+B`` means the vectors of A and of B side by side.

Automatic model selection tries the concatenation of its two best feature sets: two networks (or one
network seeing two framings of the image) often make different mistakes, and a linear head on both can
use both. A model trained on ``A+B`` embeds new files with both backbones (:class:`JointEmbedder`); its
feature fingerprint is a hash of the parts' fingerprints, so a change in either part is noticed.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import InputError

SEPARATOR = "+"


def parts(backbone: str) -> list[str]:
    """The backbone names of a (possibly joined) feature set name, in order."""
    names = [name.strip() for name in backbone.split(SEPARATOR)]
    if any(not name for name in names) or len(set(names)) != len(names):
        raise InputError(f"the feature set {backbone!r} must be backbone names joined by '+', each once, e.g. "
                         "mobilenet_v2+full:mobilenet_v2@250")
    return names


def is_joined(backbone: str) -> bool:
    return SEPARATOR in backbone


def join(names) -> str:
    return SEPARATOR.join(names)


def joined_fingerprint(fingerprints) -> str:
    return hashlib.sha256(SEPARATOR.join(fingerprints).encode()).hexdigest()


def load_feature_set(root, backbone: str):
    """The cached :class:`~pixelmine.features.FeatureSet` of ``backbone``; for ``A+B``, the images both
    have, with the vectors concatenated (NotFittedError naming the part that has none)."""
    from ..features.store import FeatureSet, load_features

    if not is_joined(backbone):
        return load_features(root, backbone)
    sets = [load_features(root, name) for name in parts(backbone)]
    common = set(sets[0].ids)
    for other in sets[1:]:
        common &= set(other.ids)
    ids = [i for i in sets[0].ids if i in common]
    vectors = np.hstack([np.asarray(s.vectors[s.rows(ids)], dtype=np.float32) for s in sets]) if ids else \
        np.zeros((0, sum(s.dim for s in sets)), dtype=np.float32)
    return FeatureSet(ids, vectors, backbone, joined_fingerprint([s.fingerprint for s in sets]))


def sources(root, backbone: str) -> list[dict]:
    """Each part's backbone name and the fingerprint of its cached features (saved in the model)."""
    from ..features.store import load_features

    return [{"backbone": name, "fingerprint": load_features(root, name).fingerprint} for name in parts(backbone)]


class JointEmbedder:
    """Several resident embedders used as one: features side by side, for the rows every part embedded."""

    def __init__(self, embedders):
        self.embedders = list(embedders)

    @classmethod
    def open(cls, feature_sources: list[dict], *, root=None, threads: int | None = None) -> "JointEmbedder":
        from ..features.embedder import Embedder

        opened = []
        try:
            for source in feature_sources:
                opened.append(Embedder.open(source["backbone"], root=root, fingerprint=source["fingerprint"],
                                            threads=threads))
        except BaseException:
            for embedder in opened:
                embedder.close()
            raise
        return cls(opened)

    def describe(self) -> str:
        return " + ".join(e.describe() for e in self.embedders)

    def embed_files(self, paths, *, progress=False, **options):
        from ..features.embedder import Embeddings

        outputs = [e.embed_files(paths, progress=progress, **options) for e in self.embedders]
        errors: dict[int, str] = {}
        for out in outputs:
            for row, message in out.errors.items():
                errors.setdefault(row, message)
        common = sorted(set.intersection(*(set(out.rows) for out in outputs)) - set(errors))
        blocks = []
        for out in outputs:
            position = {row: k for k, row in enumerate(out.rows)}
            blocks.append(np.asarray(out.features, dtype=np.float32)[[position[row] for row in common]]
                          if common else np.zeros((0, out.features.shape[1]), dtype=np.float32))
        features = np.hstack(blocks)
        return Embeddings(features=np.asarray(features, dtype=np.float32), rows=common, errors=errors)

    def close(self) -> None:
        for embedder in self.embedders:
            embedder.close()

    def __enter__(self) -> "JointEmbedder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

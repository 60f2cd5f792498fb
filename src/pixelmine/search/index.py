"""The vector index on disk: ``index/<backbone>-<fingerprint[:12]>/`` holding ``vectors.faiss``, ``ids.npy``
and ``index.json`` (backbone, fingerprint, size, and a stamp of the feature ids it was built from).

:meth:`VectorIndex.for_features` loads the saved index when its stamp matches the current features and
rebuilds (and saves) it when the features changed, so the index is never stale.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..features.store import folder_name
from ..fileio import atomic_path, atomic_save_npy, atomic_write_json
from ..optional import require

log = logging.getLogger(__name__)


def _faiss():
    return require("faiss", "Similarity search")


def normalise(vectors: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12))


def stamp_of(ids, vectors: np.ndarray, fingerprint: str) -> str:
    """Identifies the exact feature set: fingerprint, shape and the ordered ids."""
    digest = hashlib.sha256(f"{fingerprint}:{vectors.shape}".encode())
    for image_id in ids:
        digest.update(image_id.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def index_dir(workspace_root: str | os.PathLike, backbone: str, fingerprint: str) -> Path:
    return Path(workspace_root) / "index" / folder_name(backbone, fingerprint)


class VectorIndex:
    """Exact cosine-similarity search over ``ids`` x ``vectors``."""

    def __init__(self, ids, vectors: np.ndarray, *, backbone: str = "", fingerprint: str = "", stamp: str = "",
                 index=None):
        self.ids = list(ids)
        self.backbone = backbone
        self.fingerprint = fingerprint
        self.stamp = stamp
        if index is None:
            vectors = np.asarray(vectors)
            if vectors.ndim != 2 or vectors.shape[0] != len(self.ids):
                raise InputError(f"vectors must be (N, D) with N = len(ids) = {len(self.ids)}; "
                                 f"got shape {vectors.shape}")
            index = _faiss().IndexFlatIP(int(vectors.shape[1]))
            if len(self.ids):
                index.add(normalise(vectors))
        self._index = index
        self._row = {image_id: row for row, image_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[list[list[str]], np.ndarray]:
        """The ``k`` most similar stored images of each query: (ids per query, cosine similarities (Q, k))."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim:
            raise InputError(f"query vectors have {queries.shape[1]} dimensions; this index holds {self.dim}-d "
                             f"{self.backbone or 'feature'} vectors; extract the query with the same backbone")
        if k < 1:
            raise InputError(f"The 'k' parameter must be at least 1. Got {k!r} instead.")
        k = min(int(k), len(self.ids))
        if k == 0:
            return [[] for _ in range(len(queries))], np.zeros((len(queries), 0), np.float32)
        scores, rows = self._index.search(normalise(queries), k)
        return [[self.ids[r] for r in row if r >= 0] for row in rows], scores

    def add(self, ids, vectors: np.ndarray) -> None:
        """Append images (ids not stored yet) to the in-memory index; nothing is saved."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[0] != len(ids) or vectors.shape[1] != self.dim:
            raise InputError(f"vectors must be ({len(ids)}, {self.dim}); got shape {vectors.shape}")
        for image_id in ids:
            self._row[image_id] = len(self.ids)
            self.ids.append(image_id)
        if len(ids):
            self._index.add(normalise(vectors))

    def vector(self, image_id: str) -> np.ndarray:
        return self._index.reconstruct(self._row[image_id])

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._row

    # -- persistence ------------------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        faiss = _faiss()
        with atomic_path(directory / "vectors.faiss") as tmp:
            faiss.write_index(self._index, str(tmp))
        atomic_save_npy(directory / "ids.npy", np.asarray(self.ids, dtype="U64"))
        meta = {"backbone": self.backbone, "fingerprint": self.fingerprint, "stamp": self.stamp,
                "size": len(self.ids), "dim": self.dim, "kind": "IndexFlatIP (cosine on L2-normalised vectors)"}
        atomic_write_json(directory / "index.json", meta, indent=1)  # last: its stamp vouches for the two above
        return directory

    @classmethod
    def load(cls, directory: Path) -> "VectorIndex | None":
        meta_path = directory / "index.json"
        if not meta_path.exists():
            return None
        faiss = _faiss()
        try:
            meta = json.loads(meta_path.read_text())
            ids = np.load(directory / "ids.npy").tolist()
            index = faiss.read_index(str(directory / "vectors.faiss"))
        except (OSError, ValueError, RuntimeError, EOFError) as exc:  # faiss reports a bad file as RuntimeError
            log.warning("the vector index in %s is damaged (%s: %s); building it again", directory,
                        type(exc).__name__, exc)
            return None
        if index.ntotal != len(ids) or meta.get("size") != len(ids):
            log.warning("the vector index in %s does not match its ids; building it again", directory)
            return None
        return cls(ids, None, backbone=meta["backbone"], fingerprint=meta["fingerprint"], stamp=meta["stamp"],
                   index=index)

    @classmethod
    def for_features(cls, workspace_root, features) -> "VectorIndex":
        """The saved index of ``features`` (a FeatureSet), rebuilt and saved when the features changed."""
        stamp = stamp_of(features.ids, features.vectors, features.fingerprint)
        directory = index_dir(workspace_root, features.backbone, features.fingerprint)
        index = cls.load(directory)
        if index is not None and index.stamp == stamp:
            return index
        log.info("building the %s vector index over %d images", features.backbone, len(features))
        index = cls(features.ids, features.vectors, backbone=features.backbone,
                    fingerprint=features.fingerprint, stamp=stamp)
        index.save(directory)
        return index

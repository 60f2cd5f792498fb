"""Nearest neighbours in feature space, shared by the duplicate, outlier and class finders.

Similarity is the cosine of the L2-normalised features, *not* centred: in a homogeneous collection (2,000
textile photos) centring turns the crowd into noise and makes a handful of out-of-domain images look like a
tight cluster of each other (outlier AUROC 0.39 centred vs 1.00 uncentred on the demo benchmark).

Search is exact (faiss ``IndexFlatIP``) up to ``EXACT_LIMIT`` images: a brute-force pass over 20,000 x 1,280
vectors costs about a second on 2 cores. Beyond that an inverted-file index (``IndexIVFFlat``, 4 sqrt(N)
cells, ``nprobe`` of them searched) keeps the cost near N^1.5 instead of N^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..optional import require

EXACT_LIMIT = 20_000  # images; above this the approximate (IVF) index is used
NPROBE = 24  # IVF cells searched per query


def _faiss():
    return require("faiss", "Nearest-neighbour search for discovery")


def normalise(vectors: np.ndarray) -> np.ndarray:
    """L2-normalised float32 rows (a zero row stays zero)."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise InputError(f"feature vectors must be a 2-D array (images x dimensions); got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise InputError(f"feature vector of row {bad} holds NaN or infinity; re-run: pixelmine extract")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


@dataclass(frozen=True)
class Neighbours:
    """k nearest neighbours of every row (itself excluded), most similar first."""

    index: np.ndarray  # (N, k) int64 row numbers; -1 where fewer than k neighbours exist
    similarity: np.ndarray  # (N, k) float32 cosine of the features; -inf where index is -1
    exact: bool  # False when an approximate index answered

    @property
    def k(self) -> int:
        return int(self.index.shape[1])

    def pairs(self, min_similarity: float, ratio: float | None = None) -> np.ndarray:
        """Unique pairs (i, j), i < j, of neighbours at least ``min_similarity`` alike. Shape (P, 2).

        ``ratio``: also require the pair's distance (1 - cosine) to be at most ``ratio`` times the distance from
        i to its farthest kept neighbour (a ratio test: a copy stands out from i's ordinary neighbours, which
        matters in a collection where every image looks alike)."""
        keep = (self.similarity >= min_similarity) & (self.index >= 0)
        if ratio is not None:
            finite = np.where(np.isfinite(self.similarity), self.similarity, np.inf)
            reference = 1.0 - finite.min(axis=1, keepdims=True)
            keep &= (1.0 - self.similarity) <= ratio * reference
        rows, cols = np.nonzero(keep)
        a, b = rows.astype(np.int64), self.index[rows, cols].astype(np.int64)
        pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)
        return np.unique(pairs, axis=0) if len(pairs) else np.zeros((0, 2), np.int64)


def nearest_neighbours(vectors: np.ndarray, k: int = 10, *, normalised: bool = False,
                       exact_limit: int = EXACT_LIMIT, seed: int = 0) -> Neighbours:
    """The ``k`` nearest rows of each row by cosine similarity.

    ``normalised=True`` when ``vectors`` already went through :func:`normalise` (or is a subset of such rows).
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k (neighbours per image) must be a positive integer; got {k!r}")
    x = vectors if normalised else normalise(vectors)
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, dim = x.shape
    k_eff = min(int(k), max(n - 1, 0))
    if n == 0 or k_eff == 0:
        return Neighbours(np.full((n, k), -1, np.int64), np.full((n, k), -np.inf, np.float32), True)
    faiss = _faiss()
    exact = n <= exact_limit
    if exact:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))  # faiss's k-means wants >= 39 points per cell
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = x[np.random.default_rng(seed).choice(n, size=min(n, 40 * nlist), replace=False)]
        index.cp.seed = seed
        index.train(sample)
        index.nprobe = NPROBE
    index.add(x)
    similarity, found = index.search(x, k_eff + 1)
    # Drop each row's own entry; identical vectors may list a twin before the row itself.
    own = found == np.arange(n)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k_eff)
    keep = np.ones_like(own)
    keep[np.arange(n), drop] = False
    found = found[keep].reshape(n, k_eff)
    similarity = similarity[keep].reshape(n, k_eff).astype(np.float32)
    similarity[found < 0] = -np.inf
    if k_eff < k:  # pad to the requested width
        found = np.concatenate([found, np.full((n, k - k_eff), -1, found.dtype)], axis=1)
        similarity = np.concatenate([similarity, np.full((n, k - k_eff), -np.inf, np.float32)], axis=1)
    return Neighbours(found.astype(np.int64), similarity, exact)

"""A 2-D map of the collection for the report and the web UI: UMAP on the PCA-reduced, L2-normalised
features (cosine metric), stored as ``index/map2d.npz`` (ids, xy, method, fingerprint).

UMAP keeps local neighbourhoods, so near-duplicates and tight groups stay together and clusters read as
islands. PCA is the fallback, with the reason logged: when umap-learn is not installed, or when N is above
``umap_max`` (UMAP's cost grows with N; at that size a map of a random sample would be the better tool).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, NotFittedError
from ..fileio import atomic_save_npz

log = logging.getLogger(__name__)

MAP_FILE = ("index", "map2d.npz")
METHODS = ("umap", "pca")
UMAP_MAX = 300_000  # above this many images the map falls back to PCA (UMAP took ~1 min per 70,000 here)


@dataclass
class Map2D:
    ids: list[str]
    xy: np.ndarray  # (N, 2) float32
    method: str  # "umap" or "pca"
    fingerprint: str  # feature fingerprint the map was computed from
    reason: str = ""  # why PCA was used instead of UMAP, when it was

    def save(self, path: Path) -> Path:
        return atomic_save_npz(path, compressed=False, ids=np.asarray(self.ids, dtype="U64"),
                               xy=self.xy.astype(np.float32), method=np.asarray(self.method),
                               fingerprint=np.asarray(self.fingerprint), reason=np.asarray(self.reason))

    @classmethod
    def load(cls, path: Path) -> "Map2D":
        if not path.exists():
            raise NotFittedError(f"no 2-D map at {str(path)!r} yet; run: pixelmine clusters")
        with np.load(path, allow_pickle=False) as data:
            return cls(data["ids"].tolist(), data["xy"], str(data["method"]), str(data["fingerprint"]),
                       str(data["reason"]))


def embed_2d(vectors: np.ndarray, *, method: str = "umap", seed: int = 0, pca_dims: int = 32,
             umap_max: int = UMAP_MAX) -> tuple[np.ndarray, str, str]:
    """(N, 2) coordinates, the method used, and the reason when it fell back to PCA."""
    from .clusters import reduce

    if method not in METHODS:
        raise InputError(f"The 'method' parameter of the 2-D map must be one of {', '.join(METHODS)}. "
                         f"Got {method!r} instead.")
    n = len(vectors)
    if n < 3:
        raise InputError(f"a 2-D map needs at least 3 images with features; got {n}")
    x = reduce(vectors, pca_dims, seed)
    reason = ""
    if method == "umap" and n > umap_max:
        reason = f"{n} images is above the UMAP limit of {umap_max}; PCA keeps the map linear in N"
    elif method == "umap":
        try:
            import umap  # noqa: F401
        except ImportError:
            reason = "umap-learn is not installed (pip install umap-learn)"
    if method == "umap" and not reason:
        import umap

        neighbours = int(min(15, n - 1))
        reducer = umap.UMAP(n_components=2, n_neighbors=neighbours, min_dist=0.1, metric="cosine",
                            random_state=seed, n_jobs=1, init="spectral" if n > neighbours + 2 else "random")
        xy = reducer.fit_transform(x)
        return np.asarray(xy, dtype=np.float32), "umap", ""
    if reason:
        log.warning("2-D map: using PCA instead of UMAP: %s", reason)
    return np.ascontiguousarray(x[:, :2], dtype=np.float32) if x.shape[1] >= 2 else \
        np.column_stack([x[:, 0], np.zeros(n)]).astype(np.float32), "pca", reason

"""What every finder may read, gathered once per discover run: the images with features (sorted by id, so a
re-run sees the same order), their catalog properties, the normalised features and, on first use, the shared
nearest-neighbour graph and the pixel statistics."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import NotFittedError
from .neighbors import Neighbours, nearest_neighbours, normalise

log = logging.getLogger(__name__)

NEIGHBOURS_K = 10  # neighbours kept per image in the shared graph


@dataclass
class DiscoverContext:
    catalog: object  # the workspace's Catalog
    root: object  # the workspace directory (Path): caches and outputs of the finders
    backbone: str
    ids: list[str]
    labels: list[str | None]
    splits: list[str | None]
    phashes: list[str | None]
    widths: list[int | None]
    heights: list[int | None]
    paths: list[str]
    sizes: list[int | None]  # file sizes, bytes
    seen: list[tuple]  # (first seen, path): the order images came into the catalog
    features: object  # the FeatureSet the run reads (its fingerprint identifies the run's input)
    normalised: np.ndarray  # (N, D) L2-normalised features, row order of ids
    raw: np.ndarray  # (N, D) features as extracted
    trained: object | None = None  # the Model whose out-of-fold probabilities label_issues reads (None: none)
    workers: int = 2
    progress: object = None
    without_features: int = 0  # ok images that have no features of this backbone
    ignored: int = 0  # images a person marked 'ignore' (left out)
    accepted: set = field(default_factory=set)  # images whose label a person accepted (never a label issue)
    summary: dict = field(default_factory=dict)  # finders add class tables, estimates, notes
    run_id: int | None = None  # the discover run the findings are stored under (set when it starts)
    _neighbours: Neighbours | None = None
    _pixels: object | None = None  # pixel_stats.PixelData

    @property
    def neighbours(self) -> Neighbours:
        if self._neighbours is None:
            self._neighbours = nearest_neighbours(self.normalised, NEIGHBOURS_K, normalised=True)
            self.summary["neighbour_search"] = "exact" if self._neighbours.exact else "approximate (IVF)"
        return self._neighbours

    @property
    def pixels(self):
        """:class:`~.pixel_stats.PixelData` (statistics and view hashes) of every image, cached in the workspace."""
        if self._pixels is None:
            from .pixel_stats import CACHE_NAME, pixel_stats

            self._pixels = pixel_stats(self.root / "discover" / CACHE_NAME, self.ids, self.paths,
                                       workers=self.workers, progress=self.progress)
        return self._pixels


def require_images(catalog) -> None:
    """NotFittedError naming the command to run when nothing usable was ingested yet."""
    if not catalog.images(status="ok", limit=1):
        raise NotFittedError(f"workspace {os.path.dirname(catalog.path)!r} has no decodable images yet; "
                             "run: pixelmine ingest PHOTOS_DIR --labels-from-folders")


def build_context(catalog, root, features, *, trained=None, workers: int = 2, progress=None) -> DiscoverContext:
    """The inputs every finder reads: the ok images that have ``features`` (a FeatureSet), with people's label
    corrections applied. NotFittedError naming the command to run when nothing was ingested or extracted."""
    from ..corrections import effective_labels, latest_corrections

    require_images(catalog)
    rows = catalog.images(status="ok")
    backbone = features.backbone
    position = {image_id: row for row, image_id in enumerate(features.ids)}
    # people's label corrections apply; images marked 'ignore' are left out of discovery
    labels = effective_labels(catalog)
    ignored = sum(1 for r in rows if r["id"] not in labels)
    rows = [{**r, "label": labels[r["id"]]} for r in rows if r["id"] in labels]
    kept = sorted((r for r in rows if r["id"] in position), key=lambda r: r["id"])
    without = len(rows) - len(kept)
    if not kept:
        raise NotFittedError(f"none of the {len(rows)} images of workspace {str(root)!r} has {backbone} "
                             f"features; run: pixelmine extract --backbone {backbone}")
    if without:
        log.warning("%d images have no %s features and are left out; run: pixelmine extract --backbone %s",
                    without, backbone, backbone)
    raw = np.asarray(features.vectors[np.fromiter((position[r["id"]] for r in kept), np.int64, len(kept))],
                     dtype=np.float32)
    return DiscoverContext(
        catalog=catalog, root=Path(root), backbone=backbone, ids=[r["id"] for r in kept], labels=[r["label"] for r in kept],
        splits=[r["split"] for r in kept], phashes=[r["phash"] for r in kept], widths=[r["width"] for r in kept],
        heights=[r["height"] for r in kept], paths=[r["path"] for r in kept], sizes=[r["size"] for r in kept],
        seen=[(r["first_seen"], r["path"]) for r in kept], features=features,
        normalised=normalise(raw), raw=raw,
        trained=trained, workers=workers, progress=progress, without_features=without, ignored=ignored,
        accepted={i for i, c in latest_corrections(catalog).items() if c["action"] == "accept"})

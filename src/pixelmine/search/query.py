"""``similar(catalog, root, features, image, k)``: resolve what the user named, find its vector, ask the index.

``image`` may be a catalogued image id or a unique prefix of one (at least 4 hex characters), a path the
catalog has seen, or any image file: a file whose bytes are catalogued uses that image's cached vector;
a new file is decoded and embedded with the same backbone (and the same decode and preprocessing) as the
cached features, so its vector is comparable.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, NotFittedError
from .index import VectorIndex
from ..fileio import sha256_file
from ..optional import check_stage

_HEX = re.compile(r"^[0-9a-f]{4,64}$")


@dataclass
class Neighbour:
    rank: int  # 1 = most similar
    image_id: str
    similarity: float  # cosine similarity, -1..1 (1 = same direction)
    path: str | None
    label: str | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Query:
    """What the user's ``image`` resolved to."""

    image_id: str | None  # None for a file the catalog has not seen
    path: str | None
    source: str  # "id", "path", "file-catalogued", "file-new"


def resolve(catalog, image: str) -> Query:
    """Turn an id, id prefix, catalogued path or file into a Query (InputError when none matches)."""
    text = str(image)
    path = Path(text).expanduser()
    rows = catalog.query("SELECT image_id FROM paths WHERE path = ? AND image_id IS NOT NULL",
                         (os.path.abspath(path),))
    if not rows:
        rows = catalog.query("SELECT image_id FROM paths WHERE path = ? AND image_id IS NOT NULL", (text,))
    if rows:
        return Query(rows[0]["image_id"], str(path), "path")
    if path.is_file():
        image_id = sha256_file(path)
        known = catalog.query("SELECT id FROM images WHERE id = ?", (image_id,))
        return Query(image_id if known else None, str(path), "file-catalogued" if known else "file-new")
    lowered = text.lower()
    if _HEX.match(lowered):
        matches = [r["id"] for r in catalog.query("SELECT id FROM images WHERE id >= ? AND id < ? LIMIT 6",
                                                  (lowered, lowered + "g"))]
        if len(matches) == 1:
            return Query(matches[0], None, "id")
        if len(matches) > 1:
            raise InputError(f"image id prefix {text!r} matches {len(matches) if len(matches) < 6 else '6 or more'} "
                             f"images ({', '.join(m[:12] for m in matches[:3])}, ...); give more characters")
    raise InputError(f"{text!r} is neither a file nor a catalogued image id (or unique id prefix of at least 4 "
                     "hex characters); give an image file path or an id from: pixelmine files")


def embed_file(path: str, backbone: str, fingerprint: str, workspace_root) -> np.ndarray:
    """The feature vector (1, D) of one image file, computed exactly like the cached features (same
    backbone, weights, decode and preprocessing) by the one embedder of :mod:`pixelmine.features`."""
    from ..features.embedder import Embedder

    with Embedder.open(backbone, root=workspace_root, fingerprint=fingerprint) as embedder:
        embedded = embedder.embed_files([path])
    if 0 in embedded.errors:
        raise InputError(f"cannot use {path!r} as a query: {embedded.errors[0]}")
    return embedded.features[:1].astype(np.float32)


def similar(catalog, root, features, image: str, k: int = 10) -> tuple[Query, list[Neighbour]]:
    """The ``k`` images of ``features`` (a FeatureSet of the workspace at ``root``) most similar to ``image``,
    most similar first. A catalogued query is in the index, so it comes first as its own neighbour
    (similarity 1.0), which shows the answer is anchored right."""
    check_stage("similar")
    if int(k) < 1:
        raise InputError(f"The 'k' parameter must be at least 1. Got {k!r} instead.")
    query = resolve(catalog, image)
    backbone = features.backbone
    index = VectorIndex.for_features(root, features)
    if query.image_id is not None and query.image_id in index:
        vector = index.vector(query.image_id)[None]
    else:
        path = query.path or _present_path(catalog, query.image_id)
        if path is None:
            raise NotFittedError(f"image {query.image_id[:12]} has no {backbone} features and no file on disk to "
                                 f"compute them from; run: pixelmine ingest, then pixelmine extract --backbone {backbone}")
        vector = embed_file(path, features.backbone, features.fingerprint, root)
    found, scores = index.search(vector, int(k))
    info = _image_info(catalog, found[0])
    neighbours = [Neighbour(rank + 1, image_id, float(score), *info.get(image_id, (None, None)))
                  for rank, (image_id, score) in enumerate(zip(found[0], scores[0]))]
    return query, neighbours


def _present_path(catalog, image_id: str) -> str | None:
    rows = catalog.query("SELECT MIN(path) AS path FROM paths WHERE image_id = ? AND present = 1", (image_id,))
    return rows[0]["path"] if rows else None


def _image_info(catalog, ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = catalog.query(
        f"SELECT i.id, i.label, (SELECT MIN(p.path) FROM paths p WHERE p.image_id = i.id AND p.present = 1) AS path "
        f"FROM images i WHERE i.id IN ({marks})", ids)
    return {r["id"]: (r["path"], r["label"]) for r in rows}

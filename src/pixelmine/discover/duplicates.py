"""Duplicates: exact (the same bytes under several paths) and near (a resized, re-encoded, cropped, flipped
or brightened copy).

Two images are *linked* when any of three tests says so:
- **pHash**: their 64-bit perceptual hashes (from ingest) differ in <= ``phash_bits`` bits — catches resized,
  re-encoded and re-lit copies; all such pairs are found exactly by multi-index hashing;
- **views**: one image's hash is within ``view_bits`` of a *view* hash of the other (its mirror image, or an
  80 % crop window and its mirror; :mod:`.pixel_stats`) — catches flipped and cropped copies;
- **features**: cosine >= ``cosine`` between their L2-normalised features, among each image's nearest
  neighbours, and (ratio test) at most ``ratio`` times the distance to its 10th neighbour — catches copies
  that changed pixels more than hashes tolerate, while in a collection where every image looks alike
  (textile photos sit at cosine 0.98 of each other) ordinary neighbours are not mistaken for copies.
Links are grouped into connected components (union-find), so a group is closed under "is a near-duplicate
of", and symmetric by construction. Each group gets a suggested keeper: the largest resolution, then the
sharpest, then a labelled one, then the smallest id (so the choice is stable). Redundant copies are issues;
every member is an issue when the group straddles train/test splits or carries conflicting labels, because
then the copies leak between splits or contradict each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from .findings import Finding
from .neighbors import Neighbours

NEAR_DUPLICATE_COSINE = 0.95  # feature cosine a copy must reach (benchmarks/discover.py)
NEAR_DUPLICATE_RATIO = 0.3  # ... and its distance at most this share of the distance to the 10th neighbour
PHASH_BITS = 8  # Hamming distance (of 64 bits) at or below which two pHashes are the same picture
VIEW_BITS = 8  # the same, between an image's hash and a mirrored/cropped view of another
MAX_MEMBERS_LISTED = 20  # member ids written into each finding's details

KINDS = {  # kind -> (what it means, what to do); the finder table (finders.py) collects these
    "exact_duplicate": ("the same bytes are stored under more than one path",
                        "keep one path and delete the others; if their labels differ, decide which label is right"),
    "near_duplicate": ("a near-copy of another image (resized, re-encoded, cropped, flipped or re-lit)",
                       "keep the suggested keeper of the group and drop the rest; never let a group straddle train "
                       "and test"),
}


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = int(parent[a])
        return int(a)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]

    def groups(self) -> np.ndarray:
        """A component number per item, numbered 0.. in order of each component's first item."""
        roots = np.fromiter((self.find(i) for i in range(len(self.parent))), dtype=np.int64, count=len(self.parent))
        _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
        order = np.argsort(np.argsort(first))
        return order[inverse].astype(np.int64)


def connected_groups(n: int, pairs: np.ndarray) -> np.ndarray:
    """Group number per item from undirected pairs (P, 2); items in no pair are alone in their group."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= n):
        raise InputError(f"pair indices must be in 0..{n - 1}; got values {pairs.min()}..{pairs.max()}")
    uf = UnionFind(n)
    for a, b in pairs.tolist():
        uf.union(a, b)
    return uf.groups()


# -- perceptual hashes -------------------------------------------------------------------------------
def phash_codes(hashes: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 codes, valid mask) from 16-hex-digit pHashes; missing or malformed hashes are invalid."""
    codes = np.zeros(len(hashes), dtype=np.uint64)
    valid = np.zeros(len(hashes), dtype=bool)
    for row, value in enumerate(hashes):
        if value and len(value) == 16:
            try:
                codes[row] = np.uint64(int(value, 16))
                valid[row] = True
            except ValueError:
                pass
    return codes, valid


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance between uint64 arrays (element-wise)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1).astype(np.int64)


def phash_pairs(codes: np.ndarray, valid: np.ndarray, max_bits: int = PHASH_BITS,
                max_candidates: int = 50_000_000) -> np.ndarray:
    """Every pair (i, j), i < j, of valid codes at Hamming distance <= ``max_bits``: exact, by the pigeonhole
    principle (split 64 bits into max_bits + 1 chunks; a pair that close agrees on at least one chunk whole).

    Returns (P, 2) int64. When the chunk buckets would yield more than ``max_candidates`` candidate pairs
    (a collection of near-identical hashes, e.g. tiny grey thumbnails), only identical hashes are paired.
    """
    if not 0 <= max_bits < 64:
        raise InputError(f"phash_bits must be in 0..63; got {max_bits!r}")
    rows = np.flatnonzero(valid)
    if len(rows) < 2:
        return np.zeros((0, 2), np.int64)
    values = codes[rows]
    bounds = np.linspace(0, 64, max_bits + 2).astype(int)
    keys_per_chunk = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        mask = np.uint64((1 << (hi - lo)) - 1)
        keys_per_chunk.append((values >> np.uint64(lo)) & mask)
    estimate = 0
    for keys in keys_per_chunk:
        _, counts = np.unique(keys, return_counts=True)
        estimate += int((counts * (counts - 1) // 2).sum())
    if estimate > max_candidates:
        keys_per_chunk = [values]  # identical hashes only
    found: list[np.ndarray] = []
    for keys in keys_per_chunk:
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        stops = np.r_[starts[1:], len(order)]
        for start, stop in zip(starts[stops - starts > 1], stops[stops - starts > 1]):
            members = order[start:stop]
            a, b = np.triu_indices(len(members), k=1)
            found.append(np.stack([members[a], members[b]], axis=1))
    if not found:
        return np.zeros((0, 2), np.int64)
    cand = np.unique(np.sort(np.concatenate(found), axis=1), axis=0)
    close = hamming(values[cand[:, 0]], values[cand[:, 1]]) <= max_bits
    return rows[cand[close]].astype(np.int64)


VIEW_CROP_LIMIT = 10_000  # images; above this only the mirror view is compared (cost grows as N^2 x views)
VIEW_MIRROR_LIMIT = 50_000  # images; above this view hashes are not compared at all


def view_pairs(views: np.ndarray, valid: np.ndarray, max_bits: int = VIEW_BITS) -> np.ndarray:
    """Pairs (i, j), i < j, where the hash of one (column 0) is within ``max_bits`` of any view of the other.

    ``views``: (N, V) uint64 view hashes (column 0: the image itself, column 1: its mirror). Exact: a faiss
    binary range search of every image's own hash against all view hashes (N^2 x V popcounts, about 1.5 s
    for 2,250 x 100 views). Above :data:`VIEW_CROP_LIMIT` images only the mirror view is compared, above
    :data:`VIEW_MIRROR_LIMIT` none.
    """
    views = np.asarray(views, dtype=np.uint64)
    rows = np.flatnonzero(valid)
    if len(rows) < 2 or views.ndim != 2 or views.shape[1] < 2 or len(rows) > VIEW_MIRROR_LIMIT:
        return np.zeros((0, 2), np.int64)
    if len(rows) > VIEW_CROP_LIMIT:
        views = views[:, :2]
    from .neighbors import _faiss

    faiss = _faiss()
    v = views.shape[1]
    database = np.ascontiguousarray(views[rows].reshape(-1)).view(np.uint8).reshape(-1, 8)
    queries = np.ascontiguousarray(views[rows, 0]).view(np.uint8).reshape(-1, 8)
    index = faiss.IndexBinaryFlat(64)
    index.add(database)
    lims, _, found = index.range_search(queries, int(max_bits) + 1)  # distances < radius
    query_rows = np.repeat(np.arange(len(rows)), np.diff(lims.astype(np.int64)))
    owners = found // v
    keep = owners != query_rows
    a, b = rows[query_rows[keep]], rows[owners[keep]]
    if not len(a):
        return np.zeros((0, 2), np.int64)
    return np.unique(np.sort(np.stack([a, b], axis=1), axis=1), axis=0).astype(np.int64)


# -- the finders -------------------------------------------------------------------------------------
def exact_duplicate_findings(duplicates: Sequence[dict], conflicts: Sequence[dict] = ()) -> list[Finding]:
    """One finding per image stored under several paths. ``duplicates``: ``[{"image_id", "paths"}]`` and
    ``conflicts``: ``[{"image_id", "labels"}]``, as ``Workspace.status()`` lists them."""
    conflicting = {c["image_id"]: list(c["labels"]) for c in conflicts}
    findings = []
    for item in duplicates:
        paths = sorted(item["paths"])
        if len(paths) < 2:
            continue
        labels = conflicting.get(item["image_id"], [])
        findings.append(Finding(item["image_id"], "exact_duplicate", 0.0, True, {
            "paths": paths, "copies": len(paths), "keep": paths[0], "conflicting_labels": labels,
            "reason": f"identical bytes at {len(paths)} paths" + (f" labelled {', '.join(labels)}" if labels else "")}))
    return findings


def find_near_duplicates(ids: Sequence[str], *, neighbours: Neighbours | None = None,
                         normalised: np.ndarray | None = None, phashes: Sequence[str | None] | None = None,
                         labels: Sequence[str | None] | None = None, splits: Sequence[str | None] | None = None,
                         widths: Sequence[int | None] | None = None, heights: Sequence[int | None] | None = None,
                         sharpness: Sequence[float | None] | None = None, cosine: float = NEAR_DUPLICATE_COSINE,
                         ratio: float | None = NEAR_DUPLICATE_RATIO, phash_bits: int | None = PHASH_BITS,
                         view_hashes: np.ndarray | None = None, views_valid: np.ndarray | None = None,
                         view_bits: int = VIEW_BITS) -> list[Finding]:
    """Near-duplicate groups as findings, one per member of every group of two or more.

    ``neighbours``/``normalised``: the shared k-NN graph and the L2-normalised features it was built from
    (row order of ``ids``); ``view_hashes`` (N, V) with ``views_valid`` (N,): the view hashes of
    :mod:`.pixel_stats`. Any source of links may be absent, not all. ``phash_bits=None`` turns the
    perceptual-hash links off, ``ratio=None`` the ratio test.
    """
    n = len(ids)
    if not 0.0 < cosine <= 1.0:
        raise InputError(f"cosine (near-duplicate similarity) must be in (0, 1]; got {cosine!r}")
    if neighbours is None and (phashes is None or phash_bits is None) and view_hashes is None:
        raise InputError("find_near_duplicates needs feature neighbours, perceptual hashes or view hashes; got neither")
    for name, values in (("neighbours", None if neighbours is None else neighbours.index), ("phashes", phashes),
                         ("labels", labels), ("splits", splits), ("widths", widths), ("heights", heights),
                         ("sharpness", sharpness), ("normalised", normalised), ("view_hashes", view_hashes)):
        if values is not None and len(values) != n:
            raise InputError(f"{name} has {len(values)} rows but there are {n} image ids; pass one per image")
    pair_sets = []
    if neighbours is not None:
        pair_sets.append(neighbours.pairs(cosine, ratio))
    codes = valid = None
    if phashes is not None and phash_bits is not None:
        codes, valid = phash_codes(phashes)
        pair_sets.append(phash_pairs(codes, valid, phash_bits))
    if view_hashes is not None:
        valid_views = np.ones(n, dtype=bool) if views_valid is None else np.asarray(views_valid, dtype=bool)
        pair_sets.append(view_pairs(view_hashes, valid_views, view_bits))
    pairs = np.unique(np.concatenate(pair_sets), axis=0) if any(len(p) for p in pair_sets) else np.zeros((0, 2), np.int64)
    if not len(pairs):
        return []
    groups = connected_groups(n, pairs)
    links: dict[int, list[tuple[int, int]]] = {}
    for a, b in pairs.tolist():
        links.setdefault(int(groups[a]), []).append((a, b))

    area = np.array([(w or 0) * (h or 0) for w, h in zip(widths or [0] * n, heights or [0] * n)], dtype=np.float64)
    sharp = np.array([np.nan if s is None else float(s) for s in (sharpness if sharpness is not None else [None] * n)])
    sharp = np.where(np.isnan(sharp), -np.inf, sharp)
    findings: list[Finding] = []
    for group, group_links in sorted(links.items()):
        members = sorted({m for pair in group_links for m in pair}, key=lambda r: ids[r])
        keeper = min(members, key=lambda r: (-area[r], -sharp[r], 0 if labels is not None and labels[r] else 1, ids[r]))
        group_labels = sorted({labels[r] for r in members if labels[r]}) if labels is not None else []
        group_splits = sorted({splits[r] for r in members if splits[r]}) if splits is not None else []
        straddles = len(group_splits) > 1
        conflicting = len(group_labels) > 1
        group_id = "g" + ids[members[0]][:12]
        for row in members:
            similarity = _closest(row, members, normalised, codes, valid, view_hashes, views_valid)
            is_keeper = row == keeper
            reasons = []
            if not is_keeper:
                reasons.append(f"a near-copy of {ids[keeper][:12]} (the suggested keeper)")
            if straddles:
                reasons.append(f"the group straddles splits {', '.join(group_splits)}")
            if conflicting:
                reasons.append(f"the group carries conflicting labels {', '.join(group_labels)}")
            details = {
                "group": group_id, "group_size": len(members), "keeper": ids[keeper], "is_keeper": is_keeper,
                "members": [ids[m] for m in members[:MAX_MEMBERS_LISTED]],
                "closest_cosine": similarity["cosine"], "closest_phash_bits": similarity["phash_bits"],
                "closest_view_bits": similarity["view_bits"],
                "straddles_splits": straddles, "splits": group_splits,
                "conflicting_labels": conflicting, "labels": group_labels,
                "reason": "; ".join(reasons) or "the suggested keeper of its group",
            }
            issue = (not is_keeper) or straddles or conflicting
            # a keeper with nothing wrong scores >= 0.5, as every image that is not an issue does
            score = similarity["score"] if issue else max(similarity["score"], 0.5)
            findings.append(Finding(ids[row], "near_duplicate", score, issue, details))
    return findings


def _closest(row: int, members: list[int], normalised, codes, valid, views=None, views_valid=None) -> dict:
    """Similarity of ``row`` to its most similar group member, and the score (1 - that similarity): the
    best of feature cosine, 1 - pHash bits / 64, and 1 - view-hash bits / 64 (either direction)."""
    others = [m for m in members if m != row]
    best_cos = best_bits = None
    strength = 0.0
    if normalised is not None:
        cos = normalised[others] @ normalised[row]
        best_cos = float(np.clip(cos.max(), -1.0, 1.0))
        strength = max(strength, best_cos)
    if codes is not None and valid[row]:
        mates = [m for m in others if valid[m]]
        if mates:
            best_bits = int(hamming(np.full(len(mates), codes[row]), codes[mates]).min())
            strength = max(strength, 1.0 - best_bits / 64.0)
    best_view = None
    if views is not None and (views_valid is None or views_valid[row]):
        mates = [m for m in others if views_valid is None or views_valid[m]]
        if mates:
            views = np.asarray(views, dtype=np.uint64)
            mine = hamming(np.full(len(mates) * views.shape[1], views[row, 0]), views[mates].reshape(-1))
            theirs = hamming(np.repeat(views[mates, 0], views.shape[1]), np.tile(views[row], len(mates)))
            best_view = int(min(mine.min(), theirs.min()))
            strength = max(strength, 1.0 - best_view / 64.0)
    return {"cosine": None if best_cos is None else round(best_cos, 4), "phash_bits": best_bits,
            "view_bits": best_view, "score": float(np.clip(1.0 - strength, 0.0, 1.0))}

"""Duplicates: exact (the same bytes under several paths) and near (a resized, re-encoded, cropped, flipped
or re-lit copy).

Which pairs are copies is :mod:`.copy_links`' job: candidates from perceptual hashes, low-frequency
coefficients, crop views and features, each accepted only when the pixels agree, calibrated against how
crowded the collection is. This module turns those links into groups and findings:

- **No chaining.** Images are taken in the order of the keeper preference below; the best image not yet in a
  group founds one with every image directly linked to it that is not in a group yet. So every member is a
  copy of its keeper itself — never a copy of a copy of a copy — and the work is linear in the links.
- **The suggested keeper is the best copy**: the largest resolution, then the best encoding (a lossless file
  over any JPEG; between JPEGs the quality their quantisation tables were made for), then a labelled file,
  then the one seen first, then more bytes per pixel. Sharpness is *not* a criterion: the Laplacian rewards
  JPEG blocking and contrast, so it would keep a q30 re-encode over its q90 original.

Redundant copies are issues; every member is an issue when the group straddles train/test splits or carries
conflicting labels, because then the copies leak between splits or contradict each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from . import copy_links
from .copy_links import PHASH_BITS, hamming, phash_codes, phash_pairs  # noqa: F401 - the finder's public names
from .findings import Finding
from .neighbors import Neighbours

NEAR_DUPLICATE_COSINE = 0.95  # feature cosine a copy must reach (benchmarks/discover.py)
NEAR_DUPLICATE_RATIO = 0.3  # ... and its distance at most this share of the distance to the 10th neighbour
MAX_MEMBERS_LISTED = 20  # member ids written into each finding's details

KINDS = {  # kind -> (what it means, what to do); the finder table (finders.py) collects these
    "exact_duplicate": ("the same bytes are stored under more than one path",
                        "keep one path and delete the others; if their labels differ, decide which label is right"),
    "near_duplicate": ("a near-copy of another image (resized, re-encoded, cropped, flipped or re-lit)",
                       "keep the suggested keeper of the group and drop the rest; never let a group straddle train "
                       "and test"),
}


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
                         encoding_quality: Sequence[float | None] | None = None,
                         file_sizes: Sequence[int | None] | None = None, seen: Sequence | None = None,
                         view_hashes: np.ndarray | None = None, views_valid: np.ndarray | None = None,
                         coefficients: np.ndarray | None = None, view_coefficients=None,
                         cosine: float = NEAR_DUPLICATE_COSINE, ratio: float | None = NEAR_DUPLICATE_RATIO,
                         phash_bits: int | None = PHASH_BITS) -> list[Finding]:
    """Near-duplicate groups as findings, one per member of every group of two or more.

    Candidates: ``neighbours``/``normalised`` (the shared k-NN graph and the L2-normalised features it was
    built from, row order of ``ids``), ``phashes`` (``phash_bits=None`` turns them off) and ``view_hashes``
    (N, V). The second signal: ``coefficients`` (N, 63) of :mod:`.views` with ``views_valid`` (N,), and
    ``view_coefficients(rows, views)`` for crop views; without coefficients every candidate is a link.
    Keeper preference: ``widths``/``heights``, ``encoding_quality`` (:func:`.encoding.encoding_quality`),
    ``labels``, ``seen`` (any sortable key, smaller = seen earlier) and ``file_sizes`` (bytes).
    """
    n = len(ids)
    if not 0.0 < cosine <= 1.0:
        raise InputError(f"cosine (near-duplicate similarity) must be in (0, 1]; got {cosine!r}")
    if neighbours is None and (phashes is None or phash_bits is None) and view_hashes is None and coefficients is None:
        raise InputError("find_near_duplicates needs feature neighbours, perceptual hashes, view hashes or "
                         "coefficients; got neither")
    for name, values in (("neighbours", None if neighbours is None else neighbours.index), ("phashes", phashes),
                         ("labels", labels), ("splits", splits), ("widths", widths), ("heights", heights),
                         ("encoding_quality", encoding_quality), ("file_sizes", file_sizes), ("seen", seen),
                         ("normalised", normalised), ("view_hashes", view_hashes), ("coefficients", coefficients)):
        if values is not None and len(values) != n:
            raise InputError(f"{name} has {len(values)} rows but there are {n} image ids; pass one per image")
    codes = phash_codes(phashes) if phashes is not None else None
    feature_pairs = neighbours.pairs(cosine, ratio) if neighbours is not None else None
    valid = None if views_valid is None else np.asarray(views_valid, dtype=bool)
    if coefficients is None and view_hashes is not None:  # hashes only: link the mirror views, unverified
        mirror = _mirror_pairs(np.asarray(view_hashes, dtype=np.uint64), valid, copy_links.VIEW_BITS)
        feature_pairs = mirror if feature_pairs is None else np.concatenate([feature_pairs, mirror])
    links = copy_links.copy_links(
        n, coefficients=coefficients, coefficients_valid=valid, views=view_hashes,
        view_coefficients=view_coefficients, phash_codes_valid=codes, phash_bits=phash_bits,
        feature_pairs=feature_pairs)
    if not len(links):
        return []
    preference = _keeper_order(n, ids, widths, heights, encoding_quality, labels, seen, file_sizes)
    groups = star_groups(n, links.a, links.b, preference, strength=-links.residual)
    quality = _as_float(encoding_quality, n)
    findings: list[Finding] = []
    by_pair = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(links.a.tolist(), links.b.tolist()))}
    for keeper, members in groups:
        members = sorted(members, key=lambda r: ids[r])
        group_labels = sorted({labels[r] for r in members if labels[r]}) if labels is not None else []
        group_splits = sorted({splits[r] for r in members if splits[r]}) if splits is not None else []
        straddles = len(group_splits) > 1
        conflicting = len(group_labels) > 1
        group_id = "g" + ids[members[0]][:12]
        copies = [m for m in members if m != keeper]
        why = _keeper_reason(keeper, copies, widths, heights, quality, labels)
        for row in members:
            is_keeper = row == keeper
            mates = copies if is_keeper else [keeper]
            match = [_describe(by_pair[(min(row, m), max(row, m))], links, normalised, row, m) for m in mates]
            best = max(match, key=lambda d: d["agreement"])
            reasons = []
            if not is_keeper:
                reasons.append(f"a {best['match']} copy of {ids[keeper][:12]} (the suggested keeper: {why})")
            if straddles:
                reasons.append(f"the group straddles splits {', '.join(group_splits)}")
            if conflicting:
                reasons.append(f"the group carries conflicting labels {', '.join(group_labels)}")
            details = {
                "group": group_id, "group_size": len(members), "keeper": ids[keeper], "is_keeper": is_keeper,
                "keeper_because": why, "members": [ids[m] for m in members[:MAX_MEMBERS_LISTED]],
                "match": best["match"], "agreement": best["pixel_correlation"],
                "closest_cosine": best["cosine"], "closest_phash_bits": best["phash_bits"],
                "straddles_splits": straddles, "splits": group_splits,
                "conflicting_labels": conflicting, "labels": group_labels,
                "reason": "; ".join(reasons) or "the suggested keeper of its group",
            }
            issue = (not is_keeper) or straddles or conflicting
            score = float(np.clip(1.0 - best["agreement"], 0.0, 1.0))
            # a keeper with nothing wrong scores >= 0.5, as every image that is not an issue does
            findings.append(Finding(ids[row], "near_duplicate", score if issue else max(score, 0.5), issue, details))
    return findings


def star_groups(n: int, a: np.ndarray, b: np.ndarray, preference: np.ndarray,
                strength: np.ndarray | None = None) -> list[tuple[int, list[int]]]:
    """(keeper, members) of every group of two or more. Images are taken in ``preference`` order (row numbers,
    best first): one linked to a keeper already chosen joins the keeper it agrees with most (``strength`` per
    link, higher = more alike), any other becomes a keeper itself. So every member is linked to its keeper
    directly and ranks below it, a copy that also looks like another original joins its own, and the work is
    linear in the links. Keepers nobody joined are dropped."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if len(a) and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n):
        raise InputError(f"link row numbers must be in 0..{n - 1}")
    strength = np.zeros(len(a)) if strength is None else np.nan_to_num(np.asarray(strength, np.float64), nan=0.0)
    partners: dict[int, dict[int, float]] = {}
    for x, y, s in zip(a.tolist(), b.tolist(), strength.tolist()):
        partners.setdefault(x, {})[y] = s
        partners.setdefault(y, {})[x] = s
    preference = np.asarray(preference, dtype=np.int64)
    rank = np.empty(n, np.int64)
    rank[preference] = np.arange(len(preference))
    members: dict[int, list[int]] = {}  # keeper -> its members, the keeper first
    for row in preference.tolist():
        if row not in partners:
            continue
        keepers = [(s, -rank[k], k) for k, s in partners[row].items() if k in members]
        if keepers:
            members[max(keepers)[2]].append(row)
        else:
            members[row] = [row]
    return [(k, sorted(m)) for k, m in members.items() if len(m) >= 2]


def _as_float(values, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _keeper_order(n, ids, widths, heights, quality, labels, seen, sizes) -> np.ndarray:
    """Row numbers, the best keeper first (see the module docstring)."""
    area = np.array([(w or 0) * (h or 0) for w, h in zip(widths or [0] * n, heights or [0] * n)], dtype=np.float64)
    encoding = _as_float(quality, n)
    encoding = np.where(np.isnan(encoding), -1.0, encoding)
    labelled = np.array([0 if labels is not None and labels[r] else 1 for r in range(n)])
    seen_rank = np.zeros(n, np.int64) if seen is None else np.argsort(np.argsort(
        np.array([str(s) if s is not None else "\uffff" for s in seen], dtype=object), kind="stable"), kind="stable")
    size = _as_float(sizes, n)
    density = np.where(area > 0, np.nan_to_num(size, nan=0.0) / np.maximum(area, 1.0), 0.0)
    id_rank = np.argsort(np.argsort(np.asarray(ids, dtype=object), kind="stable"), kind="stable")
    return np.lexsort((id_rank, -density, seen_rank, labelled, -encoding, -area))


def _keeper_reason(keeper, copies, widths, heights, quality, labels) -> str:
    """Why the keeper won over its copies, in words: the first criterion that told them apart."""
    def area(r):
        return (widths[r] or 0) * (heights[r] or 0) if widths is not None and heights is not None else 0
    if any(area(keeper) > area(c) for c in copies):
        return f"the largest resolution, {widths[keeper]}x{heights[keeper]}"
    if any(quality[keeper] > quality[c] or (np.isfinite(quality[keeper]) and not np.isfinite(quality[c]))
           for c in copies):
        return ("a lossless file" if quality[keeper] > 100 else
                f"the best encoding, JPEG quality {quality[keeper]:.0f} (copies: "
                f"{', '.join('?' if not np.isfinite(quality[c]) else f'{quality[c]:.0f}' for c in copies[:5])})")
    if labels is not None and labels[keeper] and any(not labels[c] for c in copies):
        return "the labelled copy"
    return "as large and as well encoded as its copies, and seen first"


def _describe(link: int, links, normalised, row: int, mate: int) -> dict:
    residual = float(links.residual[link])
    cos = None if normalised is None else float(np.clip(normalised[row] @ normalised[mate], -1.0, 1.0))
    bits = int(links.bits[link])
    if np.isfinite(residual):
        agreement = 1.0 - residual
    else:  # unverified (no coefficients): the strongest signal there is
        agreement = max(cos if cos is not None else 0.0, 1.0 - bits / 64.0 if bits >= 0 else 0.0)
    return {"match": str(links.match[link]), "agreement": agreement,
            "pixel_correlation": None if not np.isfinite(residual) else round(1.0 - residual, 5),
            "cosine": None if cos is None else round(cos, 4), "phash_bits": bits if bits >= 0 else None}


def _mirror_pairs(views: np.ndarray, valid: np.ndarray | None, max_bits: int) -> np.ndarray:
    """Pairs whose own hash is within ``max_bits`` of the other's mirror-view hash (exact, multi-index)."""
    n = len(views)
    ok = np.ones(n, bool) if valid is None else valid
    codes = np.concatenate([views[:, 0], views[:, 1]])
    pairs = phash_pairs(codes, np.concatenate([ok, ok]), max_bits)
    a, b = pairs[:, 0] % n, pairs[:, 1] % n
    keep = (a != b) & ((pairs[:, 0] < n) != (pairs[:, 1] < n))
    return np.unique(np.sort(np.stack([a[keep], b[keep]], axis=1), axis=1), axis=0) if keep.any() \
        else np.zeros((0, 2), np.int64)

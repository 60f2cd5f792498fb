"""Which pairs of images are copies of each other: candidates from cheap signals, then a second signal that
must agree.

Candidates (each bounded per image, so the work stays linear in the collection):
- **pHash**: 64-bit perceptual hashes within ``phash_bits``, found exactly by multi-index hashing; when the
  collection's hash space is so crowded that this would compare too many pairs, the radius shrinks until it
  does not (:func:`phash_pairs`);
- **coefficients**: each image's nearest images by the correlation of their low-frequency coefficients
  (:mod:`.views`), its mirror image included — resized, re-encoded, re-lit and mirrored copies;
- **crops**: each image's own hash against the crop-window view hashes of the others, its
  :data:`CROP_PARTNERS` nearest owners within :data:`VIEW_BITS`;
- **features**: feature neighbours at cosine >= ``cosine`` that pass the ratio test (``Neighbours.pairs``).

A candidate becomes a link only when the pixels agree (*two signals*): the residual ``1 - correlation`` of
the matched views' coefficients is at most :data:`IDENTICAL_RESIDUAL`, or at most the absolute bound of its
kind (:data:`WHOLE_RESIDUAL`, :data:`CROP_RESIDUAL`) *and* at most :data:`RESIDUAL_RATIO` of the residual to
the images' own 10th nearest partner. The ratio is the calibration against the collection: where every
image has look-alikes (28-pixel silhouettes, homogeneous textures), an ordinary neighbour sits close too, so
only a pair far closer than the crowd counts as a copy.

Measured on Fashion-MNIST with 1,000 planted copies (``benchmarks/discover.py --fashion-copies``): copies
correlate >= 0.996 (whole views; 99 % of them) and 0.9965 (80 % crops, median); unrelated pairs within 8 pHash
bits correlate 0.95 (median); a whole copy's residual is below 0.15 of its 10th partner's in 95 % of pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..errors import InputError
from .views import correlation, mirrored

PHASH_BITS = 8  # largest Hamming distance (of 64 bits) between the pHashes of a candidate pair
VIEW_BITS = 8  # the same, between an image's own hash and a crop view of another
CROP_PARTNERS = 16  # nearest crop-view owners kept per image
COEFFICIENT_PARTNERS = 10  # nearest images by coefficient correlation kept per image (the 10th: the reference)
IDENTICAL_RESIDUAL = 0.001  # at or below: the same pixels up to noise, a copy however crowded the collection
WHOLE_RESIDUAL = 0.005  # largest residual of a whole-image or mirrored copy
CROP_RESIDUAL = 0.2  # largest residual of a cropped copy: only a sanity cap, the crowd decides (textures agree less)
RESIDUAL_RATIO = 0.25  # a copy's residual is at most this share of the residual to the images' 10th partner
CROP_WHOLE_RATIO = 0.5  # ... and at most this share of the images' whole-view reference (crops agree less)
CROWD = 4  # crop candidates of one image from which on they are a crowd the true one must stand out from
MAX_HASH_CANDIDATES = 5_000_000  # pHash candidate pairs compared at most (the radius shrinks to stay below)
EXACT_VIEW_LIMIT = 20_000  # images; above this the crop views are searched with an inverted-file index

WHOLE, MIRROR, CROP = "whole", "mirror", "crop"


class Links(NamedTuple):
    """Accepted copy pairs: ``a``/``b`` row numbers, ``residual`` (1 - correlation of the matched views; NaN
    when no coefficients were given), ``match`` (WHOLE, MIRROR or CROP) and ``bits`` (hash distance or -1)."""

    a: np.ndarray
    b: np.ndarray
    residual: np.ndarray
    match: np.ndarray
    bits: np.ndarray

    def __len__(self) -> int:
        return len(self.a)


def _empty_pairs() -> np.ndarray:
    return np.zeros((0, 2), np.int64)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.uint64))
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1).astype(np.int64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance between uint64 arrays (element-wise)."""
    return popcount(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))


def phash_codes(hashes) -> tuple[np.ndarray, np.ndarray]:
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


def _chunk_keys(values: np.ndarray, bits: int) -> list[np.ndarray]:
    bounds = np.linspace(0, 64, bits + 2).astype(int)
    return [(values >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _candidate_count(keys_per_chunk: list[np.ndarray]) -> int:
    total = 0
    for keys in keys_per_chunk:
        _, counts = np.unique(keys, return_counts=True)
        total += int((counts * (counts - 1) // 2).sum())
    return total


def hash_radius(codes: np.ndarray, valid: np.ndarray, max_bits: int = PHASH_BITS,
                max_candidates: int = MAX_HASH_CANDIDATES) -> int:
    """The largest radius <= ``max_bits`` at which multi-index hashing compares at most ``max_candidates``
    pairs: a crowded hash space (silhouettes, tiny thumbnails) gets a smaller radius instead of a quadratic
    run. 0 (identical hashes only) at worst."""
    values = codes[np.asarray(valid, dtype=bool)]
    for bits in range(int(max_bits), 0, -1):
        if _candidate_count(_chunk_keys(values, bits)) <= max_candidates:
            return bits
    return 0


def phash_pairs(codes: np.ndarray, valid: np.ndarray, max_bits: int = PHASH_BITS,
                max_candidates: int = MAX_HASH_CANDIDATES) -> np.ndarray:
    """Every pair (i, j), i < j, of valid codes at Hamming distance <= the radius :func:`hash_radius` allows
    (``max_bits`` unless the hash space is crowded). Exact by the pigeonhole principle: split 64 bits into
    radius + 1 chunks; a pair that close agrees on at least one chunk whole. Returns (P, 2) int64."""
    if not 0 <= max_bits < 64:
        raise InputError(f"phash_bits must be in 0..63; got {max_bits!r}")
    rows = np.flatnonzero(valid)
    if len(rows) < 2:
        return _empty_pairs()
    values = codes[rows]
    radius = hash_radius(codes, valid, max_bits, max_candidates)
    keys_per_chunk = _chunk_keys(values, radius) if radius else [values]
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
        return _empty_pairs()
    cand = np.unique(np.sort(np.concatenate(found), axis=1), axis=0)
    close = hamming(values[cand[:, 0]], values[cand[:, 1]]) <= radius
    return rows[cand[close]].astype(np.int64)


# -- coefficient neighbours ---------------------------------------------------------------------------
def _unit(coefficients: np.ndarray) -> np.ndarray:
    c = np.asarray(coefficients, dtype=np.float32)
    c = c - c.mean(axis=1, keepdims=True)
    return np.ascontiguousarray(c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12), dtype=np.float32)


def _faiss():
    from .neighbors import _faiss as load

    return load()


def _inner_product_index(database: np.ndarray, seed: int = 0):
    faiss = _faiss()
    n, dim = database.shape
    if n <= EXACT_VIEW_LIMIT:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(database[np.random.default_rng(seed).choice(n, size=min(n, 40 * nlist), replace=False)])
        index.nprobe = 16
    index.add(database)
    return index


def coefficient_partners(coefficients: np.ndarray, valid: np.ndarray, k: int = COEFFICIENT_PARTNERS
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's ``k`` nearest other images by coefficient correlation, itself or mirrored.

    Returns (partners (N, k) int64, -1 where none; residual (N, k) float64, 1 - correlation, ascending;
    mirrored (N, k) bool: the match is with the mirror image). Rows without valid coefficients get none."""
    n = len(coefficients)
    partners = np.full((n, k), -1, np.int64)
    residual = np.full((n, k), np.inf)
    flipped = np.zeros((n, k), bool)
    rows = np.flatnonzero(valid)
    if len(rows) < 2:
        return partners, residual, flipped
    own = _unit(coefficients[rows])
    index = _inner_product_index(own)
    width = min(k + 1, len(rows))
    lists = []
    for queries, is_mirror in ((own, False), (_unit(mirrored(np.asarray(coefficients[rows]))), True)):
        sim, found = index.search(queries, width)
        lists.append((sim, found, np.full(found.shape, is_mirror)))
    sim = np.concatenate([s for s, _, _ in lists], axis=1).astype(np.float64)
    found = np.concatenate([f for _, f, _ in lists], axis=1)
    is_mirror = np.concatenate([m for _, _, m in lists], axis=1)
    self_hit = (found == np.arange(len(rows))[:, None]) | (found < 0)
    sim[self_hit] = -np.inf
    order = np.argsort(-sim, axis=1, kind="stable")
    sim, found, is_mirror = (np.take_along_axis(x, order, axis=1) for x in (sim, found, is_mirror))
    for local, row in enumerate(rows):
        seen: set[int] = set()
        slot = 0
        for s, f, m in zip(sim[local], found[local], is_mirror[local]):
            if not np.isfinite(s) or f in seen:
                continue
            seen.add(int(f))
            partners[row, slot], residual[row, slot], flipped[row, slot] = rows[f], 1.0 - s, m
            slot += 1
            if slot == k:
                break
    return partners, residual, flipped


# -- crop views -----------------------------------------------------------------------------------------
def crop_candidates(views: np.ndarray, valid: np.ndarray, max_bits: int = VIEW_BITS,
                    per_image: int = CROP_PARTNERS, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(query, owner, view, bits): for every image, its ``per_image`` nearest other images whose crop-view
    hashes come within ``max_bits`` of its own hash, with the best view of each. ``views``: (N, V) view hashes
    (column 0 the image itself, 1 its mirror, 2.. the crop windows). Exact below :data:`EXACT_VIEW_LIMIT`
    images, an inverted-file binary index above."""
    views = np.asarray(views, dtype=np.uint64)
    rows = np.flatnonzero(valid)
    empty = (np.zeros(0, np.int64),) * 3 + (np.zeros(0, np.int64),)
    if len(rows) < 2 or views.ndim != 2 or views.shape[1] <= 2:
        return empty
    faiss = _faiss()
    crops = views.shape[1] - 2
    database = np.ascontiguousarray(views[rows, 2:].reshape(-1)).view(np.uint8).reshape(-1, 8)
    queries = np.ascontiguousarray(views[rows, 0]).view(np.uint8).reshape(-1, 8)
    if len(rows) <= EXACT_VIEW_LIMIT:
        index = faiss.IndexBinaryFlat(64)
    else:
        nlist = int(min(4096, max(64, np.sqrt(len(database)))))
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(64), 64, nlist)
        sample = np.random.default_rng(seed).choice(len(database), size=min(len(database), 40 * nlist), replace=False)
        index.train(database[sample])
        index.nprobe = 32
    index.add(database)
    # one owner's 98 views often fill many of the nearest codes: ask for enough to see per_image owners
    distance, found = index.search(queries, min(len(database), 32 * per_image))
    out_q, out_o, out_v, out_b = [], [], [], []
    for local, (dist_row, found_row) in enumerate(zip(distance, found)):
        owners: set[int] = set()
        for dist, code in zip(dist_row.tolist(), found_row.tolist()):
            if code < 0 or dist > max_bits:
                break
            owner, view = divmod(code, crops)
            if owner == local or owner in owners:
                continue
            owners.add(owner)
            out_q.append(rows[local])
            out_o.append(rows[owner])
            out_v.append(view + 2)
            out_b.append(dist)
            if len(owners) == per_image:
                break
    return tuple(np.asarray(x, dtype=np.int64) for x in (out_q, out_o, out_v, out_b))


# -- putting it together ---------------------------------------------------------------------------------
def copy_links(n: int, *, coefficients: np.ndarray | None = None, coefficients_valid: np.ndarray | None = None,
               views: np.ndarray | None = None, view_coefficients: Callable | None = None,
               phash_codes_valid: tuple[np.ndarray, np.ndarray] | None = None, phash_bits: int | None = PHASH_BITS,
               feature_pairs: np.ndarray | None = None) -> Links:
    """The accepted copy links among ``n`` images.

    ``coefficients`` (N, 63) with ``coefficients_valid`` (N,): the second signal, and the coefficient
    neighbours; ``views`` (N, V): view hashes for crop candidates, verified through ``view_coefficients(rows,
    views) -> (P, 63)`` (crop coefficients are decoded on demand, not cached); ``phash_codes_valid``: the
    pHash codes; ``feature_pairs`` (P, 2): feature-neighbour candidates. Without coefficients nothing can be
    verified and every candidate is a link (pHash and features alone: the less precise old behaviour).
    """
    a_parts, b_parts, res_parts, match_parts, bits_parts = [], [], [], [], []

    def add(a, b, residual, match, bits):
        a_parts.append(np.asarray(a, np.int64))
        b_parts.append(np.asarray(b, np.int64))
        res_parts.append(np.asarray(residual, np.float64))
        match_parts.append(np.asarray(match, dtype=object))
        bits_parts.append(np.asarray(bits, np.int64))

    verified = coefficients is not None
    if verified:
        coefficients = np.asarray(coefficients, dtype=np.float32)
        if coefficients.ndim != 2 or len(coefficients) != n:
            raise InputError(f"coefficients must be one row per image, ({n}, 63); got shape {coefficients.shape}")
        ok = np.ones(n, bool) if coefficients_valid is None else np.asarray(coefficients_valid, dtype=bool)
        partners, partner_residual, _ = coefficient_partners(coefficients, ok)
        reference = np.where(np.isfinite(partner_residual[:, -1]), partner_residual[:, -1], np.inf)
    pair_sets = []
    if phash_codes_valid is not None and phash_bits is not None:
        pair_sets.append(phash_pairs(*phash_codes_valid, phash_bits))
    if feature_pairs is not None and len(feature_pairs):
        pair_sets.append(np.asarray(feature_pairs, np.int64).reshape(-1, 2))
    if verified:
        rows, slots = np.nonzero(partners >= 0)
        pair_sets.append(np.stack([rows, partners[rows, slots]], axis=1))
    whole = np.unique(np.sort(np.concatenate(pair_sets), axis=1), axis=0) if any(len(p) for p in pair_sets) \
        else _empty_pairs()
    bits = np.full(len(whole), -1, np.int64)
    if phash_codes_valid is not None and len(whole):
        codes, code_ok = phash_codes_valid
        both = code_ok[whole[:, 0]] & code_ok[whole[:, 1]]
        bits[both] = hamming(codes[whole[both, 0]], codes[whole[both, 1]])
    if not verified:
        add(whole[:, 0], whole[:, 1], np.full(len(whole), np.nan), np.full(len(whole), WHOLE, dtype=object), bits)
        return _links(a_parts, b_parts, res_parts, match_parts, bits_parts)
    if len(whole):
        a, b = whole[:, 0], whole[:, 1]
        straight = 1.0 - correlation(coefficients[a], coefficients[b])
        flipped = 1.0 - correlation(mirrored(coefficients[a]), coefficients[b])
        residual = np.minimum(straight, flipped)
        match = np.where(flipped < straight, MIRROR, WHOLE).astype(object)
        keep = ok[a] & ok[b] & _agree(residual, np.minimum(reference[a], reference[b]), WHOLE_RESIDUAL)
        add(a[keep], b[keep], residual[keep], match[keep], bits[keep])
    if views is not None and view_coefficients is not None:
        query, owner, view, view_bits = crop_candidates(views, ok)
        if len(query):
            # a pair already linked as a whole copy needs no crop check
            linked = {(int(x), int(y)) for x, y in zip(np.concatenate(a_parts), np.concatenate(b_parts))}
            fresh = np.array([(min(q, o), max(q, o)) not in linked for q, o in zip(query.tolist(), owner.tolist())],
                             dtype=bool)
            query, owner, view, view_bits = query[fresh], owner[fresh], view[fresh], view_bits[fresh]
            crop = np.asarray(view_coefficients(owner, view), dtype=np.float32).reshape(len(owner), -1)
            readable = np.isfinite(crop).all(axis=1) if len(crop) else np.zeros(0, bool)
            residual = np.full(len(query), np.inf)
            residual[readable] = 1.0 - correlation(crop[readable], coefficients[query[readable]])
            keep = _agree(residual, crop_reference(query, residual), CROP_RESIDUAL) & (
                (residual <= IDENTICAL_RESIDUAL)
                | (residual <= CROP_WHOLE_RATIO * np.minimum(reference[query], reference[owner])))
            add(np.minimum(query, owner)[keep], np.maximum(query, owner)[keep], residual[keep],
                np.full(int(keep.sum()), CROP, dtype=object), view_bits[keep])
    return _links(a_parts, b_parts, res_parts, match_parts, bits_parts)


def crop_reference(query: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Per crop candidate, the crowd it must stand out from: the median residual of all crop candidates of its
    query image when it has at least :data:`CROWD` of them, else infinity (an uncrowded image needs no ratio).
    Not the whole-image reference: a crop aligns to the nearest window only, so it agrees less than a whole
    copy does, and measured against whole-image neighbours 22 % of true crops failed on Fashion-MNIST."""
    reference = np.full(len(query), np.inf)
    order = np.argsort(query, kind="stable")
    starts = np.flatnonzero(np.r_[True, query[order][1:] != query[order][:-1]]) if len(query) else np.zeros(0, int)
    for start, stop in zip(starts, np.r_[starts[1:], len(order)]):
        members = order[start:stop]
        if len(members) >= CROWD:
            reference[members] = np.median(residual[members])
    return reference


def _agree(residual: np.ndarray, reference: np.ndarray, bound: float) -> np.ndarray:
    """The pixels agree: identical up to noise, or within ``bound`` and far closer than the crowd."""
    return (residual <= IDENTICAL_RESIDUAL) | ((residual <= bound) & (residual <= RESIDUAL_RATIO * reference))


def _links(a_parts, b_parts, res_parts, match_parts, bits_parts) -> Links:
    if not a_parts:
        return Links(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, dtype=object),
                     np.zeros(0, np.int64))
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    residual, match, bits = np.concatenate(res_parts), np.concatenate(match_parts), np.concatenate(bits_parts)
    # one link per pair: the best-agreeing match
    order = np.lexsort((np.nan_to_num(residual, nan=np.inf), b, a))
    a, b, residual, match, bits = a[order], b[order], residual[order], match[order], bits[order]
    first = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])] if len(a) else np.zeros(0, bool)
    return Links(a[first], b[first], residual[first], match[first], bits[first])

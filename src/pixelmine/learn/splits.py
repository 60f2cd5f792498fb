"""Train / val / test splits that keep duplicates together.

Exact duplicates are one image already (the id is the hash of the bytes). Near-duplicates (a resized,
re-encoded or slightly cropped copy) are found from the feature vectors: two images whose centred,
L2-normalised features have cosine similarity >= a threshold are linked, and the connected components of
those links are *groups*. A group goes to one split, so a test score is never inflated by a training copy
of a test image. Groups are assigned per class (stratified), greedily towards the target fractions, in an
order fixed by the seed and the image ids: the same data and seed give the same split.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from .config import SPLIT_NAMES

_ALIASES = {"train": "train", "training": "train", "trn": "train",
            "val": "val", "valid": "val", "validation": "val", "dev": "val",
            "test": "test", "testing": "test", "tst": "test"}


def _normalise_rows(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    x = x - x.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def near_duplicate_pairs(vectors: np.ndarray, threshold: float, *, block: int | None = None,
                         project_dim: int = 128, seed: int = 0) -> np.ndarray:
    """Pairs (i, j), i < j, whose centred features have cosine >= ``threshold``. Shape (P, 2), int64.

    Exact and complete: for wide features, candidates are found in a PCA subspace (an orthogonal projection,
    which can only shrink distances, so no true pair is missed), then verified on the full vectors.
    Cost is O(N^2 * k) with k = min(D, project_dim); fine to ~10^5 images on a laptop.
    """
    n = len(vectors)
    if n < 2:
        return np.zeros((0, 2), np.int64)
    x = _normalise_rows(vectors)
    # ||a - b||^2 = 2 - 2 cos(a, b) for unit vectors: cos >= t  <=>  distance^2 <= 2 (1 - t)
    radius2 = 2.0 * (1.0 - threshold) + 1e-5
    if x.shape[1] > project_dim:
        # Orthogonal projection onto the top principal directions: ||P(a - b)|| <= ||a - b||.
        sample = x[np.random.default_rng(seed).choice(n, size=min(n, 20_000), replace=False)]
        _, _, vt = np.linalg.svd(sample - sample.mean(0), full_matrices=False)
        z = x @ vt[:project_dim].T
    else:
        z = x
    sq = np.einsum("ij,ij->i", z, z)
    if block is None:  # keep each block's distance matrix near 80 MB
        block = int(max(64, min(4096, 20_000_000 // n)))
    found: list[np.ndarray] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        d2 = sq[start:stop, None] + sq[None, start:] - 2.0 * (z[start:stop] @ z[start:].T)
        rows, cols = np.nonzero(d2 <= radius2)
        cols = cols + start
        rows = rows + start
        keep = rows < cols
        rows, cols = rows[keep], cols[keep]
        if len(rows) and z is not x:  # verify on the full vectors
            cos = np.einsum("ij,ij->i", x[rows], x[cols])
            keep = cos >= threshold - 1e-6
            rows, cols = rows[keep], cols[keep]
        if len(rows):
            found.append(np.stack([rows, cols], axis=1).astype(np.int64))
    return np.concatenate(found) if found else np.zeros((0, 2), np.int64)


def groups_from_pairs(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components: a group number per item (0..G-1); items in no pair get their own group."""
    if len(pairs) == 0:
        return np.arange(n, dtype=np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def near_duplicate_groups(vectors: np.ndarray, threshold: float, *, max_group: int | None = None,
                          seed: int = 0) -> tuple[np.ndarray, int, list[str]]:
    """(group per row, number of similar pairs inside the groups, notes).

    Near-duplicates are rare and come in small groups: a component larger than ``max_group`` (default: 1 %
    of the images, at least 5) means the features cannot tell these images apart at ``threshold`` (a
    homogeneous data set, or a weak backbone), not that they are copies. Such a component is split again at
    a stricter threshold (half-way to 1), up to 6 times."""
    n = len(vectors)
    max_group = max_group or max(5, int(np.ceil(0.01 * n)))
    pairs = near_duplicate_pairs(vectors, threshold, seed=seed)
    groups = groups_from_pairs(n, pairs)
    notes: list[str] = []
    for _ in range(6):
        sizes = np.bincount(groups)
        big = np.flatnonzero(sizes > max_group)
        if len(big) == 0:
            break
        threshold = threshold + (1.0 - threshold) / 2
        next_group = int(groups.max()) + 1
        for group in big:
            rows = np.flatnonzero(groups == group)
            sub = groups_from_pairs(len(rows), near_duplicate_pairs(vectors[rows], threshold, seed=seed))
            groups[rows] = next_group + sub
            next_group += int(sub.max()) + 1
        notes.append(f"{len(big)} near-duplicate group(s) had more than {max_group} images; split again at cosine "
                     f">= {threshold:.4f}")
    _, groups = np.unique(groups, return_inverse=True)
    linked = int((groups[pairs[:, 0]] == groups[pairs[:, 1]]).sum()) if len(pairs) else 0
    return groups.astype(np.int64), linked, notes


def _group_order_key(seed: int, member_ids: Sequence[str]) -> str:
    return hashlib.sha256(f"{seed}:{min(member_ids)}".encode()).hexdigest()


def assign_splits(ids: Sequence[str], labels: Sequence[str], groups: Sequence[int] | None = None, *,
                  fractions: tuple[float, float, float] = (0.70, 0.15, 0.15), seed: int = 0) -> np.ndarray:
    """A split name ('train', 'val', 'test') per image; every group lands in one split.

    Stratified by class: a group counts towards its majority label. Within a class, groups are visited in a
    seeded pseudo-random order (largest first) and each goes to the split furthest below its target. The
    first three groups of every class go to train, test and val, so each class is learned and measured.
    """
    ids = list(ids)
    labels = list(labels)
    n = len(ids)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if len(labels) != n or len(groups) != n:
        raise InputError(f"ids, labels and groups must have the same length; got {n}, {len(labels)}, {len(groups)}")
    members: dict[int, list[int]] = {}
    for row, group in enumerate(groups.tolist()):
        members.setdefault(group, []).append(row)
    by_label: dict[str, list[list[int]]] = {}
    for rows in members.values():
        majority = Counter(labels[r] for r in rows).most_common()
        best = max(count for _, count in majority)
        label = min(lab for lab, count in majority if count == best)  # ties broken by name: deterministic
        by_label.setdefault(label, []).append(rows)
    target = np.asarray(fractions, dtype=float)
    result = np.empty(n, dtype=object)
    for label in sorted(by_label):
        class_groups = sorted(by_label[label], key=lambda rows: _group_order_key(seed, [ids[r] for r in rows]))
        class_groups.sort(key=len, reverse=True)  # stable: big groups first, then the seeded order
        counts = np.zeros(3)
        # The first groups of a class seed train, then test, then val (where wanted), so even a class of two
        # images is both learned and measured; the rest go where the class is furthest below its targets.
        seeds = [s for s in (0, 2, 1) if target[s] > 0]
        for index, rows in enumerate(class_groups):
            if index < len(seeds):
                choice = seeds[index]
            else:
                after = counts.sum() + len(rows)
                deficit = target * after - counts
                deficit[target == 0] = -np.inf
                choice = int(np.argmax(deficit))
            counts[choice] += len(rows)
            for r in rows:
                result[r] = SPLIT_NAMES[choice]
    return result.astype(str)


def normalise_split_values(values: Sequence[object], ids: Sequence[str], column: str) -> np.ndarray:
    """User split values ('train', 'validation', 'TEST', ...) -> 'train' / 'val' / 'test', or InputError."""
    out = []
    missing, bad = [], []
    for image_id, value in zip(ids, values):
        if value is None or (isinstance(value, str) and not value.strip()):
            missing.append(image_id)
            continue
        name = _ALIASES.get(str(value).strip().lower())
        if name is None:
            bad.append(value)
            continue
        out.append(name)
    if missing:
        raise InputError(f"{len(missing)} labelled images have no value in the split column {column!r} "
                         f"(e.g. image {missing[0][:12]}); give every labelled image train, val or test, or drop "
                         "--split-column to split at random")
    if bad:
        examples = ", ".join(repr(v) for v in sorted(set(map(str, bad)))[:5])
        raise InputError(f"the split column {column!r} holds values other than train/val/test: {examples}; "
                         f"allowed: {', '.join(sorted(_ALIASES))}")
    return np.asarray(out, dtype=str)


def straddling_groups(groups: np.ndarray, splits: np.ndarray) -> int:
    """How many groups have members in more than one split (0 for a leak-free split)."""
    seen: dict[int, str] = {}
    straddle = set()
    for group, split in zip(groups.tolist(), splits.tolist()):
        if seen.setdefault(group, split) != split:
            straddle.add(group)
    return len(straddle)

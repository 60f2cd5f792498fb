"""The labelled images of a workspace, checked for what a classifier needs, and their stored split.

The split lives in the catalog (``images.split``) with its configuration in the catalog's ``meta`` table
(key ``learn.split``). Training reuses the stored split while the labelled images and the split settings are
unchanged, so every model of a workspace is measured on the same test images; otherwise it splits again.
"""

from __future__ import annotations

import hashlib
import json
import os
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from ..runs import image_set
from ..errors import InputError
from .config import SPLIT_NAMES, SplitConfig
from .splits import assign_splits, near_duplicate_groups, normalise_split_values, straddling_groups

log = logging.getLogger(__name__)
META_KEY = "learn.split"


@dataclass
class LabelledSet:
    """Labelled, decodable images of a workspace (one row per unique content)."""

    ids: list[str]
    labels: np.ndarray  # str labels, row order of ids
    paths: list[str]
    metadata: list[dict]
    unlabelled: int = 0  # ok images without a label (or with conflicting labels)
    excluded: dict = field(default_factory=dict)  # class -> images left out by exclude_classes
    ignored: int = 0  # images a person marked 'ignore' in the label corrections

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels.tolist()))

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.labels.tolist()).items()))


@dataclass
class SplitResult:
    ids: list[str]
    labels: np.ndarray
    splits: np.ndarray  # 'train' / 'val' / 'test' per row
    groups: np.ndarray  # near-duplicate group per row
    source: str  # 'random', 'column:<name>' or 'stored'
    config: dict
    near_duplicate_pairs: int = 0
    grouped_images: int = 0  # images in a group of 2 or more
    largest_group: int = 1
    straddling_groups: int = 0  # groups split across train/val/test (only possible with a user's column)
    notes: list[str] = field(default_factory=list)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def table(self) -> dict[str, dict[str, int]]:
        """{class: {train: n, val: n, test: n}}."""
        out: dict[str, dict[str, int]] = {}
        for label, split in zip(self.labels.tolist(), self.splits.tolist()):
            row = out.setdefault(label, dict.fromkeys(SPLIT_NAMES, 0))
            row[split] = row.get(split, 0) + 1  # "left_out": images the clean loop kept out of training
        return dict(sorted(out.items()))

    def summary(self) -> dict:
        return {"source": self.source, "config": self.config,
                "counts": {s: int((self.splits == s).sum()) for s in SPLIT_NAMES
                           + (("left_out",) if (self.splits == "left_out").any() else ())},
                "by_class": self.table(),
                "near_duplicate_pairs": self.near_duplicate_pairs, "grouped_images": self.grouped_images,
                "largest_group": self.largest_group, "straddling_groups": self.straddling_groups,
                "notes": self.notes}


def labelled_images(catalog, *, exclude_classes=()) -> LabelledSet:
    """The workspace's ok images that carry a label, minus ``exclude_classes``; checked for training.
    Labels are :func:`pixelmine.corrections.effective_labels`: the newest correction of an image wins, and
    an image a person marked ``ignore`` is left out.

    InputError when there are no labels, a single class, or a class with a single image.
    """
    from ..corrections import effective_labels

    effective = effective_labels(catalog)  # people's corrections applied; images marked 'ignore' left out
    usable = catalog.images(status="ok")
    rows = [dict(r, label=effective[r["id"]]) for r in usable if r["id"] in effective]
    ignored = len(usable) - len(rows)
    exclude = set(exclude_classes or ())
    unknown_excluded = exclude - {r["label"] for r in rows}
    if unknown_excluded:
        known = sorted({r["label"] for r in rows if r["label"]})
        raise InputError(f"cannot exclude {', '.join(map(repr, sorted(unknown_excluded)))}: no such label in "
                         f"the workspace; labels are {', '.join(map(repr, known))}")
    kept = [r for r in rows if r["label"] is not None and r["label"] not in exclude]
    excluded = dict(Counter(r["label"] for r in rows if r["label"] in exclude))
    data = LabelledSet(ids=[r["id"] for r in kept], labels=np.asarray([r["label"] for r in kept], dtype=str),
                       paths=[r["path"] for r in kept], metadata=[r["metadata"] for r in kept],
                       unlabelled=sum(1 for r in rows if r["label"] is None), excluded=excluded,
                       ignored=ignored)
    check_trainable(data.labels, total_ok=len(rows), workspace=os.path.dirname(catalog.path))
    return data


def check_trainable(labels: np.ndarray, *, total_ok: int | None = None, workspace: str = "") -> None:
    """InputError unless there are >= 2 classes and every class has >= 2 images."""
    where = f" in workspace {workspace!r}" if workspace else ""
    if len(labels) == 0:
        have = f"{total_ok} usable images, none with a label" if total_ok is not None else "no labelled images"
        raise InputError(f"no labelled images{where} ({have}); a classifier learns from labels: ingest with "
                         "--labels-from-folders (class subfolders), or a manifest with a label column")
    counts = Counter(labels.tolist())
    if len(counts) < 2:
        (only, n), = counts.items()
        raise InputError(f"all {n} labelled images{where} have the same label {only!r}; a classifier needs at "
                         "least 2 classes: label images of another class too")
    single = sorted(label for label, n in counts.items() if n < 2)
    if single:
        shown = ", ".join(repr(s) for s in single[:10])
        flags = " ".join(f"--exclude-class {s}" for s in single[:3])
        raise InputError(f"class{'es' if len(single) > 1 else ''} {shown} ha{'ve' if len(single) > 1 else 's'} "
                         f"only 1 image; every class needs at least 2 (one to learn from, one to test on): add "
                         f"images of it, or leave it out with {flags} (exclude_classes=[...] in Python)")


def data_fingerprint(ids, labels, extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for image_id, label in sorted(zip(ids, np.asarray(labels).tolist())):
        digest.update(f"{image_id}\t{label}\n".encode())
    return digest.hexdigest()


def compute_splits(data: LabelledSet, config: SplitConfig, vectors: np.ndarray | None = None) -> SplitResult:
    """Split ``data``; ``vectors`` (rows aligned with ``data.ids``) find near-duplicates to keep together."""
    config.check()
    n = len(data.ids)
    groups, linked = np.arange(n, dtype=np.int64), 0
    notes: list[str] = []
    if config.near_duplicate_cosine is not None:
        if vectors is None:
            notes.append("no features given: only exact duplicates are kept together")
        else:
            groups, linked, group_notes = near_duplicate_groups(np.asarray(vectors), config.near_duplicate_cosine,
                                                                seed=config.seed)
            notes += group_notes
    sizes = np.bincount(groups)
    if config.column:
        values = [meta.get(config.column) for meta in data.metadata]
        splits = normalise_split_values(values, data.ids, config.column)
        source = f"column:{config.column}"
        untrained = sorted(set(data.labels.tolist()) - set(data.labels[splits == "train"].tolist()))
        if untrained:
            raise InputError(f"the split column {config.column!r} puts no image of class "
                             f"{', '.join(map(repr, untrained))} in train; a class must have training images to be "
                             "learned: move some to train, or leave the class out with --exclude-class")
    else:
        splits = assign_splits(data.ids, data.labels, groups, fractions=(config.train, config.val, config.test),
                               seed=config.seed)
        source = "random"
    result = SplitResult(ids=list(data.ids), labels=data.labels, splits=splits, groups=groups, source=source,
                         config=asdict(config), near_duplicate_pairs=linked,
                         grouped_images=int((sizes[groups] >= 2).sum()), largest_group=int(sizes.max(initial=1)),
                         straddling_groups=straddling_groups(groups, splits), notes=notes)
    if result.straddling_groups:
        result.notes.append(f"{result.straddling_groups} near-duplicate groups straddle the splits of column "
                            f"{config.column!r}: test scores may be optimistic")
    for label, row in result.table().items():
        empty = [s for s in ("val", "test") if getattr(config, s) > 0 and row[s] == 0]
        if empty:
            result.notes.append(f"class {label!r} has no images in {' and '.join(empty)} "
                                f"({sum(row.values())} images in all)")
    return result


def _split_stamp(data: LabelledSet, config: SplitConfig) -> dict:
    return {"config": asdict(config), "data": data_fingerprint(data.ids, data.labels)}


def stored_splits(catalog, data: LabelledSet, config: SplitConfig) -> np.ndarray | None:
    """The catalog's splits for ``data`` if they were made with ``config`` for exactly these images."""
    rows = catalog.query("SELECT value FROM meta WHERE key = ?", (META_KEY,))
    if not rows or json.loads(rows[0]["value"]).get("stamp") != _split_stamp(data, config):
        return None
    by_id = {}
    for start in range(0, len(data.ids), 500):
        chunk = data.ids[start:start + 500]
        for row in catalog.query(f"SELECT id, split FROM images WHERE id IN ({','.join('?' * len(chunk))})", chunk):
            by_id[row["id"]] = row["split"]
    splits = [by_id.get(i) for i in data.ids]
    if any(s not in SPLIT_NAMES for s in splits):
        return None
    return np.asarray(splits, dtype=str)


def write_splits(catalog, data: LabelledSet, result: SplitResult, config: SplitConfig) -> None:
    """Store the split in ``images.split`` (NULL for every other image) and its stamp in ``meta``."""
    stamp = json.dumps({"stamp": _split_stamp(data, config), "summary": result.summary(),
                        "groups": result.groups.tolist()}, sort_keys=True)
    with catalog.transaction() as conn:
        conn.execute("UPDATE images SET split = NULL WHERE split IS NOT NULL")
        conn.executemany("UPDATE images SET split = ? WHERE id = ?", zip(result.splits.tolist(), result.ids))
        conn.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                     (META_KEY, stamp))


def ensure_splits(catalog, data: LabelledSet, config: SplitConfig, vectors: np.ndarray | None = None, *,
                  resplit: bool = False) -> SplitResult:
    """Reuse the stored split when it matches (same images, labels and settings); else split and store."""
    if not resplit:
        splits = stored_splits(catalog, data, config)
        if splits is not None:
            rows = catalog.query("SELECT value FROM meta WHERE key = ?", (META_KEY,))
            summary = json.loads(rows[0]["value"])["summary"]
            stored_groups = json.loads(rows[0]["value"]).get("groups")
            groups = (np.asarray(stored_groups, dtype=np.int64) if stored_groups is not None
                      and len(stored_groups) == len(data.ids) else np.arange(len(data.ids), dtype=np.int64))
            return SplitResult(ids=list(data.ids), labels=data.labels, splits=splits, groups=groups,
                               source=f"{summary.get('source', 'random')} (stored)",
                               config=asdict(config), near_duplicate_pairs=summary.get("near_duplicate_pairs", 0),
                               grouped_images=summary.get("grouped_images", 0),
                               largest_group=summary.get("largest_group", 1),
                               straddling_groups=straddling_groups(groups, splits), notes=summary.get("notes", []))
    with catalog.run("split", asdict(config), inputs={"images": image_set(data.ids)}) as run:
        result = compute_splits(data, config, vectors)
        write_splits(catalog, data, result, config)
        run.counts.update({name: int((result.splits == name).sum()) for name in SPLIT_NAMES})
        run.metrics.update(source=result.source, near_duplicate_pairs=result.near_duplicate_pairs,
                           largest_group=result.largest_group)
    return result

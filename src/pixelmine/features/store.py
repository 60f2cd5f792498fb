"""The feature cache: float32 vectors keyed by (image id, backbone fingerprint), written atomically.

    features/<backbone>-<fingerprint[:12]>/
        shard-<n>.npz        ids (N,), vectors (N, D) float32, tag_indices (N, 5) int32, tag_probs (N, 5) float32
        matrix.npy, ids.npy  a consolidated copy for memory-mapped reads, rebuilt when shards change

Each shard is written to a temporary name and renamed, so a killed run leaves whole shards only, and a
re-run computes only the ids no shard holds yet.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import NotFittedError
from ..fileio import atomic_save_npy, atomic_save_npz, atomic_write_text
from ..fileio import storage_error

TOP_K_TAGS = 5

_log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """Feature vectors of one backbone, one row per image id."""

    ids: list[str]  # image ids (sha256 of bytes), in row order
    vectors: np.ndarray  # (N, D) float32; a read-only memory map for large N
    backbone: str  # registry name, e.g. "mobilenet_v2"
    fingerprint: str  # hash of weights identity + preprocessing; vectors of different fingerprints never mix
    tag_indices: np.ndarray | None = None  # (N, 5) int32 ImageNet class indices, best first
    tag_probs: np.ndarray | None = None  # (N, 5) float32 probabilities

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    def rows(self, ids) -> np.ndarray:
        """Row numbers of ``ids`` (KeyError naming the first unknown id)."""
        position = {image_id: row for row, image_id in enumerate(self.ids)}
        try:
            return np.fromiter((position[i] for i in ids), dtype=np.int64)
        except KeyError as exc:
            raise KeyError(f"image {exc.args[0]!r} has no {self.backbone} features; run pixelmine extract") from None

    def subset(self, ids) -> "FeatureSet":
        rows = self.rows(ids)
        return FeatureSet(list(ids), np.asarray(self.vectors[rows]), self.backbone, self.fingerprint,
                          None if self.tag_indices is None else self.tag_indices[rows],
                          None if self.tag_probs is None else self.tag_probs[rows])


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def folder_name(backbone: str, fingerprint: str) -> str:
    """``<backbone>-<fingerprint[:12]>``, file-system safe: the folder of one backbone's cache (features/,
    index/)."""
    return f"{_safe(backbone)}-{fingerprint[:12]}"


class FeatureStore:
    """Read and write the cached features of one backbone in a workspace directory."""

    def __init__(self, workspace_root: str | os.PathLike, backbone: str, fingerprint: str, *,
                 info: dict | None = None):
        self.backbone = backbone
        self.fingerprint = fingerprint
        self.info = dict(info or {})  # extra facts for backbone.json (precision, weights, preprocessing)
        self.workspace_root = Path(workspace_root)
        self.dir = self.workspace_root / "features" / folder_name(backbone, fingerprint)

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.npz")) if self.dir.is_dir() else []

    def has_features(self) -> bool:
        """True when at least one shard is stored."""
        return bool(self._shards())

    def known_ids(self) -> set[str]:
        """Ids some whole shard holds (a damaged shard is set aside, so its images are computed again)."""
        known: set[str] = set()
        for shard in self._shards():
            data = self._read_shard(shard)
            if data is not None:
                known.update(data["ids"].tolist())
        return known

    def _read_shard(self, shard: Path) -> dict | None:
        """The arrays of ``shard``, checked; None (and the file renamed ``*.damaged``) when it is damaged."""
        try:
            with np.load(shard, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            ids, vectors = arrays["ids"], arrays["vectors"]
            if vectors.ndim != 2 or len(ids) != len(vectors) or not np.isfinite(vectors).all():
                raise ValueError(f"ids {ids.shape} and vectors {vectors.shape} do not match, or are not finite")
            if "tag_indices" in arrays and len(arrays["tag_indices"]) != len(ids):
                raise ValueError("the tags do not match the ids")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            damaged = shard.with_name(shard.name + ".damaged")
            with contextlib.suppress(OSError):
                os.replace(shard, damaged)
            _log.warning("feature shard %s is damaged (%s: %s); set aside as %s — its images will be computed "
                         "again by the next: pixelmine extract --backbone %s", shard, type(exc).__name__, exc,
                         damaged.name, self.backbone)
            return None
        return arrays

    def write(self, ids, vectors: np.ndarray, tag_indices: np.ndarray | None = None,
              tag_probs: np.ndarray | None = None) -> Path:
        """Append one shard atomically. Rows whose id is already stored are kept once on read."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.asarray(list(ids), dtype="U64")
        if vectors.ndim != 2 or len(ids) != vectors.shape[0]:
            raise ValueError(f"vectors must be (N, D) with N = len(ids) = {len(ids)}; got shape {vectors.shape}")
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "backbone.json"
        if not meta.exists():
            atomic_write_text(meta, json.dumps({**self.info, "backbone": self.backbone,
                                                 "fingerprint": self.fingerprint}, sort_keys=True))
        arrays = {"ids": ids, "vectors": vectors}
        if tag_indices is not None:
            arrays["tag_indices"] = np.asarray(tag_indices, dtype=np.int32)
            arrays["tag_probs"] = np.asarray(tag_probs, dtype=np.float32)
        number = len(self._shards()) + 1
        tmp = None
        try:
            handle, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".npz")
            with os.fdopen(handle, "wb") as out:
                np.savez(out, **arrays)
                out.flush()
                os.fsync(out.fileno())
            # A concurrent writer may have taken this number; find the next free one without overwriting.
            while True:
                target = self.dir / f"shard-{number:06d}.npz"
                try:
                    os.link(tmp, target)
                    break
                except FileExistsError:
                    number += 1
        except OSError as exc:
            storage = storage_error(exc, self.dir / f"shard-{number:06d}.npz")
            if storage is not None:
                raise storage from exc
            raise
        finally:
            if tmp is not None:  # the shard is linked under its own name, or was never complete
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return target

    def load(self) -> FeatureSet:
        """All stored vectors (first copy of each id wins), consolidated into a memory-mappable matrix."""
        shards = self._shards()
        if not shards:
            raise NotFittedError(f"no {self.backbone} features in this workspace yet; "
                                 f"run: pixelmine extract --backbone {self.backbone}")
        stamp = ",".join(f"{s.name}:{s.stat().st_size}" for s in shards)
        stamp_file = self.dir / "matrix.stamp"
        if not (stamp_file.exists() and stamp_file.read_text() == stamp):
            self._consolidate(shards)
        try:
            return self._read_consolidated()
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            # the consolidated copy is derived from the shards: rebuild it
            _log.warning("the consolidated %s features in %s are damaged (%s: %s); rebuilding them from the "
                         "shards", self.backbone, self.dir, type(exc).__name__, exc)
            self._consolidate(self._shards())
            return self._read_consolidated()

    def _read_consolidated(self) -> FeatureSet:
        vectors = np.load(self.dir / "matrix.npy", mmap_mode="r")
        ids = np.load(self.dir / "ids.npy").tolist()
        tags = self.dir / "tags.npz"
        tag_indices = tag_probs = None
        if tags.exists():
            with np.load(tags) as data:
                tag_indices, tag_probs = data["tag_indices"], data["tag_probs"]
        if vectors.ndim != 2 or len(ids) != vectors.shape[0] or (
                tag_indices is not None and len(tag_indices) != len(ids)):
            raise ValueError(f"{len(ids)} ids for a matrix of shape {vectors.shape}")
        return FeatureSet(ids, vectors, self.backbone, self.fingerprint, tag_indices, tag_probs)

    def _consolidate(self, shards: list[Path]) -> None:
        ids: list[str] = []
        blocks, tag_i, tag_p = [], [], []
        seen: set[str] = set()
        has_tags = True
        for shard in shards:
            data = self._read_shard(shard)
            if data is None:
                continue
            shard_ids = data["ids"].tolist()
            keep = [row for row, image_id in enumerate(shard_ids) if image_id not in seen]
            seen.update(shard_ids)
            ids.extend(shard_ids[row] for row in keep)
            blocks.append(data["vectors"][keep])
            if "tag_indices" in data:
                tag_i.append(data["tag_indices"][keep])
                tag_p.append(data["tag_probs"][keep])
            else:
                has_tags = False
        if not blocks:
            raise NotFittedError(f"every {self.backbone} feature shard in {str(self.dir)!r} is damaged; compute "
                                 f"them again: pixelmine extract --backbone {self.backbone}")
        stamp = ",".join(f"{s.name}:{s.stat().st_size}" for s in self._shards())
        matrix = np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)
        atomic_save_npy(self.dir / "matrix.npy", matrix)
        atomic_save_npy(self.dir / "ids.npy", np.asarray(ids, dtype="U64"))
        if has_tags and tag_i:
            atomic_save_npz(self.dir / "tags.npz", compressed=False, tag_indices=np.concatenate(tag_i),
                            tag_probs=np.concatenate(tag_p))
        atomic_write_text(self.dir / "matrix.stamp", stamp)


def load_features(workspace_root: str | os.PathLike, backbone: str, *, precision: str = "fp32") -> FeatureSet:
    """The cached vectors of ``backbone`` in the workspace at ``workspace_root``.

    The cache of the backbone's current fingerprint (weights + preprocessing + precision) when it exists;
    else (e.g. the weights package was removed since) the newest cache of that backbone, with a warning.
    NotFittedError, with the command to run, when nothing was extracted.
    """
    import logging

    from .. import backbones
    from ..errors import PixelmineError

    name, fingerprint, lookup_error = backbone, None, None
    try:
        spec = backbones.get(backbone, root=workspace_root)
        name = spec.name
        fingerprint = spec.fingerprint(spec.locate_weights(allow_download=False), precision)
    except PixelmineError as exc:  # unknown name or no weights here: fall back to what is on disk
        lookup_error = exc
    else:
        store = FeatureStore(workspace_root, name, fingerprint)
        if store.has_features():
            return store.load()
    candidates = sorted(Path(workspace_root).joinpath("features").glob(f"{_safe(name)}-*/backbone.json"),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    for meta in candidates:
        info = json.loads(meta.read_text())
        store = FeatureStore(workspace_root, name, info["fingerprint"])
        if info.get("backbone") == name and info.get("precision", "fp32") == precision and store.has_features():
            logging.getLogger(__name__).warning(
                "using cached %s features with fingerprint %s (the current one is %s)",
                name, info["fingerprint"][:12], (fingerprint or "unknown")[:12])
            return store.load()
    if lookup_error is not None and not candidates:
        raise lookup_error
    raise NotFittedError(f"no {name} features in workspace {str(workspace_root)!r} yet; "
                         f"run: pixelmine extract --backbone {name}")


def extracted_backbones(workspace_root: str | os.PathLike) -> list[str]:
    """Names of the backbones the workspace has cached features of, newest cache first."""
    metas = sorted(Path(workspace_root).joinpath("features").glob("*/backbone.json"),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    names: list[str] = []
    for meta in metas:
        try:
            name = json.loads(meta.read_text()).get("backbone")
        except (OSError, ValueError):
            continue
        if name and name not in names and any(meta.parent.glob("shard-*.npz")):
            names.append(name)
    return names

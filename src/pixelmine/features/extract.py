"""Extraction: every ``ok`` image of the catalog -> one feature vector (and its top-5 ImageNet tags) per
backbone, cached in the workspace.

    decode workers (processes) ──uint8 crops──► batch ──► ONNX Runtime / PyTorch ──► shard (atomic)
             running ahead, bounded                 features + top-5 tags             every ~2 s

Work is keyed by (image id, backbone fingerprint): identical bytes are one image, so a duplicate file
is computed once; a re-run computes only images no shard holds yet; a killed run loses at most the
last ``flush_s`` seconds. Images that fail to decode are recorded in ``extract_errors`` and skipped
(re-tried with ``retry_errors=True``); the run goes on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import backbones
from ..catalog import Catalog, utc_now
from ..errors import InputError, StorageError
from ..progress import resolve_progress
from .embedder import BACKENDS, Embedder, crop_spec, default_workers
from .decoding import Decoder
from .store import TOP_K_TAGS, FeatureSet, FeatureStore
from ..runs import image_set
from ..config import build_config

_log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ExtractConfig:
    """How extraction runs. Saved with every run in the catalog."""

    backbone: str = backbones.DEFAULT_BACKBONE  # registry name, or timm:NAME / torchvision:NAME
    backend: str = "onnx"  # "onnx" (ONNX Runtime, fastest on CPU) or "torch" (eager; CUDA when present)
    precision: str = "fp32"  # "fp32", or "int8" (onnx only: static QDQ, calibrated on this workspace)
    # images per inference call. 8: MobileNetV2 under ONNX Runtime on 2 Zen cores ran ~20% faster (and used
    # ~20% less CPU per image) at 8 than at 16 or 32: a small batch's activations stay in the caches.
    batch_size: int = 8
    threads: int | None = None  # inference threads; None = every core this process may use
    workers: int | None = None  # decode processes; None = cores - 1 (at least 1); 0 = one thread, in-process
    device: str = "auto"  # torch backend: "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    retry_errors: bool = False  # decode again the images that failed in an earlier run
    allow_download: bool | None = None  # weights download; None = allowed unless $PIXELMINE_OFFLINE is set
    flush_s: float = 2.0  # seconds between shard writes: the most work a kill can lose

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise InputError(f"The 'backend' parameter of extract must be one of {', '.join(BACKENDS)}. "
                             f"Got {self.backend!r} instead.")
        if self.precision not in backbones.PRECISIONS:
            raise InputError(f"The 'precision' parameter of extract must be one of "
                             f"{', '.join(backbones.PRECISIONS)}. Got {self.precision!r} instead.")
        if self.precision == "int8" and self.backend != "onnx":
            raise InputError("precision 'int8' needs --backend onnx (ONNX Runtime static quantization); "
                             f"got backend {self.backend!r}")
        for name, minimum in (("batch_size", 1), ("threads", 1), ("workers", 0)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
                raise InputError(f"The {name!r} parameter of extract must be an integer >= {minimum}. "
                                 f"Got {value!r} instead.")
        if not self.flush_s > 0:
            raise InputError(f"The 'flush_s' parameter of extract must be > 0 seconds. Got {self.flush_s!r} instead.")


@dataclass
class ExtractResult:
    run_id: int
    backbone: str
    fingerprint: str
    backend: str  # what actually ran, e.g. "onnxruntime model-fp32.onnx, 2 threads"
    images: int = 0  # ok images in the catalog
    computed: int = 0  # feature vectors computed in this run
    cached: int = 0  # already in the cache (same bytes and fingerprint)
    failed: int = 0  # could not be decoded in this run (recorded in extract_errors)
    skipped_failed: int = 0  # failed in an earlier run, not retried (retry_errors=False)
    elapsed_s: float = 0.0
    setup_s: float = 0.0  # loading weights, exporting / loading the ONNX model
    onnx_exported: bool = False  # the ONNX graph was exported in this run (not found in the user cache)
    timings: dict = field(default_factory=dict)  # seconds: inference, waiting for decode, writing
    workspace: str = ""

    @property
    def images_per_s(self) -> float:
        """Computed images per second of the whole run (setup included)."""
        return self.computed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def features(self) -> FeatureSet:
        """The cached vectors of this backbone (all images extracted so far), memory-mapped."""
        store = FeatureStore(self.workspace, self.backbone, self.fingerprint)
        if not store.has_features():
            from ..errors import NotFittedError

            raise NotFittedError(f"no {self.backbone} features in workspace {self.workspace!r}: it has {self.images} "
                                 f"usable images ({self.failed} failed to decode); add images with: pixelmine ingest PATH")
        return store.load()

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": round(self.images_per_s, 1)}


def failed_ids(catalog: Catalog, fingerprint: str) -> dict[str, str]:
    """Images that failed to decode for this fingerprint: id -> reason."""
    return {row["image_id"]: row["error"] for row in
            catalog.query("SELECT image_id, error FROM extract_errors WHERE fingerprint = ?", (fingerprint,))}


def extraction_errors(catalog: Catalog, backbone: str | None = None) -> list[dict]:
    """Every recorded extraction failure (optionally of one backbone), newest first."""
    sql = "SELECT * FROM extract_errors" + (" WHERE backbone = ?" if backbone else "") + " ORDER BY updated_at DESC"
    return [dict(row) for row in catalog.query(sql, (backbone,) if backbone else ())]


def top_k(logits: np.ndarray | None, k: int = TOP_K_TAGS) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """Softmax top-k per row: (indices int32 (N, k), probabilities float32 (N, k)), best first.
    Heads with fewer than k classes are padded with index -1 and probability 0."""
    if logits is None:
        return None, None
    logits = logits.astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    kk = min(k, probs.shape[1])
    part = np.argpartition(-probs, kk - 1, axis=1)[:, :kk]
    order = np.take_along_axis(probs, part, axis=1).argsort(axis=1)[:, ::-1]
    indices = np.take_along_axis(part, order, axis=1)
    values = np.take_along_axis(probs, indices, axis=1)
    if kk < k:
        pad = k - kk
        indices = np.pad(indices, ((0, 0), (0, pad)), constant_values=-1)
        values = np.pad(values, ((0, 0), (0, pad)))
    return indices.astype(np.int32), values.astype(np.float32)


def extract(catalog: Catalog, workspace_root, config: ExtractConfig | None = None, *, progress="auto",
            ids=None, **options) -> ExtractResult:
    """Compute the features of every ok image that the cache lacks. See the module docstring.

    ``ids``: only these images (e.g. the sample that automatic model selection screens backbones on);
    ``images`` and ``cached`` then count only them."""
    config = _config(config, options)
    started = time.perf_counter()
    spec = backbones.get(config.backbone, root=workspace_root)
    located = spec.locate_weights(allow_download=config.allow_download)
    fingerprint = spec.fingerprint(located, config.precision)
    store = FeatureStore(workspace_root, spec.name, fingerprint, info={
        "precision": config.precision, "weights": located.identity, "decode_version": backbones.DECODE_VERSION,
        "preprocessing": asdict(spec.preprocessing), "num_classes": spec.num_classes})
    known = store.known_ids()
    failed_before = {} if config.retry_errors else failed_ids(catalog, fingerprint)
    images = catalog.images(status="ok")
    if ids is not None:
        wanted = set(ids)
        images = [img for img in images if img["id"] in wanted]
    todo = [(img["id"], img["path"]) for img in images if img["id"] not in known and img["id"] not in failed_before]
    result = ExtractResult(run_id=0, backbone=spec.name, fingerprint=fingerprint, backend=config.backend,
                           images=len(images), workspace=str(workspace_root),
                           cached=sum(1 for img in images if img["id"] in known),
                           skipped_failed=sum(1 for img in images if img["id"] in failed_before))
    run_config = {**asdict(config), "backbone": spec.name, "fingerprint": fingerprint,
                  "weights": located.identity, "weights_origin": located.origin,
                  "preprocessing": asdict(spec.preprocessing)}
    with catalog.run("extract", run_config, inputs={"fingerprint": fingerprint,
                                                    "images": image_set(img["id"] for img in images)}) as run:
        result.run_id = run.id
        report, close_progress = resolve_progress(progress, f"extract {spec.name}", unit="img")
        try:
            if todo:
                _run(catalog, store, spec, config, todo, result, report)
        finally:
            close_progress()
            result.elapsed_s = time.perf_counter() - started
            run.counts.update(images=result.images, computed=result.computed, cached=result.cached,
                              failed=result.failed, skipped_failed=result.skipped_failed)
            run.metrics.update(elapsed_s=round(result.elapsed_s, 3), images_per_s=round(result.images_per_s, 1),
                               setup_s=round(result.setup_s, 3), backend=result.backend,
                               onnx_exported=result.onnx_exported,
                               **{f"{k}_s": round(v, 3) for k, v in result.timings.items()})
    return result


def _config(config: ExtractConfig | None, options: dict) -> ExtractConfig:
    return build_config(ExtractConfig, config, options, stage="extract")


def _run(catalog: Catalog, store: FeatureStore, spec, config: ExtractConfig, todo, result: ExtractResult,
         report) -> None:
    workers = default_workers(len(todo)) if config.workers is None else config.workers
    decoder = Decoder(todo, crop_spec(spec), workers=workers, chunk_size=config.batch_size)
    setup_started = time.perf_counter()
    try:
        decoder.start()  # workers start and decode the first batches while the network loads
        embedder = Embedder(spec, precision=config.precision, backend=config.backend, threads=config.threads,
                            device=config.device, allow_download=config.allow_download,
                            workspace_root=store.workspace_root, calibration=todo)
    except BaseException:
        decoder.abort()
        raise
    result.setup_s = time.perf_counter() - setup_started
    result.onnx_exported = embedder.exported
    result.backend = embedder.describe()
    timings = {"inference": 0.0, "decode_wait": 0.0, "write": 0.0}
    pending: dict[str, list] = {"ids": [], "vectors": [], "tag_indices": [], "tag_probs": []}
    errors: list[tuple[str, str, str]] = []
    has_tags = bool(spec.num_classes)
    last_flush = time.perf_counter()
    done = 0
    report(0, len(todo))

    def flush() -> None:
        t0 = time.perf_counter()
        if pending["ids"]:
            store.write(pending["ids"], np.concatenate(pending["vectors"]),
                        np.concatenate(pending["tag_indices"]) if has_tags else None,
                        np.concatenate(pending["tag_probs"]) if has_tags else None)
            if config.retry_errors:
                _clear_errors(catalog, store.fingerprint, pending["ids"])
            for values in pending.values():
                values.clear()
        if errors:
            _record_errors(catalog, spec.name, store.fingerprint, errors, result.run_id)
            errors.clear()
        timings["write"] += time.perf_counter() - t0

    disk_refused = False
    try:
        waited = time.perf_counter()
        for chunk in decoder:
            timings["decode_wait"] += time.perf_counter() - waited
            if chunk.errors:
                errors.extend(chunk.errors)
                result.failed += len(chunk.errors)
            if chunk.ids:
                t0 = time.perf_counter()
                out = embedder.embed_pixels(chunk.pixels)
                features, logits = out.features, out.logits
                timings["inference"] += time.perf_counter() - t0
                indices, probs = top_k(logits) if has_tags else (None, None)
                pending["ids"].extend(chunk.ids)
                pending["vectors"].append(np.asarray(features, dtype=np.float32))
                if has_tags:
                    pending["tag_indices"].append(indices)
                    pending["tag_probs"].append(probs)
                result.computed += len(chunk.ids)
            done += len(chunk.ids) + len(chunk.errors)
            report(done, len(todo))
            if time.perf_counter() - last_flush >= config.flush_s:
                flush()
                last_flush = time.perf_counter()
            waited = time.perf_counter()
    except StorageError:
        disk_refused = True
        raise
    finally:
        if not disk_refused:  # keep what was computed, also when interrupted (a full disk would refuse it)
            flush()
        embedder.close()
        result.timings = timings


def _record_errors(catalog: Catalog, backbone: str, fingerprint: str, errors, run_id: int) -> None:
    now = utc_now()
    with catalog.transaction() as conn:
        conn.executemany(
            """INSERT INTO extract_errors(image_id, fingerprint, backbone, path, error, run_id, updated_at)
               VALUES (?,?,?,?,?,?,?)
               ON CONFLICT(image_id, fingerprint) DO UPDATE SET path=excluded.path, error=excluded.error,
                   run_id=excluded.run_id, updated_at=excluded.updated_at""",
            [(image_id, fingerprint, backbone, path, message, run_id, now) for image_id, path, message in errors])
    for image_id, path, message in errors:
        _log.warning("skipped %s: %s", path, message)


def _clear_errors(catalog: Catalog, fingerprint: str, ids) -> None:
    """Images computed now (after --retry-errors) are no longer failures."""
    ids = list(ids)
    with catalog.transaction() as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            conn.execute(f"DELETE FROM extract_errors WHERE fingerprint = ? AND image_id IN ({','.join('?' * len(chunk))})",
                         (fingerprint, *chunk))

"""The watch pipeline: complete files in, one stored event per file out.

Per micro-batch (up to ``batch_max`` files, whatever is queued when the previous batch finished, so a
quiet folder is answered file by file and a burst is embedded in large batches):

1. validate each file with ingest's own :func:`~pixelmine.ingest.validate_file` (the same statuses) and
   write it with ingest's write path (:meth:`Catalog.write_records`, source = the watched folder);
2. embed the ok images whose content has no vector yet in one call of a resident embedder (the model's,
   or the backbone's when there is no model), kept open for the whole watch; an exact duplicate by
   content reuses the vector it already has and is never embedded twice;
3. predict (label, probability, top-k, uncertain and why, novelty), look for a near-duplicate among the
   catalogued images (a faiss index built once at the start and grown with the arrivals), update drift;
4. store the events in the catalog (``events`` table) in one transaction, hand them to the webhook, yield.

The pipeline runs in the thread that iterates :func:`watch`; the file source and the webhook have threads of
their own. A consumer slower than the arrivals fills the bounded queue, which then holds the source back
(back-pressure): files wait, none is dropped.

What a watch does with a file that is deleted before it is processed: when its writer had finished it
(inotify close-write, or a settled size in polling mode) the path is recorded and at once marked missing,
with a ``missing`` event that says so; a file deleted before it was ever complete (polling: before its size
settled) was never an image and is not recorded.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np

from ..catalog import Catalog
from ..defaults import DEFAULT_BACKBONE
from ..errors import InputError, NotFittedError, PixelmineError
from ..ingest.validate import ValidationLimits, validate_file
from .files import ChangeQueue, FileChange, choose_mode, list_candidates, open_source

_log = logging.getLogger(__name__)

NEAR_DUPLICATE_COSINE = 0.95  # as the near-duplicate finder (pixelmine.discover.duplicates)
DELETED_BEFORE_PROCESSING = ("the file was deleted after it was written and before it could be processed; "
                             "copy it into the watched folder again to process it")


@dataclass(frozen=True)
class WatchConfig:
    """How a watch runs; saved with its run in the catalog."""

    model: str | None = None  # model name; None = the newest trained model, if any (and no backbone given)
    backbone: str | None = None  # without a model: the backbone that embeds (default mobilenet_v2)
    mode: str = "auto"  # auto | inotify | polling (see pixelmine.watch.files)
    webhook: str | None = None  # URL each event is POSTed to as JSON
    labels_from_folders: bool = False  # first folder below the watched folder is the image's label
    batch_max: int = 32  # files validated and embedded together at most
    queue_max: int = 256  # complete files waiting at most before the source is held back
    settle_s: float = 1.0  # polling: seconds a file's size and mtime must stay unchanged
    top_k: int = 3  # classes listed per prediction
    near_duplicate_cosine: float = NEAR_DUPLICATE_COSINE
    validate_threads: int = 4  # files validated side by side (decoding releases the GIL)
    drift_window: int = 200  # arrivals in the drift window
    drift_every: int = 25  # a drift report every this many arrivals

    def __post_init__(self):
        from .files import MODES

        for name, minimum in (("batch_max", 1), ("queue_max", 1), ("top_k", 1), ("validate_threads", 1),
                              ("drift_window", 2), ("drift_every", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < minimum:
                raise InputError(f"The {name!r} parameter of watch must be an integer >= {minimum}. "
                                 f"Got {value!r} instead.")
        if self.mode not in MODES:
            raise InputError(f"The 'mode' parameter of watch must be one of {', '.join(MODES)}. "
                             f"Got {self.mode!r} instead.")
        if not isinstance(self.settle_s, (int, float)) or self.settle_s < 0:
            raise InputError(f"The 'settle_s' parameter of watch must be >= 0 seconds. Got {self.settle_s!r} instead.")
        if not 0 < self.near_duplicate_cosine <= 1:
            raise InputError("The 'near_duplicate_cosine' parameter of watch must be in (0, 1]. "
                             f"Got {self.near_duplicate_cosine!r} instead.")


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


def _now_iso() -> str:
    return _iso(time.time())


def resolve_dirs(dirs) -> list[str]:
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    resolved = []
    for raw in dirs or ():
        path = os.path.abspath(os.path.expanduser(os.fspath(raw)))
        if not os.path.isdir(path):
            raise InputError(f"cannot watch {os.fspath(raw)!r}: it is not an existing folder; create it first "
                             "or give another folder")
        if path not in resolved:
            resolved.append(path)
    if not resolved:
        raise InputError("nothing to watch: give one or more folders, e.g. pixelmine watch incoming/")
    return resolved


def watch(workspace, dirs, *, stop: threading.Event | None = None, max_events: int | None = None,
          timeout_s: float | None = None, **options) -> Iterator[dict]:
    """Watch ``dirs`` and yield each event as it is stored (see the module docstring and ``docs``).

    Checks the folders, the options and the model before returning, so mistakes fail at once; the watch
    itself starts with the first ``next()``. It ends when ``stop`` is set, after ``max_events`` events (not
    counting ``watch_started``), after ``timeout_s`` seconds, or when the generator is closed or interrupted,
    and always stops its threads and closes its sessions."""
    config = WatchConfig(**options)
    roots = resolve_dirs(dirs)
    if max_events is not None and (not isinstance(max_events, int) or max_events < 1):
        raise InputError(f"The 'max_events' parameter of watch must be an integer >= 1. Got {max_events!r} instead.")
    if timeout_s is not None and timeout_s <= 0:
        raise InputError(f"The 'timeout_s' parameter of watch must be > 0 seconds. Got {timeout_s!r} instead.")
    if config.webhook:
        from .webhook import check_url

        check_url(config.webhook)
    mode, why = choose_mode(roots, config.mode)
    model_name = _model_name(workspace.root, config)
    return _run(workspace.root, roots, config, mode, why, model_name, stop or threading.Event(), max_events,
                timeout_s)


def _model_name(root, config: WatchConfig) -> str | None:
    from ..learn import artifacts

    if config.model is not None:
        if not artifacts.model_path(root, config.model).is_dir():
            known = [m["name"] for m in artifacts.list_models(root)]
            raise NotFittedError(f"no model named {config.model!r} in workspace {str(root)!r}; "
                                 + (f"models: {', '.join(known)}" if known else "train one with: pixelmine train"))
        return config.model
    if config.backbone is not None:
        return None  # a backbone alone: embed with it, predict nothing
    try:
        return artifacts.default_model_name(root)
    except NotFittedError:
        return None


def _run(root, roots, config, mode, why, model_name, stop, max_events, timeout_s) -> Iterator[dict]:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    catalog = Catalog(os.path.join(root, "catalog.sqlite"))  # this thread's own connection
    stopping = threading.Event()
    changes = ChangeQueue(config.queue_max, stopping)
    source = open_source(mode, roots, changes, settle_s=config.settle_s)
    pipeline: Pipeline | None = None
    run_config = {**asdict(config), "dirs": roots, "mode": mode, "model": model_name}
    stopped_by = "error"
    try:
        with catalog.run("watch", run_config, inputs={"dirs": roots, "model": model_name}) as run:
            pipeline = Pipeline(catalog, root, roots, config, model_name, run.id)
            webhook = None
            if config.webhook:
                from .webhook import Webhook

                webhook = Webhook(config.webhook)
            try:
                # the watch starts before the (slow) model load, so nothing written meanwhile is missed
                source.start()
                pipeline.open()
                reconciled, backlog, settle, handled, missing_events = pipeline.reconcile()
                source.prime(handled)
                source.settle(settle)
                started = pipeline.event("watch_started", dirs=roots, mode=mode, mode_reason=why,
                                         model=model_name, backbone=pipeline.backbone, reconciled=reconciled,
                                         drift=pipeline.drift_note)
                stopped_by = yield from _loop(pipeline, source, changes, backlog, webhook, started, missing_events,
                                              stop, deadline, max_events)
            except GeneratorExit:
                stopped_by = "closed"
            except KeyboardInterrupt:
                stopped_by = "interrupted"
                raise
            finally:
                stopping.set()
                source.stop()
                final = pipeline.event("watch_stopped", reason=stopped_by, counts=dict(pipeline.counts),
                                       webhook=None if webhook is None else webhook.counts())
                try:
                    pipeline.store([final], webhook)
                except PixelmineError as exc:  # e.g. a full disk: it must not hide what stopped the watch
                    _log.warning("the watch_stopped event could not be stored: %s", exc)
                run.counts.update({**pipeline.counts, "queue_high_water": changes.high_water,
                                   "webhook": None if webhook is None else webhook.stop(), "stopped_by": stopped_by})
        if stopped_by not in ("closed", "interrupted", "error"):
            yield final
    finally:
        stopping.set()
        source.stop()
        if pipeline is not None:
            pipeline.close()
        catalog.close()


def _loop(pipeline, source, changes, backlog, webhook, started, first_events, stop, deadline, max_events):
    """Yield events until a stop condition; returns why it stopped."""
    yielded = 0
    pending = None  # a batch whose validation has started
    for event in pipeline.store([started, *first_events], webhook):
        yielded += event is not started
        yield event
        if max_events is not None and yielded >= max_events:
            return "max_events"
    while True:
        if stop.is_set():
            return "stop"
        if source.error is not None:
            raise source.error
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout"
        if pending is None:
            wait_s = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            batch = _take_batch(changes, backlog, pipeline.config.batch_max, wait_s)
            if not batch:
                continue
            pending = pipeline.prepare(batch)
        # In a burst the next batch is validated (decoded, in the pool's threads) while this one is embedded
        # (ONNX Runtime releases the GIL); with nothing queued, this batch goes on at once.
        following = _take_batch(changes, backlog, pipeline.config.batch_max, 0.0)
        upcoming = pipeline.prepare(following) if following else None
        events = pipeline.process(pending, source)
        pending = upcoming
        for event in pipeline.store(events, webhook):
            yielded += 1
            yield event
            if max_events is not None and yielded >= max_events:
                return "max_events"


def _take_batch(changes: ChangeQueue, backlog: deque, batch_max: int, wait_s: float) -> list[FileChange]:
    """Live changes first (they set the latency), then the reconcile backlog; waits only when both are empty."""
    batch: list[FileChange] = []
    while len(batch) < batch_max:
        change = changes.get_nowait()
        if change is None:
            break
        batch.append(change)
    while len(batch) < batch_max and backlog:
        batch.append(backlog.popleft())
    if not batch:
        change = changes.get(wait_s)
        if change is not None:
            batch.append(change)
            while len(batch) < batch_max:
                more = changes.get_nowait()
                if more is None:
                    break
                batch.append(more)
    return batch


@dataclass
class PreparedBatch:
    """A micro-batch whose files are being validated in the pool (see :meth:`Pipeline.prepare`)."""

    batch: list  # the changes as taken from the queue
    latest: dict  # path -> its newest change in the batch
    todo: list  # complete files to read (not already catalogued unchanged)
    futures: list  # their validation records, in todo's order
    known: dict  # catalog rows of the ready paths before the batch
    started: float  # wall-clock time the batch was taken
    validation_started: float  # perf_counter when validation was submitted


class Pipeline:
    """The per-watch state: the resident embedder, the model, the near-duplicate index, novelty and drift."""

    def __init__(self, catalog: Catalog, root, roots: Sequence[str], config: WatchConfig, model_name: str | None,
                 run_id: int):
        self.catalog = catalog
        self.root = root
        self.roots = list(roots)
        self.config = config
        self.model_name = model_name
        self.run_id = run_id
        self.limits = ValidationLimits()
        self.model = None
        self.embedder = None
        self.backbone: str | None = None
        self.index = None
        self.novelty_scorer = None
        self.drift = None
        self.drift_note: str | None = None
        self._alarm = False
        self._pool: ThreadPoolExecutor | None = None
        self.counts: dict = {"images": 0, "ok": 0, "embedded": 0, "duplicates": 0, "missing": 0, "drift_reports": 0,
                             "alarms": 0, "skipped_unchanged": 0, "changed_while_read": 0, "by_status": {}}

    # -- set-up -------------------------------------------------------------------------------------
    def open(self) -> None:
        from ..features.embedder import Embedder

        self._pool = ThreadPoolExecutor(max_workers=self.config.validate_threads,
                                        thread_name_prefix="pixelmine-watch-validate")
        if self.model_name is not None:
            from ..learn.loading import load_model

            self.model = load_model(self.catalog, self.root, self.model_name)
            self.backbone = getattr(self.model, "as_backbone", None) or self.model.backbone
            self.embedder = self.model.embedder()
        else:
            self.backbone = self.config.backbone or DEFAULT_BACKBONE
        features = self._catalogued_features()
        if self.embedder is None:
            self.embedder = Embedder.open(self.backbone, root=self.root,
                                          fingerprint=None if features is None else features.fingerprint)
        self._open_index(features)
        self._open_novelty(features)
        self._open_drift(features)
        self._warm_up()

    def _warm_up(self) -> None:
        """Run the network once on a blank crop: the first real file must not pay for graph initialisation."""
        from ..optional import require

        require("faiss", "Near-duplicate search")
        # imported now, not by the first file's batch (the learn modules take seconds to import)
        from ..learn import model, predictions  # noqa: F401
        from ..search import index  # noqa: F401
        crop = getattr(self.embedder, "crop", None)
        if crop is not None:
            self.embedder.embed_pixels(np.zeros((1, crop.input_size, crop.input_size, 3), np.uint8))

    def _catalogued_features(self):
        """The cached vectors of the backbone, when they are the ones this watch's embedder computes."""
        from ..learn.joined import load_feature_set

        try:
            features = load_feature_set(self.root, self.backbone)
        except (NotFittedError, InputError):
            return None
        expected = None if self.model is None else self.model.info.get("feature_fingerprint")
        if expected is not None and features.fingerprint != expected:
            _log.info("the cached %s features (fingerprint %s) are not the model's (%s); they are not used",
                      self.backbone, features.fingerprint[:12], expected[:12])
            return None
        return features

    def _open_index(self, features) -> None:
        from ..search.index import VectorIndex

        if features is None or not len(features):
            return  # made from the first arrival's vector, when its width is known
        present = {row["id"] for row in self.catalog.images(status="ok")}
        keep = [k for k, image_id in enumerate(features.ids) if image_id in present]
        self.index = VectorIndex([features.ids[k] for k in keep], np.asarray(features.vectors[keep], dtype=np.float32),
                                 backbone=self.backbone, fingerprint=features.fingerprint)

    def _remember(self, image_id: str, vector: np.ndarray) -> None:
        from ..search.index import VectorIndex

        if self.index is None:
            self.index = VectorIndex([], np.zeros((0, len(vector)), np.float32), backbone=self.backbone)
        if image_id not in self.index:
            self.index.add([image_id], vector[None, :])

    def _open_novelty(self, features) -> None:
        if self.model is not None or features is None or len(features) < 10:
            return  # a model scores novelty against its own training images
        from ..learn.novelty import NoveltyScorer

        self.novelty_scorer = NoveltyScorer().fit(np.asarray(features.vectors, dtype=np.float32))

    def _open_drift(self, features) -> None:
        try:
            from .drift import DriftMonitor
        except ImportError as exc:
            self.drift_note = f"drift monitoring is not available ({exc})"
            _log.info(self.drift_note)
            return
        reference, labels = self._drift_reference(features)
        if reference is None:
            self.drift_note = "no reference features for drift monitoring (extract features, or train a model)"
            _log.info(self.drift_note)
            return
        try:
            self.drift = DriftMonitor(reference, window=self.config.drift_window, every=self.config.drift_every,
                                      seed=0, **({"reference_labels": labels} if labels is not None else {}))
        except InputError as exc:
            self.drift_note = f"drift monitoring is off: {exc}"
            _log.info(self.drift_note)

    def _drift_reference(self, features):
        """The model's training features (train and val split), else every catalogued feature vector."""
        if features is None or not len(features):
            return None, None
        if self.model is not None:
            try:
                with np.load(self.model.dir / "data.npz", allow_pickle=False) as data:
                    splits = data["splits"]
                    ids = data["ids"][np.isin(splits, ["train", "val"])].tolist()
                    labels = data["labels"][np.isin(splits, ["train", "val"])].tolist() if "labels" in data.files \
                        else None
            except (OSError, KeyError, ValueError):
                ids, labels = None, None
            if ids:
                position = {image_id: row for row, image_id in enumerate(features.ids)}
                keep = [k for k, image_id in enumerate(ids) if image_id in position]
                if keep:
                    rows = [position[ids[k]] for k in keep]
                    return (np.asarray(features.vectors[rows], dtype=np.float32),
                            None if labels is None else [str(labels[k]) for k in keep])
        return np.asarray(features.vectors, dtype=np.float32), None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self.embedder is not None:
            self.embedder.close()
            self.embedder = None

    # -- events -------------------------------------------------------------------------------------
    def event(self, kind: str, *, path: str | None = None, image_id: str | None = None, **fields) -> dict:
        return {"id": None, "type": kind, "at": _now_iso(), "path": path, "image_id": image_id, **fields}

    def store(self, events: list[dict], webhook) -> list[dict]:
        if events:
            self.catalog.add_events(events)
            if webhook is not None:
                for event in events:
                    webhook.send(event)
        return events

    # -- start: what happened while nobody watched ----------------------------------------------------
    def reconcile(self):
        """Compare the folders with the catalog: (counts, ready backlog, young paths to settle, paths handled,
        missing events)."""
        now = time.time()
        listing = list_candidates(self.roots)
        known = self.catalog.lookup_paths(list(listing))
        counts = {"files": len(listing), "unchanged": 0, "new": 0, "changed": 0, "settling": 0, "missing": 0}
        backlog: deque[FileChange] = deque()
        settle: list[str] = []
        handled: dict[str, tuple[int, int]] = {}
        for path, key in listing.items():
            row = known.get(path)
            if row is not None and row["present"] and row["status"] != "unreadable" and \
                    (row["size"], row["mtime_ns"]) == key:
                counts["unchanged"] += 1
                handled[path] = key
                continue
            counts["changed" if row is not None else "new"] += 1
            # A file written in the last settle_s may still be open for writing: it is reported once stable
            # (or by its close event), never read half-written.
            if now - key[1] / 1e9 >= max(self.config.settle_s, 0.5):
                backlog.append(FileChange("ready", path, None, now))
                handled[path] = key
            else:
                counts["settling"] += 1
                settle.append(path)
        gone = [p for root in self.roots for p in self.catalog.paths_under(root)
                if p not in listing and not os.path.lexists(p)]
        missing_events = self._mark_missing(gone) if gone else []
        counts["missing"] = len(gone)
        return counts, backlog, settle, handled, missing_events

    def _mark_missing(self, paths: list[str], reason: str | None = None) -> list[dict]:
        rows = self.catalog.lookup_paths(paths)
        self.catalog.mark_missing(paths, self.run_id)
        self.counts["missing"] += len(paths)
        return [self.event("missing", path=p, image_id=rows[p]["image_id"] if p in rows else None,
                           status="missing", error=reason) for p in paths]

    # -- one micro-batch ------------------------------------------------------------------------------
    def prepare(self, batch: list[FileChange]) -> "PreparedBatch":
        """Start validating ``batch``'s complete files in the pool; :meth:`process` finishes it."""
        from ..fileio import stat_key

        started = time.time()
        latest: dict[str, FileChange] = {}
        for change in batch:  # a path changed twice in the batch is processed once, as it is now
            latest.pop(change.path, None)
            latest[change.path] = change
        ready = [c for c in latest.values() if c.kind == "ready"]
        known = self.catalog.lookup_paths([c.path for c in ready]) if ready else {}
        todo: list[FileChange] = []
        for change in ready:
            row = known.get(change.path)
            key = stat_key(change.path)
            if key is not None and row is not None and row["present"] and row["status"] != "unreadable" and \
                    (row["size"], row["mtime_ns"]) == key:
                self.counts["skipped_unchanged"] += 1  # reported twice (scan and event): already done
                continue
            todo.append(change)
        futures = [self._pool.submit(validate_file, c.path, self.limits) for c in todo]
        return PreparedBatch(batch, latest, todo, futures, known, started, time.perf_counter())

    def process(self, prepared: "PreparedBatch", source) -> list[dict]:
        latest = prepared.latest
        events: list[dict] = []
        gone = [c for c in latest.values() if c.kind == "gone"]
        trees = [c for c in latest.values() if c.kind == "gone_tree"]
        batch = prepared.batch
        if prepared.todo:
            events += self._process_ready(prepared, source)
        gone_paths = [c.path for c in gone if not os.path.lexists(c.path)]
        for tree in trees:
            gone_paths += [p for p in self.catalog.paths_under(tree.path) if not os.path.lexists(p)]
        if gone_paths:
            rows = self.catalog.lookup_paths(gone_paths)
            present = sorted({p for p in gone_paths if p in rows and rows[p]["present"]})
            if present:
                events += self._mark_missing(present)
            # complete (reported ready) and deleted within this batch: accounted for, as missing
            readied = {c.path for c in batch if c.kind == "ready"}
            unseen = sorted({p for p in gone_paths if p not in rows and p in readied})
            if unseen:
                events += self._deleted_before_processing(unseen, {})
        return events

    def _process_ready(self, prepared: "PreparedBatch", source) -> list[dict]:
        from ..fileio import stat_key

        known, todo, started = prepared.known, prepared.todo, prepared.started
        records = [future.result() for future in prepared.futures]
        validate_ms = 1000 * (time.perf_counter() - prepared.validation_started)

        kept: list[tuple[FileChange, object]] = []
        vanished: list[str] = []
        for change, record in zip(todo, records):
            after = stat_key(change.path)
            if after is None:
                vanished.append(change.path)
                continue
            if record.status != "unreadable" and after != (record.size, record.mtime_ns):
                # written to while it was read: read it again once the writer is done, never keep a mix
                self.counts["changed_while_read"] += 1
                source.settle([change.path])
                continue
            kept.append((change, record))

        events: list[dict] = []
        if vanished:
            events += self._deleted_before_processing(vanished, known)
        if not kept:
            return events

        repeats = self._exact_duplicates([(c.path, r.sha256) for c, r in kept if r.sha256])
        rows = []
        for change, record in kept:
            rows.append((record.to_dict(), self._folder_label(change.path), None))
        by_root: dict[str, list] = {}
        for row in rows:
            by_root.setdefault(self._root_of(row[0]["path"]), []).append(row)
        for root, entries in by_root.items():
            self.catalog.write_records(entries, root, self.run_id)

        embed_started = time.perf_counter()
        vectors, embed_errors = self._vectors([(c.path, r) for c, r in kept])
        predictions = self._predict([(c.path, r) for c, r in kept], vectors)
        embed_ms = 1000 * (time.perf_counter() - embed_started)

        for change, record in kept:
            events.append(self._image_event(change, record, known.get(change.path), repeats.get(change.path),
                                            vectors.get(record.sha256) if record.status == "ok" else None,
                                            predictions.get(change.path), embed_errors.get(change.path),
                                            started, validate_ms, embed_ms))
        events += self._drift_events(events)
        return events

    def _deleted_before_processing(self, paths: list[str], known: dict) -> list[dict]:
        """Account for complete files that vanished before they were read: recorded, then marked missing."""
        fresh = [p for p in paths if p not in known]
        if fresh:
            from ..ingest.validate import FileRecord

            by_root: dict[str, list] = {}
            for path in fresh:
                record = FileRecord(path, None, None, "unreadable", DELETED_BEFORE_PROCESSING).to_dict()
                by_root.setdefault(self._root_of(path), []).append((record, self._folder_label(path), None))
            for root, entries in by_root.items():
                self.catalog.write_records(entries, root, self.run_id)
        present = [p for p in paths if p in fresh or known[p]["present"]]
        return self._mark_missing(present, DELETED_BEFORE_PROCESSING) if present else []

    def _root_of(self, path: str) -> str:
        best = ""
        for root in self.roots:
            if path.startswith(root.rstrip(os.sep) + os.sep) and len(root) > len(best):
                best = root
        return best or os.path.dirname(path)

    def _folder_label(self, path: str) -> str | None:
        if not self.config.labels_from_folders:
            return None
        parts = os.path.relpath(path, self._root_of(path)).split(os.sep)
        return parts[0] if len(parts) > 1 else None

    def _exact_duplicates(self, items: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
        """path -> (image id, another present path with the same bytes), for files whose content is
        catalogued under another path already, or came earlier in this batch."""
        ids = sorted({image_id for _, image_id in items})
        elsewhere: dict[str, list[str]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for row in self.catalog.query(
                    f"SELECT image_id, path FROM paths WHERE present = 1 AND image_id IN ({','.join('?' * len(chunk))}) "
                    "ORDER BY path", chunk):
                elsewhere.setdefault(row["image_id"], []).append(row["path"])
        result: dict[str, tuple[str, str]] = {}
        first_in_batch: dict[str, str] = {}
        for path, image_id in items:
            others = [p for p in elsewhere.get(image_id, []) if p != path]
            if others:
                result[path] = (image_id, others[0])
            elif image_id in first_in_batch:
                result[path] = (image_id, first_in_batch[image_id])
            else:
                first_in_batch[image_id] = path
        return result

    def _vectors(self, items) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Feature vector per image id of the ok files: from the index when the content is known, else
        embedded (each new content once, all in one call). Also {path: why it could not be embedded}."""
        from ..learn.model import decode_message

        vectors: dict[str, np.ndarray] = {}
        todo: list[tuple[str, str]] = []
        queued: set[str] = set()
        for path, record in items:
            if record.status != "ok":
                continue
            image_id = record.sha256
            if self.index is not None and image_id in self.index:
                vectors[image_id] = self.index.vector(image_id)
            elif image_id not in queued:
                queued.add(image_id)
                todo.append((path, image_id))
        errors: dict[str, str] = {}
        if todo:
            embedded = self.embedder.embed_files([p for p, _ in todo], batch_size=max(1, len(todo)))
            for k, row in enumerate(embedded.rows):
                vectors[todo[row][1]] = np.asarray(embedded.features[k], dtype=np.float32)
            for row, message in embedded.errors.items():
                errors[todo[row][0]] = decode_message(message)
            self.counts["embedded"] += len(embedded.rows)
        return vectors, errors

    def _predict(self, items, vectors: dict[str, np.ndarray]) -> dict[str, dict]:
        """path -> prediction fields (label, probability, top_k, uncertain, reason, novelty) of the ok files."""
        from ..learn.predictions import build_predictions

        usable = [(path, record.sha256) for path, record in items if record.status == "ok" and record.sha256 in vectors]
        if not usable:
            return {}
        if self.model is None:
            if self.novelty_scorer is None:
                return {}
            scores = self.novelty_scorer.novelty(np.stack([vectors[i] for _, i in usable]))
            return {path: {"novelty": float(s)} for (path, _), s in zip(usable, scores)}
        if hasattr(self.model, "predict_features"):
            probs, novelty = self.model.predict_features(np.stack([vectors[i] for _, i in usable]))
            paths = [p for p, _ in usable]
            ids = [i for _, i in usable]
        else:  # a fine-tuned network: its own classifier, averaged over its test-time moves
            probs, novelty, rows, _ = self.model.probabilities(self.embedder, [p for p, _ in usable])
            paths = [usable[r][0] for r in rows]
            ids = [usable[r][1] for r in rows]
        rows = build_predictions(probs, novelty, self.model.classes, top_k=min(self.config.top_k, len(self.model.classes)),
                                 min_confidence=self.model.min_confidence, min_margin=self.model.min_margin,
                                 paths=paths, image_ids=ids)
        return {row.path: {"label": row.label, "probability": row.probability, "top_k": row.top_k,
                           "uncertain": row.uncertain, "reason": row.reason, "novelty": row.novelty} for row in rows}

    def _near_duplicate(self, image_id: str, vector: np.ndarray) -> dict | None:
        if self.index is None or not len(self.index):
            return None
        ids, scores = self.index.search(vector[None, :], k=min(2, len(self.index)))
        for other, score in zip(ids[0], scores[0]):
            if other != image_id and float(score) >= self.config.near_duplicate_cosine:
                return {"image_id": other, "similarity": round(float(score), 6)}
        return None

    def _image_event(self, change: FileChange, record, previous, repeat, vector, prediction, embed_error,
                     started: float, validate_ms: float, embed_ms: float) -> dict:
        status = record.status
        flags: list[str] = []
        fields = {"label": None, "probability": None, "top_k": [], "uncertain": None, "reason": None,
                  "novelty": None}
        fields.update(prediction or {})
        novelty = fields["novelty"]
        novel = novelty is not None and novelty > 1.0
        near = None
        if vector is not None:
            near = self._near_duplicate(record.sha256, vector)
            self._remember(record.sha256, vector)
        if status != "ok":
            flags.append(status)
        if repeat is not None:
            flags.append("duplicate")
        if near is not None:
            flags.append("near_duplicate")
        if fields["uncertain"]:
            flags.append("uncertain")
        if novel:
            flags.append("novel")
        if embed_error:
            flags.append("not_embedded")
        if previous is not None and previous["image_id"] and previous["image_id"] != record.sha256:
            flags.append("changed")
        self.counts["images"] += 1
        self.counts["ok"] += status == "ok"
        self.counts["duplicates"] += repeat is not None
        self.counts["by_status"][status] = self.counts["by_status"].get(status, 0) + 1
        now = time.time()
        return self.event(
            "image", path=change.path, image_id=record.sha256, status=status,
            error=record.error or embed_error, duplicate_of=None if repeat is None else repeat[0],
            duplicate_of_path=None if repeat is None else repeat[1], **fields, novel=novel if novelty is not None
            else None, near_duplicate=near, flags=flags, model=self.model_name, backbone=self.backbone,
            given_label=self._folder_label(change.path), size=record.size, format=record.format,
            width=record.width, height=record.height, file_closed_at=_iso(change.at), detected_at=_iso(change.detected_at),
            timings_ms={"queued": round(1000 * max(0.0, started - change.detected_at), 2),
                        "validate": round(validate_ms, 2), "embed": round(embed_ms, 2),
                        "total": round(1000 * max(0.0, now - (change.at or change.detected_at)), 2)},
            _vector=vector)

    def _drift_events(self, events: list[dict]) -> list[dict]:
        extra: list[dict] = []
        for event in events:
            vector = event.pop("_vector", None)
            if self.drift is None or vector is None or event.get("duplicate_of"):
                continue
            try:
                report = self.drift.add(vector, uncertain=bool(event.get("uncertain")), novel=bool(event.get("novel")),
                                        label=event.get("label"))
            except InputError as exc:  # e.g. a vector of another width: drift stops, the watch goes on
                _log.warning("drift monitoring stopped: %s", exc)
                self.drift, self.drift_note = None, f"drift monitoring stopped: {exc}"
                continue
            if report is None:
                continue
            payload = report.to_dict()
            self.counts["drift_reports"] += 1
            extra.append(self.event("drift", **payload))
            if report.alarm and not self._alarm:
                self.counts["alarms"] += 1
                extra.append(self.event("alarm", **payload))
            self._alarm = bool(report.alarm)
        return extra

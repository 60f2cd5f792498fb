"""Run ingest: decide which files need work, validate them in a process pool, commit as results arrive.

Resumable by construction: results are committed every second or so, and a file whose path, size and
mtime match the catalog is never decoded again, so a re-run after a kill finishes only what was left.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field

from ..catalog import Catalog
from ..errors import InputError
from ..fileio import stat_key
from ..progress import resolve_progress
from .sources import Source, SourceItem, resolve_sources
from .validate import FileRecord, ValidationLimits, validate_file
from ..config import build_config
from ..processes import kill_pool, worker_pool

_log = logging.getLogger(__name__)

# validated files are committed in batches: a kill loses at most this many files or seconds of work
COMMIT_EVERY_FILES = 256
COMMIT_EVERY_S = 0.5


@dataclass(frozen=True)
class IngestConfig:
    """How ingest runs. Every field can be set from the CLI; the resolved config is saved with the run."""

    labels_from_folders: bool = False  # first folder level below a source folder is the label
    include: tuple[str, ...] = ()  # glob patterns on the relative path or file name; empty = image extensions
    exclude: tuple[str, ...] = ()
    path_column: str | None = None  # manifest column with the paths (default: path/file/filename/...)
    label_column: str | None = None  # manifest column with the labels (default: label/class/...)
    workers: int | None = None  # processes; None = all cores
    files_per_task: int = 16  # files sent to a worker at once (amortises inter-process overhead)
    max_pixels: int = ValidationLimits.max_pixels
    max_bytes: int = ValidationLimits.max_bytes
    min_side: int = ValidationLimits.min_side
    timeout_s: float = ValidationLimits.timeout_s  # per file
    phash: bool = True

    def __post_init__(self):
        checks = [("workers", self.workers, 1, self.workers is not None), ("files_per_task", self.files_per_task, 1, True),
                  ("max_pixels", self.max_pixels, 1, True), ("max_bytes", self.max_bytes, 1, True),
                  ("min_side", self.min_side, 1, True)]
        for name, value, minimum, applies in checks:
            if applies and (not isinstance(value, int) or value < minimum):
                raise InputError(f"The {name!r} parameter of IngestConfig must be an integer >= {minimum}. "
                                 f"Got {value!r} instead.")
        if not self.timeout_s or self.timeout_s <= 0:
            raise InputError(f"The 'timeout_s' parameter of IngestConfig must be > 0 seconds. Got {self.timeout_s!r} instead.")

    @property
    def limits(self) -> ValidationLimits:
        return ValidationLimits(max_pixels=self.max_pixels, max_bytes=self.max_bytes, min_side=self.min_side,
                                timeout_s=self.timeout_s, phash=self.phash)


@dataclass
class IngestResult:
    run_id: int
    files_seen: int = 0  # paths listed by the sources
    validated: int = 0  # decoded in this run (new or changed)
    new: int = 0
    changed: int = 0
    unchanged: int = 0  # skipped by the path + size + mtime fast path
    missing: int = 0  # seen before, gone now
    by_status: dict = field(default_factory=dict)  # status of every file listed in this run
    # Files in source folders left out for their extension (not an image's, and no include patterns),
    # by lower-cased extension ("" = none), most common first: {".bin": 40, ".txt": 3}. Not in files_seen.
    skipped_by_extension: dict = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def files_per_s(self) -> float:
        return self.files_seen / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def skipped(self) -> int:
        """How many files the folder walk left out for their extension."""
        return sum(self.skipped_by_extension.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "skipped": self.skipped, "files_per_s": round(self.files_per_s, 1)}


def _validate_chunk(paths: Sequence[str], limits: ValidationLimits) -> list[dict]:
    return [validate_file(path, limits).to_dict() for path in paths]


def _worker_init() -> None:
    # Each worker decodes one image at a time; extra decoder threads would only fight over the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # C decoders (libtiff, libjpeg) print their complaints straight to fd 2; each one already becomes a
    # status with a message, so the terminal (and the progress bar) stays clean.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _new_pool(workers: int) -> ProcessPoolExecutor:
    # fork on Linux: workers start in milliseconds, and scripts without an `if __name__ == "__main__":`
    # guard keep working (forkserver and spawn re-import the caller's main module). Workers only run
    # Pillow and hashlib, so threads the parent may hold (torch, SQLite) are never touched in the child.
    # macOS: fork is unsafe with system frameworks, so spawn.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return worker_pool(workers, method=method, initializer=_worker_init)


def _crashed_record(path: str, reason: str) -> dict:
    size = mtime = None
    try:
        st = os.stat(path)
        size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        pass
    record = FileRecord(path, size, mtime, "corrupt", reason)
    try:
        with open(path, "rb") as handle:
            record.sha256 = hashlib.sha256(handle.read()).hexdigest()
    except OSError as exc:
        record.status, record.error = "unreadable", f"cannot read the file ({exc})"
    return record.to_dict()


class _PoolRunner:
    """Feeds chunks to a process pool, survives crashed or hung workers, yields record dicts."""

    def __init__(self, workers: int, limits: ValidationLimits, files_per_task: int):
        self.workers = workers
        self.limits = limits
        self.files_per_task = files_per_task
        # No result at all for this long means a worker is stuck in C code past the per-file alarm.
        self.stall_s = max(120.0, 4 * limits.timeout_s)

    def run(self, paths: Sequence[str]) -> Iterable[list[dict]]:
        chunks = [list(paths[i:i + self.files_per_task]) for i in range(0, len(paths), self.files_per_task)]
        pending = list(reversed(chunks))
        pool = _new_pool(self.workers)
        in_flight: dict[Future, list[str]] = {}
        try:
            while pending or in_flight:
                while pending and len(in_flight) < self.workers * 3:
                    chunk = pending.pop()
                    in_flight[pool.submit(_validate_chunk, chunk, self.limits)] = chunk
                done, _ = wait(in_flight, timeout=self.stall_s, return_when=FIRST_COMPLETED)
                if not done:
                    suspects = [p for chunk in in_flight.values() for p in chunk]
                    _log.warning("no worker answered for %.0f s; re-checking %d files one at a time",
                                 self.stall_s, len(suspects))
                    kill_pool(pool)
                    in_flight.clear()
                    yield from self._isolate(suspects)
                    pool = _new_pool(self.workers)
                    continue
                broken: list[str] = []
                for future in done:
                    chunk = in_flight.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        broken.extend(chunk)
                if broken:
                    # A decoder crashed the worker (segfault, abort); every chunk in flight is lost with it.
                    broken.extend(p for chunk in in_flight.values() for p in chunk)
                    in_flight.clear()
                    kill_pool(pool)
                    _log.warning("a worker crashed; re-checking %d files one at a time", len(broken))
                    yield from self._isolate(broken)
                    pool = _new_pool(self.workers)
        finally:
            if in_flight:  # interrupted (Ctrl-C, or the consumer stopped): don't wait for stragglers
                kill_pool(pool)
            else:
                pool.shutdown(wait=True)

    def _isolate(self, paths: Sequence[str]) -> Iterable[list[dict]]:
        """Each suspect file alone in a fresh process, so a crash or hang is pinned to one file."""
        for path in paths:
            pool = _new_pool(1)
            future = pool.submit(_validate_chunk, [path], self.limits)
            try:
                yield future.result(timeout=2 * self.limits.timeout_s + 30)
                pool.shutdown(wait=True)
            except BrokenProcessPool:
                kill_pool(pool)
                yield [_crashed_record(path, "the image decoder crashed on this file; re-export the image "
                                             "from its source (the file itself was not changed)")]
            except TimeoutError:
                kill_pool(pool)
                yield [_crashed_record(path, f"decoding did not finish within {2 * self.limits.timeout_s + 30:.0f} s; "
                                             "re-export the image from its source")]


def ingest(catalog: Catalog, sources=None, *, manifest=None, config: IngestConfig | None = None,
           progress="auto", **overrides) -> IngestResult:
    """Validate and catalogue every file of the sources. See :class:`IngestConfig` for the options."""
    config = build_config(IngestConfig, config, {k: (tuple(v) if k in ("include", "exclude") and v is not None
                                                     else v) for k, v in overrides.items()}, stage="ingest")
    started = time.monotonic()
    resolved = resolve_sources(sources, manifest=manifest, labels_from_folders=config.labels_from_folders,
                               include=config.include, exclude=config.exclude, path_column=config.path_column,
                               label_column=config.label_column)
    run_config = {**asdict(config), "sources": [s.key for s in resolved]}
    with catalog.run("ingest", run_config, inputs={"sources": [s.key for s in resolved]}) as run:
        result = IngestResult(run_id=run.id)
        callback, close_progress = resolve_progress(progress, "ingest")
        try:
            _ingest_sources(catalog, resolved, config, result, callback)
        finally:
            close_progress()
            result.elapsed_s = time.monotonic() - started
            run.counts.update(result.to_dict())
    return result


def _ingest_sources(catalog: Catalog, sources: list[Source], config: IngestConfig, result: IngestResult,
                    progress) -> None:
    # One entry per path; a path listed twice keeps its first source's label.
    items: dict[str, tuple[Source, SourceItem]] = {}
    for source in sources:
        for item in source.items:
            items.setdefault(item.path, (source, item))
    result.files_seen = len(items)
    # Summed per folder: a skipped file below two of the given folders (one inside the other) counts twice,
    # since the walk keeps counts, not the paths (a folder may hold millions of non-image files).
    skipped: dict[str, int] = {}
    for source in sources:
        for ext, count in source.skipped_by_extension.items():
            skipped[ext] = skipped.get(ext, 0) + count
    result.skipped_by_extension = dict(sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
    known = catalog.lookup_paths(list(items))

    to_validate: list[str] = []
    unchanged: dict[str, list[tuple[str, str | None, dict | None]]] = {}
    for path, (source, item) in items.items():
        row = known.get(path)
        key = stat_key(path)
        if row is not None and key is not None and row["status"] != "unreadable" and (row["size"], row["mtime_ns"]) == key:
            unchanged.setdefault(source.key, []).append((path, item.label, item.metadata or None))
            result.by_status[row["status"]] = result.by_status.get(row["status"], 0) + 1
        else:
            to_validate.append(path)
            if row is None:
                result.new += 1
            else:
                result.changed += 1
    for source_key, entries in unchanged.items():
        for start in range(0, len(entries), 2000):
            catalog.touch_unchanged(entries[start:start + 2000], source_key, result.run_id)
    result.unchanged = sum(len(v) for v in unchanged.values())

    total = len(items)
    done = result.unchanged
    progress(done, total)
    if to_validate:
        workers = config.workers or os.cpu_count() or 1
        runner = _PoolRunner(min(workers, max(1, len(to_validate) // config.files_per_task + 1)), config.limits,
                             config.files_per_task)
        buffer: list[dict] = []
        last_commit = time.monotonic()
        for records in runner.run(to_validate):
            buffer.extend(records)
            done += len(records)
            progress(done, total)
            if len(buffer) >= COMMIT_EVERY_FILES or time.monotonic() - last_commit > COMMIT_EVERY_S:
                _commit(catalog, buffer, items, result)
                buffer, last_commit = [], time.monotonic()
        _commit(catalog, buffer, items, result)

    for source in sources:
        if not source.complete:
            continue
        listed = {path for path, (src, _) in items.items() if src.key == source.key}
        gone = [p for p in catalog.paths_of_source(source.key) if p not in listed and not os.path.lexists(p)]
        if gone:
            catalog.mark_missing(gone, result.run_id)
            result.missing += len(gone)


def _commit(catalog: Catalog, records: list[dict], items: dict, result: IngestResult) -> None:
    if not records:
        return
    by_source: dict[str, list] = {}
    for record in records:
        source, item = items[record["path"]]
        by_source.setdefault(source.key, []).append((record, item.label, item.metadata or None))
        result.by_status[record["status"]] = result.by_status.get(record["status"], 0) + 1
        result.validated += 1
    for source_key, rows in by_source.items():
        catalog.write_records(rows, source_key, result.run_id)

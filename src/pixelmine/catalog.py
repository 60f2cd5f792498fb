"""The workspace catalog: one SQLite file (WAL) that records images, paths, runs and, later, findings.

Images are keyed by the sha256 of their bytes; a path is where those bytes were seen. The catalog never
stores pixels. The schema carries a version and a list of migrations, applied in order on open.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone

from ._version import __version__
from .errors import SchemaVersionError, WorkspaceError
from .runs import RunRecord, outcome
from .fileio import json_default

# Each entry moves the schema from version i to i+1. Never edit a released entry: append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE images (
        id          TEXT PRIMARY KEY,          -- sha256 of the file's bytes, hex
        size        INTEGER NOT NULL,          -- bytes
        format      TEXT,                      -- Pillow's format name (JPEG, PNG, ...)
        width       INTEGER,
        height      INTEGER,
        mode        TEXT,                      -- Pillow colour mode (RGB, L, CMYK, I;16, P, RGBA, ...)
        bit_depth   INTEGER,                   -- bits per channel sample
        orientation INTEGER,                   -- EXIF orientation tag 1..8, NULL when absent
        frames      INTEGER,                   -- 1 for still images
        phash       TEXT,                      -- 64-bit perceptual hash, hex
        status      TEXT NOT NULL,             -- see pixelmine.ingest.STATUSES
        error       TEXT,                      -- what is wrong and what to do, for status != ok
        label       TEXT,                      -- agreed label of its present paths (NULL on conflict)
        split       TEXT,                      -- train / val / test, set by the learn stage
        metadata    TEXT NOT NULL DEFAULT '{}',-- JSON object from the manifest's extra columns
        first_seen  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE INDEX images_status ON images(status);
    CREATE INDEX images_label ON images(label);

    CREATE TABLE paths (
        path       TEXT PRIMARY KEY,           -- absolute path as discovered (symlinks not resolved)
        image_id   TEXT REFERENCES images(id), -- NULL when the file could not be read
        source     TEXT NOT NULL,              -- the folder, manifest or 'paths' it came from
        size       INTEGER,
        mtime_ns   INTEGER,
        status     TEXT NOT NULL,
        error      TEXT,
        label      TEXT,
        metadata   TEXT NOT NULL DEFAULT '{}',
        present    INTEGER NOT NULL DEFAULT 1, -- 0 once the file is gone from disk
        last_run   INTEGER,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX paths_image ON paths(image_id);
    CREATE INDEX paths_source ON paths(source);
    CREATE INDEX paths_status ON paths(status);

    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        kind        TEXT NOT NULL,             -- ingest, extract, train, discover, ...
        config      TEXT NOT NULL,             -- JSON of the resolved configuration
        version     TEXT NOT NULL,             -- pixelmine version
        status      TEXT NOT NULL,             -- running, completed, failed, interrupted
        pid         INTEGER,
        host        TEXT,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        counts      TEXT NOT NULL DEFAULT '{}',
        metrics     TEXT NOT NULL DEFAULT '{}',
        error       TEXT
    );
    """,
    # 2: discovery findings (one schema for every finder) and label corrections made by people.
    """
    CREATE TABLE findings (
        run_id   INTEGER NOT NULL REFERENCES runs(id),
        image_id TEXT NOT NULL,
        kind     TEXT NOT NULL,             -- near_duplicate, outlier, label_issue, blurry, ...
        score    REAL NOT NULL,             -- 0..1, low = severe
        is_issue INTEGER NOT NULL,          -- 1 when the finder flags the image
        details  TEXT NOT NULL DEFAULT '{}',-- JSON: group id, neighbour ids, suggested label, ...
        PRIMARY KEY (run_id, kind, image_id)
    );
    CREATE INDEX findings_kind ON findings(kind, is_issue, score);
    CREATE INDEX findings_image ON findings(image_id);

    CREATE TABLE label_corrections (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        image_id   TEXT NOT NULL,
        old_label  TEXT,
        new_label  TEXT,                    -- NULL: the image is to be ignored (excluded from training)
        action     TEXT NOT NULL,           -- relabel, accept, ignore
        source     TEXT NOT NULL,           -- cli, api, web
        created_at TEXT NOT NULL
    );
    CREATE INDEX label_corrections_image ON label_corrections(image_id);
    """,
    # 3: images that ingest accepted but that failed to decode when features were extracted.
    """
    CREATE TABLE extract_errors (
        image_id    TEXT NOT NULL,
        fingerprint TEXT NOT NULL,          -- backbone + preprocessing fingerprint of the feature cache
        backbone    TEXT NOT NULL,          -- registry name, e.g. mobilenet_v2
        path        TEXT,                   -- the path that was read
        error       TEXT NOT NULL,          -- what went wrong and what to do
        run_id      INTEGER,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (image_id, fingerprint)
    );
    CREATE INDEX extract_errors_backbone ON extract_errors(backbone);
    """,
    # 4: what each run read (a feature fingerprint, the set of image ids, a model), to compare runs.
    """
    ALTER TABLE runs ADD COLUMN inputs TEXT NOT NULL DEFAULT '{}';
    """,
    # 5: what `pixelmine watch` saw, one row per event (image arrived, file missing, drift, ...), tailed by
    # the HTTP server's event stream.
    """
    CREATE TABLE events (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        type       TEXT NOT NULL,          -- image, missing, drift, alarm, watch_started, watch_stopped
        path       TEXT,
        image_id   TEXT,
        payload    TEXT NOT NULL DEFAULT '{}' -- JSON: the whole event as it was emitted
    );
    CREATE INDEX events_type ON events(type, id);
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)

_log = logging.getLogger(__name__)

# SQLite caps host parameters per statement; stay well below every build's limit.
_CHUNK = 500


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements (executescript would commit our open transaction)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip():
        yield pending


def _chunks(items: Sequence, size: int = _CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Catalog:
    """Access to ``catalog.sqlite``. One instance per process and thread; cheap to open."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except sqlite3.Error as exc:
            raise WorkspaceError(f"cannot open the catalog {self.path!r}: {exc}; check the path and permissions") from exc
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute("PRAGMA busy_timeout = 60000")
            self._conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            storage = _storage_error(exc, self.path)
            if storage is not None:
                raise storage from exc
            raise WorkspaceError(
                f"the catalog {self.path!r} is damaged ({exc}); it is left as it is. It cannot be rebuilt from the "
                "workspace: restore it from a backup, or move it away and run pixelmine ingest again (labels "
                "corrected by people are in it too)") from exc
        # NORMAL is durable across application crashes in WAL mode; only an OS crash may lose the last commit.
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    # -- plumbing ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (BEGIN IMMEDIATE) so concurrent writers queue, not deadlock."""
        for attempt in range(50):
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    storage = _storage_error(exc, self.path)
                    if storage is not None:
                        raise storage from exc
                    raise
                time.sleep(0.1 * (attempt + 1))
        else:
            raise WorkspaceError(f"the catalog {self.path!r} stayed locked by another process; try again")
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):  # after a failed COMMIT SQLite may have rolled back itself
                self._conn.execute("ROLLBACK")
            storage = _storage_error(exc, self.path)
            if storage is not None:
                raise storage from exc
            raise

    def query(self, sql: str, params: Iterable = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            current = int(row["value"]) if row else 0
            if current > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"the catalog {self.path!r} has schema version {current}, newer than this pixelmine "
                    f"({__version__}, schema {SCHEMA_VERSION}); upgrade pixelmine: pip install -U pixelmine")
            for version in range(current, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement)
            if current != SCHEMA_VERSION:
                conn.execute("INSERT INTO meta(key, value) VALUES('schema_version', ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))

    def schema_version(self) -> int:
        return int(self.query("SELECT value FROM meta WHERE key = 'schema_version'")[0]["value"])

    # -- runs -------------------------------------------------------------------------------------
    @contextmanager
    def run(self, kind: str, config: dict, *, inputs: dict | None = None) -> Iterator[RunRecord]:
        """Record a run of ``kind`` around the block; see :mod:`pixelmine.runs` for the rules."""
        record = RunRecord(self._start_run(kind, config, inputs or {}), kind, inputs=dict(inputs or {}))
        try:
            yield record
        except BaseException as exc:
            record.status, record.error = outcome(exc)
            try:
                self._finish_run(record)
            except WorkspaceError as unrecorded:  # e.g. the disk that stopped the run is still full
                _log.warning("run %d could not be marked %s (%s); the next run will mark it interrupted",
                             record.id, record.status, unrecorded)
            raise
        record.status, record.error = outcome(None)
        self._finish_run(record)

    def _start_run(self, kind: str, config: dict, inputs: dict) -> int:
        self._mark_dead_runs_interrupted()
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO runs(kind, config, inputs, version, status, pid, host, started_at) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (kind, json.dumps(config, sort_keys=True, default=json_default),
                 json.dumps(inputs, sort_keys=True, default=json_default), __version__, "running", os.getpid(),
                 socket.gethostname(), utc_now()))
            return int(cursor.lastrowid)

    def _finish_run(self, record: RunRecord) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE runs SET status=?, finished_at=?, inputs=?, counts=?, metrics=?, error=? WHERE id=?",
                         (record.status, utc_now(), json.dumps(record.inputs, sort_keys=True, default=json_default),
                          json.dumps(record.counts, sort_keys=True, default=json_default),
                          json.dumps(record.metrics, sort_keys=True, default=json_default), record.error, record.id))

    def _mark_dead_runs_interrupted(self) -> None:
        host = socket.gethostname()
        rows = self.query("SELECT id, pid FROM runs WHERE status = 'running' AND host = ?", (host,))
        dead = [row["id"] for row in rows if not _pid_alive(row["pid"])]
        if dead:
            with self.transaction() as conn:
                conn.executemany("UPDATE runs SET status='interrupted', finished_at=? WHERE id=?",
                                 [(utc_now(), run_id) for run_id in dead])

    def runs(self, kind: str | None = None, limit: int = 50) -> list[dict]:
        sql = "SELECT * FROM runs" + (" WHERE kind = ?" if kind else "") + " ORDER BY id DESC LIMIT ?"
        rows = self.query(sql, ((kind,) if kind else ()) + (limit,))
        result = []
        for row in rows:
            item = dict(row)
            for key in ("config", "counts", "metrics", "inputs"):
                item[key] = json.loads(item[key])
            result.append(item)
        return result

    # -- paths and images -------------------------------------------------------------------------
    def lookup_paths(self, paths: Sequence[str]) -> dict[str, sqlite3.Row]:
        found: dict[str, sqlite3.Row] = {}
        for chunk in _chunks(list(paths)):
            marks = ",".join("?" * len(chunk))
            for row in self.query(f"SELECT path, size, mtime_ns, status, image_id, label, metadata, present "
                                  f"FROM paths WHERE path IN ({marks})", chunk):
                found[row["path"]] = row
        return found

    def paths_of_source(self, source: str) -> list[str]:
        return [row["path"] for row in self.query("SELECT path FROM paths WHERE source = ? AND present = 1", (source,))]

    def mark_missing(self, paths: Sequence[str], run_id: int) -> None:
        now = utc_now()
        with self.transaction() as conn:
            conn.executemany("UPDATE paths SET present = 0, last_run = ?, updated_at = ? WHERE path = ?",
                             [(run_id, now, path) for path in paths])
            image_ids = [row[0] for chunk in _chunks(list(paths)) for row in conn.execute(
                f"SELECT DISTINCT image_id FROM paths WHERE image_id IS NOT NULL AND path IN ({','.join('?' * len(chunk))})",
                tuple(chunk))]
            self._refresh_image_labels(conn, image_ids)

    def touch_unchanged(self, entries: Sequence[tuple[str, str | None, dict | None]], source: str, run_id: int) -> int:
        """Record that unchanged files were seen again; apply new labels/metadata. Returns rows changed."""
        changed_images: list[str] = []
        now = utc_now()
        with self.transaction() as conn:
            for path, label, metadata in entries:
                row = conn.execute("SELECT image_id, label, metadata, present, source FROM paths WHERE path = ?",
                                   (path,)).fetchone()
                new_label = label if label is not None else row["label"]
                new_meta = json.dumps(metadata, sort_keys=True) if metadata else row["metadata"]
                if (new_label, new_meta, 1, source) != (row["label"], row["metadata"], row["present"], row["source"]):
                    conn.execute("UPDATE paths SET label=?, metadata=?, present=1, source=?, updated_at=? WHERE path=?",
                                 (new_label, new_meta, source, now, path))
                    if row["image_id"]:
                        changed_images.append(row["image_id"])
            self._refresh_image_labels(conn, changed_images)
        return len(changed_images)

    def write_records(self, records: Sequence[tuple[dict, str | None, dict | None]], source: str, run_id: int) -> None:
        """Store validated files: ``(record_dict, label, metadata)`` triples, in one transaction."""
        now = utc_now()
        image_ids: list[str] = []
        with self.transaction() as conn:
            for record, label, metadata in records:
                image_id = record["sha256"]
                if image_id is not None:
                    image_ids.append(image_id)
                    conn.execute(
                        """INSERT INTO images(id, size, format, width, height, mode, bit_depth, orientation, frames,
                                              phash, status, error, first_seen, updated_at)
                           VALUES (:sha256, :size, :format, :width, :height, :mode, :bit_depth, :orientation,
                                   :frames, :phash, :status, :error, :now, :now)
                           ON CONFLICT(id) DO UPDATE SET
                               format=excluded.format, width=excluded.width, height=excluded.height,
                               mode=excluded.mode, bit_depth=excluded.bit_depth, orientation=excluded.orientation,
                               frames=excluded.frames, phash=COALESCE(excluded.phash, images.phash),
                               status=excluded.status, error=excluded.error, updated_at=excluded.updated_at
                           WHERE images.status IS NOT excluded.status OR images.error IS NOT excluded.error
                                 OR images.phash IS NULL AND excluded.phash IS NOT NULL""",
                        {**record, "now": now})
                previous = conn.execute("SELECT image_id, label, metadata FROM paths WHERE path = ?",
                                        (record["path"],)).fetchone()
                if previous is not None and previous["image_id"] and previous["image_id"] != image_id:
                    image_ids.append(previous["image_id"])  # its old content lost a path
                keep_label = label if label is not None else (previous["label"] if previous else None)
                keep_meta = (json.dumps(metadata, sort_keys=True) if metadata
                             else (previous["metadata"] if previous else "{}"))
                conn.execute(
                    """INSERT INTO paths(path, image_id, source, size, mtime_ns, status, error, label, metadata,
                                         present, last_run, updated_at)
                       VALUES (?,?,?,?,?,?,?,?,?,1,?,?)
                       ON CONFLICT(path) DO UPDATE SET
                           image_id=excluded.image_id, source=excluded.source, size=excluded.size,
                           mtime_ns=excluded.mtime_ns, status=excluded.status, error=excluded.error,
                           label=excluded.label, metadata=excluded.metadata, present=1,
                           last_run=excluded.last_run, updated_at=excluded.updated_at""",
                    (record["path"], image_id, source, record["size"], record["mtime_ns"], record["status"],
                     record["error"], keep_label, keep_meta, run_id, now))
            self._refresh_image_labels(conn, image_ids)

    @staticmethod
    def _refresh_image_labels(conn: sqlite3.Connection, image_ids: Sequence[str]) -> None:
        """An image's label and metadata follow its present paths; conflicting labels leave it NULL."""
        unique = sorted(set(image_ids))
        for chunk in _chunks(unique):
            marks = ",".join("?" * len(chunk))
            conn.execute(
                f"""UPDATE images SET
                        label = (SELECT CASE WHEN COUNT(DISTINCT p.label) = 1 THEN MAX(p.label) END
                                 FROM paths p WHERE p.image_id = images.id AND p.present = 1 AND p.label IS NOT NULL),
                        metadata = COALESCE((SELECT p.metadata FROM paths p
                                             WHERE p.image_id = images.id AND p.present = 1
                                             ORDER BY p.updated_at DESC, p.path LIMIT 1), '{{}}')
                    WHERE id IN ({marks})""", tuple(chunk))

    def paths_under(self, folder: str) -> list[str]:
        """Present paths inside ``folder`` (an absolute path), whatever source catalogued them."""
        prefix = folder.rstrip(os.sep) + os.sep
        return [row["path"] for row in self.query(
            "SELECT path FROM paths WHERE present = 1 AND substr(path, 1, ?) = ?", (len(prefix), prefix))]

    # -- events (pixelmine watch) -----------------------------------------------------------------
    def add_events(self, events: list[dict]) -> list[int]:
        """Store events in one transaction; sets each ``event["id"]`` and returns the ids, in order."""
        ids: list[int] = []
        with self.transaction() as conn:
            for event in events:
                cursor = conn.execute("INSERT INTO events(created_at, type, path, image_id) VALUES (?,?,?,?)",
                                      (event.get("at") or utc_now(), event["type"], event.get("path"),
                                       event.get("image_id")))
                event["id"] = int(cursor.lastrowid)
                # the payload carries its own id, so a reader of the payload alone can resume after it
                conn.execute("UPDATE events SET payload = ? WHERE id = ?",
                             (json.dumps(event, default=json_default), event["id"]))
                ids.append(event["id"])
        return ids

    def events_after(self, event_id: int = 0, *, limit: int = 500, types: tuple[str, ...] | None = None) -> list[dict]:
        """Events with an id above ``event_id``, oldest first (at most ``limit``), optionally of ``types`` only."""
        sql, params = "SELECT id, payload FROM events WHERE id > ?", [int(event_id)]
        if types:
            sql += f" AND type IN ({','.join('?' * len(types))})"
            params += list(types)
        sql += " ORDER BY id LIMIT ?"
        params.append(int(limit))
        result = []
        for row in self.query(sql, params):
            event = json.loads(row["payload"])
            event["id"] = row["id"]
            result.append(event)
        return result

    def latest_event_id(self) -> int:
        """The id of the newest event, 0 when there is none."""
        return int(self.query("SELECT COALESCE(MAX(id), 0) FROM events")[0][0])

    # -- reading ----------------------------------------------------------------------------------
    def images(self, *, status: str | None = "ok", label: str | None = None, limit: int | None = None,
               offset: int = 0) -> list[dict]:
        """Images with at least one present path, one dict each, with ``path`` = one of those paths."""
        where, params = ["EXISTS (SELECT 1 FROM paths p WHERE p.image_id = i.id AND p.present = 1)"], []
        if status is not None:
            where.append("i.status = ?")
            params.append(status)
        if label is not None:
            where.append("i.label = ?")
            params.append(label)
        sql = ("SELECT i.*, (SELECT MIN(p.path) FROM paths p WHERE p.image_id = i.id AND p.present = 1) AS path "
               f"FROM images i WHERE {' AND '.join(where)} ORDER BY i.id")
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        rows = []
        for row in self.query(sql, params):
            item = dict(row)
            item["metadata"] = json.loads(item["metadata"])
            rows.append(item)
        return rows

    def files(self, status: str | None = None) -> list[dict]:
        """Paths with their status and reason. ``status='missing'`` lists files gone since they were seen."""
        if status == "missing":
            rows = self.query("SELECT * FROM paths WHERE present = 0 ORDER BY path")
        elif status is None:
            rows = self.query("SELECT * FROM paths WHERE present = 1 ORDER BY path")
        else:
            rows = self.query("SELECT * FROM paths WHERE present = 1 AND status = ? ORDER BY path", (status,))
        result = []
        for row in rows:
            item = dict(row)
            item["metadata"] = json.loads(item["metadata"])
            if not item["present"]:
                item["status"], item["error"] = "missing", "the file is no longer on disk; it was seen in an earlier run"
            result.append(item)
        return result

    def summary(self) -> dict:
        """Counts by status, label and format; exact duplicates; conflicting labels."""
        present = "EXISTS (SELECT 1 FROM paths p WHERE p.image_id = i.id AND p.present = 1)"
        by_status_files = {r[0]: r[1] for r in self.query(
            "SELECT status, COUNT(*) FROM paths WHERE present = 1 GROUP BY status ORDER BY 2 DESC")}
        missing = self.query("SELECT COUNT(*) FROM paths WHERE present = 0")[0][0]
        if missing:
            by_status_files["missing"] = missing
        by_status_images = {r[0]: r[1] for r in self.query(
            f"SELECT status, COUNT(*) FROM images i WHERE {present} GROUP BY status ORDER BY 2 DESC")}
        by_label = {("(unlabelled)" if r[0] is None else r[0]): r[1] for r in self.query(
            f"SELECT label, COUNT(*) FROM images i WHERE {present} AND status = 'ok' GROUP BY label ORDER BY 2 DESC")}
        by_format = {("(unknown)" if r[0] is None else r[0]): r[1] for r in self.query(
            f"SELECT format, COUNT(*) FROM images i WHERE {present} GROUP BY format ORDER BY 2 DESC")}
        duplicate_rows = self.query(
            """SELECT image_id, COUNT(*) AS n, GROUP_CONCAT(path, char(10)) AS paths FROM
                   (SELECT image_id, path FROM paths WHERE present = 1 AND image_id IS NOT NULL ORDER BY path)
               GROUP BY image_id HAVING n > 1 ORDER BY n DESC, image_id""")
        duplicates = [{"image_id": r["image_id"], "paths": r["paths"].split("\n")} for r in duplicate_rows]
        conflict_rows = self.query(
            """SELECT image_id, GROUP_CONCAT(DISTINCT label) AS labels FROM paths
               WHERE present = 1 AND image_id IS NOT NULL AND label IS NOT NULL
               GROUP BY image_id HAVING COUNT(DISTINCT label) > 1 ORDER BY image_id""")
        conflicts = [{"image_id": r["image_id"], "labels": sorted(r["labels"].split(","))} for r in conflict_rows]
        return {
            "files": sum(v for k, v in by_status_files.items() if k != "missing"),
            "images": sum(by_status_images.values()),
            "files_by_status": by_status_files,
            "images_by_status": by_status_images,
            "images_by_label": by_label,
            "images_by_format": by_format,
            "exact_duplicates": duplicates,
            "label_conflicts": conflicts,
        }


# SQLite's words for a write the storage refused, and what they mean
_SQLITE_STORAGE = {"database or disk is full": "full", "disk i/o error": "failing", "readonly database": "read-only"}


def _storage_error(exc: BaseException, path: str):
    """StorageError for a full, failing or read-only disk under the catalog (SQLite's errors or an OSError)."""
    from .errors import StorageError
    from .fileio import storage_error, storage_message

    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        for words, problem in _SQLITE_STORAGE.items():
            if words in text:
                return StorageError(storage_message(path, problem), path=path)
        return None
    return storage_error(exc, path)


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

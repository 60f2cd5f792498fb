"""When is a file in a watched folder complete? Two sources answer, both feeding one bounded queue.

* ``inotify`` (Linux, through watchdog): a file is complete when its writer closes it after writing
  (IN_CLOSE_WRITE, watchdog's ``on_closed``) or when it is renamed or moved into place (IN_MOVED_TO).
  ``on_created`` is never used: it fires when the file is opened, before a byte is written (measured:
  100 of 100 files caught half-written).
* ``polling``: the folders are listed every ``interval_s``; a file is complete once its size and mtime have
  stayed the same for ``settle_s``. Network mounts (NFS, SMB, sshfs and other FUSE mounts, 9p, virtiofs)
  send no inotify events for changes made by other machines, so ``auto`` polls there.

``auto`` picks inotify on Linux when watchdog is installed and every folder is on a local file system (the
mount's type in /proc/mounts), else polling. Overlay file systems (containers) stay on inotify: writes made
through the overlay raise events like any local write; only changes to a lower layer made from outside
would not, which ordinary use does not do.

Temporary names are never reported: ``*.part``, ``*.tmp``, ``*.crdownload``, ``*.partial``, ``*.download``,
``*.swp``, names starting with ``.`` or ``~`` or ending with ``~``, and files below hidden folders. A
``.part`` file renamed to its final name is reported once, under that name, by the rename.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import InputError
from ..fileio import stat_key
from ..ingest.sources import IMAGE_EXTENSIONS

_log = logging.getLogger(__name__)

MODES = ("auto", "inotify", "polling")
TEMPORARY_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".download", ".swp", ".temp", "~")
# mount types whose changes made elsewhere raise no inotify event on this machine
NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "virtiofs", "afs", "ceph",
                       "glusterfs", "lustre", "gpfs", "davfs", "ncpfs", "vboxsf", "vmhgfs", "prl_fs"}
POLL_INTERVAL_S = 0.2  # listing period of the polling source (stretched on trees that take longer to list)
SETTLE_TICK_S = 0.1  # how often the inotify source re-checks files it must see settle


@dataclass(frozen=True)
class FileChange:
    """What a source saw. ``kind``: ``ready`` (a complete file), ``gone`` (a file deleted or moved away) or
    ``gone_tree`` (a folder moved away: every catalogued file below it is gone)."""

    kind: str
    path: str
    at: float | None  # time.time() of the writer's close or rename, when the source saw that itself
    detected_at: float  # time.time() when the source reported it (for polling: when the file settled)


def is_candidate(path: str, roots: Sequence[str] = ()) -> bool:
    """True for a file name pixelmine would catalogue: an image extension, no temporary or hidden name, and
    (below one of ``roots``) no hidden folder on the way."""
    name = os.path.basename(path)
    lowered = name.lower()
    if not name or name.startswith((".", "~")) or lowered.endswith(TEMPORARY_SUFFIXES):
        return False
    if os.path.splitext(lowered)[1] not in IMAGE_EXTENSIONS:
        return False
    for root in roots:
        if path.startswith(root.rstrip(os.sep) + os.sep):
            return not any(part.startswith(".") for part in os.path.relpath(path, root).split(os.sep)[:-1])
    return True


def list_candidates(roots: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Every candidate file below ``roots`` with its (size, mtime_ns), through ingest's own folder walk."""
    from ..ingest.sources import walk_folder

    found: dict[str, tuple[int, int]] = {}
    roots = list(roots)
    for root in roots:
        for item in walk_folder(root):
            if item.path in found or not is_candidate(item.path, roots):
                continue
            key = stat_key(item.path)
            if key is not None:
                found[item.path] = key
    return found


# -- choosing a mode ------------------------------------------------------------------------------------
def mount_type(path: str, mounts_file: str = "/proc/mounts") -> str | None:
    """The file-system type of the mount holding ``path`` (Linux), None when it cannot be told."""
    try:
        with open(mounts_file, encoding="utf-8", errors="replace") as handle:
            rows = [line.split() for line in handle]
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for row in rows:
        if len(row) < 3:
            continue
        point = row[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, row[2]
    return best_type


def _is_network(fs_type: str | None) -> bool:
    return fs_type is not None and (fs_type in NETWORK_FILESYSTEMS or fs_type.startswith("fuse"))


def inotify_available() -> str | None:
    """None when inotify can be used here, else the reason it cannot."""
    if not sys.platform.startswith("linux"):
        return f"inotify is Linux only (this is {sys.platform})"
    try:
        from watchdog.observers.inotify import InotifyObserver  # noqa: F401
    except ImportError as exc:
        return f"watchdog is not installed ({exc}); pip install 'pixelmine[ml]'"
    except Exception as exc:  # noqa: BLE001 - watchdog raises UnsupportedLibcError and OSError here
        return f"inotify cannot be loaded ({type(exc).__name__}: {exc})"
    return None


def choose_mode(dirs: Sequence[str], mode: str = "auto") -> tuple[str, str]:
    """(``inotify`` or ``polling``, why). ``mode`` forces one; ``auto`` polls when inotify is unavailable or a
    folder is on a network or FUSE mount."""
    if mode not in MODES:
        raise InputError(f"The 'mode' parameter of watch must be one of {', '.join(MODES)}. Got {mode!r} instead.")
    problem = inotify_available()
    if mode == "inotify":
        if problem:
            raise InputError(f"cannot watch with inotify: {problem}; use polling instead (--polling)")
        return "inotify", "asked for"
    if mode == "polling":
        return "polling", "asked for"
    if problem:
        return "polling", problem
    for folder in dirs:
        fs_type = mount_type(folder)
        if _is_network(fs_type):
            return "polling", f"{folder} is on a {fs_type} mount, which raises no inotify events for remote writes"
    return "inotify", "local file system"


# -- the queue ------------------------------------------------------------------------------------------
class ChangeQueue:
    """A bounded FIFO of :class:`FileChange`. ``put`` blocks while it is full (back-pressure on the source,
    never a dropped file) and gives up only once ``stopping`` is set, when nothing will read it any more."""

    def __init__(self, maxsize: int, stopping: threading.Event):
        self._queue: queue.Queue[FileChange] = queue.Queue(maxsize=maxsize)
        self.stopping = stopping
        self.high_water = 0  # the most changes waiting at once (a sign of a pipeline slower than arrivals)

    def put(self, change: FileChange) -> bool:
        while not self.stopping.is_set():
            try:
                self._queue.put(change, timeout=0.1)
            except queue.Full:
                continue
            self.high_water = max(self.high_water, self._queue.qsize())
            return True
        return False

    def get(self, timeout: float) -> FileChange | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def get_nowait(self) -> FileChange | None:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def qsize(self) -> int:
        return self._queue.qsize()


class _SettleTracker:
    """Reports a path once its (size, mtime) stayed unchanged for ``settle_s`` of observations."""

    def __init__(self, settle_s: float):
        self.settle_s = settle_s
        self._seen: dict[str, tuple[tuple[int, int], float]] = {}  # path -> (key, unchanged since)
        self._done: dict[str, tuple[int, int]] = {}  # path -> key already reported

    def mark_done(self, path: str, key: tuple[int, int]) -> None:
        self._done[path] = key
        self._seen.pop(path, None)

    def observe(self, path: str, key: tuple[int, int], now: float) -> bool:
        """True when ``path`` just settled (and is new or changed since it was last reported)."""
        if self._done.get(path) == key:
            return False
        previous = self._seen.get(path)
        if previous is None or previous[0] != key:
            self._seen[path] = (key, now)
            return False
        if now - previous[1] >= self.settle_s:
            self.mark_done(path, key)
            return True
        return False

    def forget(self, path: str) -> bool:
        """Drop ``path``; True when it was known (tracked or reported)."""
        known = self._seen.pop(path, None) is not None
        return self._done.pop(path, None) is not None or known

    def pending(self) -> list[str]:
        return list(self._seen)

    def known(self) -> set[str]:
        return set(self._seen) | set(self._done)


# -- the sources ----------------------------------------------------------------------------------------
class FileSource:
    """Reports complete files of ``roots`` into ``changes``. ``start`` begins watching (before the caller's
    reconcile scan, so nothing falls between the scan and the watch); ``prime`` hands over what the scan
    handled; ``settle`` asks for a file to be reported once it is stable; ``stop`` ends and joins the threads."""

    mode = ""

    def __init__(self, roots: Sequence[str], changes: ChangeQueue, *, settle_s: float):
        self.roots = [os.path.abspath(r) for r in roots]
        self.changes = changes
        self.settle_s = settle_s
        self.error: BaseException | None = None  # set when a source thread died; the pipeline re-raises it

    def start(self) -> None:
        raise NotImplementedError

    def prime(self, handled: dict[str, tuple[int, int]]) -> None:
        pass

    def settle(self, paths: Iterable[str]) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _report(self, kind: str, path: str, *, closed: bool = False) -> None:
        """Queue a change; ``closed``: it is the writer's close or rename itself, so its time is known."""
        now = time.time()
        self.changes.put(FileChange(kind, path, now if closed else None, now))


class PollingSource(FileSource):
    """Lists the folders every ``interval_s`` and reports files whose size and mtime have settled."""

    mode = "polling"

    def __init__(self, roots, changes, *, settle_s: float, interval_s: float = POLL_INTERVAL_S):
        super().__init__(roots, changes, settle_s=settle_s)
        self.interval_s = interval_s
        self._tracker = _SettleTracker(settle_s)
        self._primed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pixelmine-watch-poll", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def prime(self, handled):
        for path, key in handled.items():
            self._tracker.mark_done(path, key)
        self._primed.set()

    def settle(self, paths):
        pass  # every listed file is settled before it is reported: nothing to add

    def stop(self) -> None:
        self._primed.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            while not self._primed.wait(0.1):
                if self.changes.stopping.is_set():
                    return
            while not self.changes.stopping.is_set():
                started = time.monotonic()
                self.scan()
                spent = time.monotonic() - started
                # a tree that takes long to list is listed less often, so polling never eats the machine
                self.changes.stopping.wait(max(self.interval_s, 2 * spent))
        except BaseException as exc:  # noqa: BLE001 - handed to the pipeline, which raises it in the caller
            self.error = exc
            _log.exception("the polling file source stopped")

    def scan(self) -> None:
        now = time.monotonic()
        listed = list_candidates(self.roots)
        for path, key in listed.items():
            if self._tracker.observe(path, key, now):
                self._report("ready", path)
        for path in self._tracker.known() - set(listed):
            self._tracker.forget(path)
            if not os.path.lexists(path):
                self._report("gone", path)


class InotifySource(FileSource):
    """watchdog's inotify observer: close-after-write and moves into place mean complete; deletes and moves
    away mean gone. Files it cannot vouch for (present before the watch, or inside a folder that appeared
    with files already in it) are settled by polling them alone."""

    mode = "inotify"

    def __init__(self, roots, changes, *, settle_s: float):
        super().__init__(roots, changes, settle_s=settle_s)
        self._observer = None
        self._settling = _SettleTracker(settle_s)
        self._settle_lock = threading.Lock()
        self._settle_thread = threading.Thread(target=self._settle_loop, name="pixelmine-watch-settle",
                                               daemon=True)

    def start(self) -> None:
        from watchdog.events import (
            DirCreatedEvent,
            DirMovedEvent,
            FileClosedEvent,
            FileDeletedEvent,
            FileMovedEvent,
        )
        from watchdog.observers.inotify import InotifyObserver

        # full events: a move from outside the watch arrives as a move with no source, not as a 'created'
        # event that a plain creation (an incomplete file) would also raise
        observer = InotifyObserver(generate_full_events=True)
        handler = _Handler(self)
        wanted = [FileClosedEvent, FileMovedEvent, FileDeletedEvent, DirMovedEvent, DirCreatedEvent]
        try:
            for root in self.roots:
                observer.schedule(handler, root, recursive=True, event_filter=wanted)
        except OSError as exc:
            raise InputError(f"cannot watch {root!r} with inotify ({exc.strerror or exc}); raise "
                             "fs.inotify.max_user_watches, or watch by polling (--polling)") from exc
        observer.start()
        self._observer = observer
        self._settle_thread.start()

    def settle(self, paths):
        with self._settle_lock:
            for path in paths:
                self._settling.forget(path)
                key = stat_key(path)
                if key is not None:
                    self._settling.observe(path, key, time.monotonic())

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None
        if self._settle_thread.is_alive():
            self._settle_thread.join(timeout=10)

    def _settle_loop(self) -> None:
        try:
            while not self.changes.stopping.wait(SETTLE_TICK_S):
                with self._settle_lock:
                    pending = self._settling.pending()
                    now = time.monotonic()
                    ready = []
                    for path in pending:
                        key = stat_key(path)
                        if key is None:
                            self._settling.forget(path)  # gone: its delete event speaks for it
                        elif self._settling.observe(path, key, now):
                            ready.append(path)
                            self._settling.forget(path)
                for path in ready:
                    self._report("ready", path)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
            _log.exception("the inotify settle thread stopped")

    # called from watchdog's dispatch thread
    def closed(self, path: str) -> None:
        if is_candidate(path, self.roots):
            with self._settle_lock:
                self._settling.forget(path)  # the close is the better signal
            self._report("ready", path, closed=True)

    def moved(self, source: str, destination: str, is_directory: bool) -> None:
        inside = bool(destination) and self._inside(destination)
        if source and self._inside(source) and (is_directory or is_candidate(source, self.roots)):
            self._report("gone_tree" if is_directory else "gone", source)
        if not inside:
            return
        if is_directory:
            for path in list_candidates([destination]):
                self._report("ready", path, closed=True)
        elif is_candidate(destination, self.roots):
            self._report("ready", destination, closed=True)

    def deleted(self, path: str) -> None:
        if is_candidate(path, self.roots):
            with self._settle_lock:
                self._settling.forget(path)
            self._report("gone", path)

    def folder_created(self, path: str) -> None:
        # Files written into a new folder before its watch was added raise no close event here.
        self.settle(list_candidates([path]))

    def _inside(self, path: str) -> bool:
        return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in self.roots)


class _Handler:
    """A watchdog event handler that forwards to an :class:`InotifySource` (a plain class: watchdog only
    calls ``dispatch``)."""

    def __init__(self, source: InotifySource):
        self.source = source

    def dispatch(self, event) -> None:
        try:
            kind = event.event_type
            path = os.fsdecode(event.src_path)
            if kind == "closed" and not event.is_directory:
                self.source.closed(path)
            elif kind == "moved":
                self.source.moved(path, os.fsdecode(event.dest_path), event.is_directory)
            elif kind == "deleted" and not event.is_directory:
                self.source.deleted(path)
            elif kind == "created" and event.is_directory:
                self.source.folder_created(path)
        except BaseException as exc:  # noqa: BLE001 - a dead dispatch thread would silently stop the watch
            self.source.error = exc
            _log.exception("handling the file event %r failed", event)


def open_source(mode: str, roots: Sequence[str], changes: ChangeQueue, *, settle_s: float) -> FileSource:
    if mode == "inotify":
        return InotifySource(roots, changes, settle_s=settle_s)
    return PollingSource(roots, changes, settle_s=settle_s)

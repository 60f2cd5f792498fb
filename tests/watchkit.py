"""Helpers for the watch tests: run a bounded watch while real writers (threads) change a folder."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from pathlib import Path

from imagefactory import photo

BACKBONE = "tiny_test"


def jpeg_bytes(seed: int, size=(64, 48), quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    photo(seed, size).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path: Path) -> str:
    return sha(Path(path).read_bytes())


def write_slowly(path: Path, data: bytes, *, pause_s: float = 0.5, pieces: int = 2) -> None:
    """One open, the bytes in ``pieces`` with a pause after each but the last: a writer caught mid-file."""
    step = -(-len(data) // pieces)
    with open(path, "wb") as handle:
        for start in range(0, len(data), step):
            handle.write(data[start:start + step])
            handle.flush()
            if start + step < len(data):
                time.sleep(pause_s)


def run_watch(ws, dirs, writer=None, *, until, timeout_s: float = 20.0, join_writer: bool = True,
              **options) -> list[dict]:
    """Events of one watch of ``dirs`` (backbone tiny_test unless a model is named), the ``writer`` started in
    a thread once the watch is live, until ``until(events)`` is true or ``timeout_s`` passes. Re-raises an
    error of the writer (``join_writer=False`` leaves it writing: a restart in the middle)."""
    events: list[dict] = []
    errors: list[BaseException] = []

    def guarded():
        try:
            writer()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    if "model" not in options:
        options.setdefault("backbone", BACKBONE)
    thread = None
    stream = ws.watch([str(d) for d in dirs], timeout_s=timeout_s, **options)
    try:
        for event in stream:
            events.append(event)
            if event["type"] == "watch_started" and writer is not None:
                thread = threading.Thread(target=guarded, name="test-writer", daemon=True)
                thread.start()
            if until(events):
                break
    finally:
        stream.close()
        if thread is not None and join_writer:
            thread.join(timeout=30)
    if errors:
        raise errors[0]
    return events


def images(events: list[dict], path=None) -> list[dict]:
    return [e for e in events if e["type"] == "image" and (path is None or e["path"] == str(path))]


def has_image(*paths):
    """until(): an image event for every one of ``paths``."""
    wanted = {str(p) for p in paths}
    return lambda events: wanted <= {e["path"] for e in images(events)}

"""``GET /events``: the catalog's event log (what ``pixelmine watch`` and ``POST /ingest`` record) as
Server-Sent Events.

The catalog is the one source: a watcher in another process stores each event there, and every stream tails
it from the id the client has seen (``Last-Event-ID`` on a reconnect, or ``after=``), so a reconnecting browser
misses nothing and a new one starts at the present. A comment line is sent as a heartbeat when nothing happens
(proxies drop silent connections), and every stream ends when the server shuts down.
"""

from __future__ import annotations

import asyncio
import threading
import time

POLL_S = 0.01  # how often an idle stream looks at the catalog: the watch -> browser latency budget is 50 ms
BATCH = 200  # events sent per catalog read


class EventStreams:
    """The server's open event streams; ``stop()`` ends them all (called when the server shuts down)."""

    def __init__(self, open_catalog):
        self._open_catalog = open_catalog  # () -> this thread's Catalog
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def latest_id(self) -> int:
        return int(self._open_catalog().latest_event_id())

    def read(self, after: int, types: tuple[str, ...] | None) -> list[dict]:
        return self._open_catalog().events_after(after, limit=BATCH, types=types)

    async def stream(self, request, after: int, *, types: tuple[str, ...] | None, heartbeat_s: float):
        """Yield (event dict or None for a heartbeat) until the client leaves or the server stops."""
        from starlette.concurrency import run_in_threadpool

        last_sent = time.monotonic()
        while not self.stopping.is_set():
            if await request.is_disconnected():
                return
            events = await run_in_threadpool(self.read, after, types)
            for event in events:
                after = max(after, int(event["id"]))
                yield event
            if events:
                last_sent = time.monotonic()
                continue
            if time.monotonic() - last_sent >= heartbeat_s:
                last_sent = time.monotonic()
                yield None
            await asyncio.sleep(POLL_S)

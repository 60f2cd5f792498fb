"""Post each watch event as JSON to a URL from a background thread, retrying with back-off, never blocking.

The pipeline only appends to a bounded in-memory queue. When the receiver is down for long and the queue
fills, the oldest events leave memory (they are in the catalog's ``events`` table anyway, and a receiver
can catch up with ``Catalog.events_after(last_id)``); each event carries its ``id`` for that.
"""

from __future__ import annotations

import collections
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from .._version import __version__
from ..errors import InputError
from ..fileio import json_default

_log = logging.getLogger(__name__)

QUEUE_MAX = 10_000  # events held in memory for a receiver that is down
FIRST_DELAY_S = 0.5  # back-off after the first failure; doubled per failure ...
MAX_DELAY_S = 60.0  # ... up to this
REQUEST_TIMEOUT_S = 10.0
STOP_GRACE_S = 2.0  # on stop, how long the events still queued may take to go out


def check_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"The webhook URL must be an http:// or https:// address. Got {url!r} instead.")
    return url


class Webhook:
    """``send(event)`` returns at once; a thread posts the events in order, one request per event."""

    def __init__(self, url: str, *, queue_max: int = QUEUE_MAX, first_delay_s: float = FIRST_DELAY_S,
                 max_delay_s: float = MAX_DELAY_S, timeout_s: float = REQUEST_TIMEOUT_S,
                 stop_grace_s: float = STOP_GRACE_S):
        self.url = check_url(url)
        self.first_delay_s, self.max_delay_s = first_delay_s, max_delay_s
        self.timeout_s, self.stop_grace_s = timeout_s, stop_grace_s
        self._pending: collections.deque[dict] = collections.deque()
        self._queue_max = queue_max
        self._ready = threading.Condition()
        self._stopping = threading.Event()
        self._give_up_at: float | None = None
        self.sent = 0
        self.failures = 0  # failed attempts (each one retried)
        self.dropped = 0  # events that left memory unsent (queue full, or still queued after the grace period)
        self._thread = threading.Thread(target=self._run, name="pixelmine-webhook", daemon=True)
        self._thread.start()

    def send(self, event: dict) -> None:
        with self._ready:
            if len(self._pending) >= self._queue_max:
                self._pending.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    _log.warning("webhook %s is behind: %d events dropped from memory so far (they stay in the "
                                 "catalog's events table)", self.url, self.dropped)
            self._pending.append(event)
            self._ready.notify()

    def stop(self) -> dict:
        """Give the queued events ``stop_grace_s`` to go out, then end the thread. Returns the counts."""
        self._give_up_at = time.monotonic() + self.stop_grace_s
        self._stopping.set()
        with self._ready:
            self._ready.notify()
        self._thread.join(timeout=self.stop_grace_s + self.timeout_s + 1)
        with self._ready:
            left = len(self._pending)
            self._pending.clear()
        if left:
            self.dropped += left
            _log.warning("webhook %s: %d events were not delivered before the watch stopped (they are in the "
                         "catalog's events table)", self.url, left)
        return self.counts()

    def counts(self) -> dict:
        return {"url": self.url, "sent": self.sent, "failed_attempts": self.failures, "dropped": self.dropped,
                "waiting": len(self._pending)}

    def _out_of_time(self) -> bool:
        return self._give_up_at is not None and time.monotonic() >= self._give_up_at

    def _run(self) -> None:
        delay = 0.0
        while True:
            with self._ready:
                while not self._pending and not self._stopping.is_set():
                    self._ready.wait(0.5)
                if not self._pending or self._out_of_time():
                    return
                event = self._pending[0]
            if self._post(event):
                delay = 0.0
                with self._ready:
                    if self._pending and self._pending[0] is event:
                        self._pending.popleft()
                self.sent += 1
                continue
            self.failures += 1
            delay = min(self.max_delay_s, self.first_delay_s if delay == 0 else 2 * delay)
            # full jitter: many watchers behind one receiver that comes back do not retry in step
            wait_s = random.uniform(delay / 2, delay)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and not self._out_of_time():
                self._stopping.wait(min(0.1, max(0.0, deadline - time.monotonic())))

    def _post(self, event: dict) -> bool:
        body = json.dumps(event, default=json_default).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": f"pixelmine/{__version__}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
                return 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if self.failures == 0 or self.failures % 50 == 0:
                _log.warning("webhook %s: %s; retrying with back-off (events wait in memory and in the catalog)",
                             self.url, getattr(exc, "reason", exc))
            return False

"""The live side of the server: POST /ingest, GET /events (Server-Sent Events tailing the catalog's event log,
heartbeats, resuming from Last-Event-ID) and the web UI's live page, against a real server."""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

import httpx
import pytest
from imagefactory import encoded, photo
from servekit import CHROMIUM, TOKEN, LiveServer, browser_page, private_workspace

from pixelmine.catalog import Catalog

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = private_workspace(tmp_path_factory, "live")
    with LiveServer(root) as live:
        live.root = root
        yield live


def listen(server, collected: queue.Queue, stop: threading.Event, **params):
    """Read the event stream in a thread, putting ("event", dict) / ("comment", text) on ``collected``."""
    headers = params.pop("headers", {})

    def run():
        with httpx.Client(timeout=httpx.Timeout(30, read=30)) as client:
            with client.stream("GET", server.url + "/events", params=params, headers=headers) as response:
                collected.put(("status", response.status_code))
                kind, data = None, []
                for line in response.iter_lines():
                    if stop.is_set():
                        return
                    if line.startswith(":"):
                        collected.put(("comment", line[1:].strip()))
                    elif line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        collected.put(("event", {"kind": kind, **json.loads("\n".join(data))}))
                        kind, data = None, []

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def wait_for(collected: queue.Queue, what: str, predicate=lambda item: True, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kind, item = collected.get(timeout=0.2)
        except queue.Empty:
            continue
        if kind == what and predicate(item):
            return item
    raise AssertionError(f"no {what} within {timeout} s")


def test_ingest_needs_the_token_and_catalogues_the_upload(server):
    files = {"file": ("new.jpg", encoded(photo(4242, (64, 48)), "JPEG"), "image/jpeg")}
    assert httpx.post(server.url + "/ingest", files=files).status_code == 401
    answer = httpx.post(server.url + "/ingest", files=files, headers=AUTH, params={"label": "a"}, timeout=60)
    assert answer.status_code == 200, answer.text
    event = answer.json()["events"][0]
    assert event["type"] == "image" and event["status"] == "ok" and event["duplicate_of"] is None
    stored = Path(event["path"])
    assert stored.parent == server.root / "uploads" and stored.exists()
    image = httpx.get(server.url + f"/images/{event['image_id']}").json()
    assert image["id"] == event["image_id"] and image["status"] == "ok"
    again = httpx.post(server.url + "/ingest", files=files, headers=AUTH, timeout=60).json()["events"][0]
    assert again["duplicate_of"] == event["image_id"] and "duplicate" in again["flags"]
    bad = httpx.post(server.url + "/ingest", headers=AUTH, timeout=60,
                     files={"file": ("cut.jpg", encoded(photo(1, (64, 48)), "JPEG")[:300], "image/jpeg")})
    assert 400 <= bad.status_code < 500 and "truncated" in bad.text


def test_events_stream_what_is_recorded_with_heartbeats_and_resume(server):
    collected: queue.Queue = queue.Queue()
    stop = threading.Event()
    thread = listen(server, collected, stop, heartbeat=0.5)
    assert wait_for(collected, "status") == 200
    assert wait_for(collected, "comment") == "heartbeat"  # nothing happened yet: a heartbeat
    # a watcher in another process stores events in the catalog; the stream tails it
    with Catalog(server.root / "catalog.sqlite") as catalog:
        ids = catalog.add_events([{"type": "image", "at": "2026-12-02T00:00:00+00:00", "path": "/x/a.jpg",
                                   "image_id": None, "status": "truncated", "flags": ["unreadable"]}])
    got = wait_for(collected, "event", lambda e: e["id"] == ids[0])
    assert got["kind"] == "image" and got["status"] == "truncated"
    files = {"file": ("live.jpg", encoded(photo(777, (64, 48)), "JPEG"), "image/jpeg")}
    sent = httpx.post(server.url + "/ingest", files=files, headers=AUTH, timeout=60).json()["events"][0]
    got = wait_for(collected, "event", lambda e: e.get("image_id") == sent["image_id"])
    assert got["id"] > ids[0]
    stop.set()
    thread.join(timeout=5)
    # a reconnect with Last-Event-ID gets what came after, nothing before
    again: queue.Queue = queue.Queue()
    stop2 = threading.Event()
    thread2 = listen(server, again, stop2, headers={"Last-Event-ID": str(ids[0])})
    resumed = wait_for(again, "event")
    assert resumed["id"] == got["id"]
    stop2.set()
    thread2.join(timeout=5)
    recent = httpx.get(server.url + "/events/recent", params={"limit": 2}).json()
    assert [e["id"] for e in recent["items"]] == sorted([e["id"] for e in recent["items"]], reverse=True)
    assert recent["items"][0]["id"] == recent["latest_id"]


pytest.importorskip("playwright.sync_api")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium; install it with: make browser")
def test_the_live_page_shows_each_arrival_and_the_drift_panel(server):
    with browser_page(f"{server.url}/#/live") as page:
        page.wait_for_selector("#live-status:has-text('live')")
        before = page.locator("#live-list li").count()
        files = {"file": ("arrival.jpg", encoded(photo(9001, (64, 48)), "JPEG"), "image/jpeg")}
        sent = httpx.post(server.url + "/ingest", files=files, headers=AUTH, timeout=60).json()["events"][0]
        page.wait_for_selector(f"#live-list li[data-id='{sent['id']}']")
        assert page.locator("#live-list li").count() == before + 1
        with Catalog(server.root / "catalog.sqlite") as catalog:
            catalog.add_events([{"type": "alarm", "at": "2026-12-02T00:00:01+00:00", "path": None,
                                 "image_id": None, "alarm": True, "auc": 0.9, "auc_threshold": 0.6,
                                 "reasons": ["the arrivals are separable from the training images"]}])
        page.wait_for_selector("#drift-panel.alarm")
        assert "separable" in page.inner_text("#drift-panel")

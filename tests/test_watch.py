"""pixelmine watch: the events table, choosing a mode, event content against ingest + predict, the restart
scan, missing files, webhooks (down, and failing once), back-pressure, drift events, the CLI."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from imagefactory import photo, save
from watchkit import BACKBONE, has_image, images, jpeg_bytes, run_watch, sha

import pixelmine
from pixelmine.catalog import Catalog
from pixelmine.errors import InputError, NotFittedError
from pixelmine.watch import choose_mode, is_candidate
from pixelmine.watch.files import mount_type


# -- small parts ---------------------------------------------------------------------------------------
def test_events_are_stored_and_tailed_in_order(tmp_path):
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        assert catalog.latest_event_id() == 0
        events = [{"type": "image", "path": "/a.jpg", "image_id": "1" * 64, "label": "cat"},
                  {"type": "missing", "path": "/b.jpg", "image_id": None},
                  {"type": "drift", "path": None, "image_id": None, "auc": 0.5}]
        ids = catalog.add_events(events)
        assert ids == [e["id"] for e in events] and ids == sorted(ids)
        assert catalog.latest_event_id() == ids[-1]
        assert catalog.events_after(0) == events
        assert catalog.events_after(ids[0]) == events[1:]
        assert catalog.events_after(0, types=("missing", "drift"), limit=1) == [events[1]]


def test_temporary_and_hidden_names_are_never_candidates(tmp_path):
    root = str(tmp_path)
    assert is_candidate(f"{root}/a.jpg", [root]) and is_candidate(f"{root}/sub/B.PNG", [root])
    for name in ("a.jpg.part", "a.jpg.tmp", ".a.jpg", "~a.jpg", "a.jpg~", "a.txt", "a.jpg.crdownload",
                 ".hidden/a.jpg"):
        assert not is_candidate(f"{root}/{name}", [root]), name


def test_auto_mode_polls_on_network_mounts(tmp_path, monkeypatch):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/vda / ext4 rw 0 0\nserver:/share {tmp_path}/share nfs4 rw 0 0\n")
    (tmp_path / "share").mkdir()
    assert mount_type(str(tmp_path / "share" / "x"), str(mounts)) == "nfs4"
    assert mount_type(str(tmp_path), str(mounts)) == "ext4"
    from pixelmine.watch import files

    monkeypatch.setattr(files, "mount_type", lambda path: "nfs4" if "share" in path else "ext4")
    mode, why = choose_mode([str(tmp_path / "share")], "auto")
    assert mode == "polling" and "nfs4" in why
    assert choose_mode([str(tmp_path)], "auto")[0] == "inotify"
    assert choose_mode([str(tmp_path)], "polling") == ("polling", "asked for")
    with pytest.raises(InputError, match="must be one of auto, inotify, polling"):
        choose_mode([str(tmp_path)], "fast")


def test_bad_arguments_fail_before_the_watch_starts(tmp_path):
    with pixelmine.open_workspace(tmp_path / "ws") as ws:
        with pytest.raises(InputError, match="not an existing folder"):
            ws.watch([tmp_path / "nowhere"])
        with pytest.raises(NotFittedError, match="no model named 'nope'"):
            ws.watch([tmp_path], model="nope")
        with pytest.raises(InputError, match="webhook URL"):
            ws.watch([tmp_path], webhook="ftp://example")
        with pytest.raises(InputError, match="batch_max"):
            ws.watch([tmp_path], batch_max=0)


# -- with a trained model ------------------------------------------------------------------------------
COUNTS = {"a": 12, "b": 12, "c": 8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace with tiny_test features and a logistic-regression model; copied per test."""
    base = tmp_path_factory.mktemp("watch-trained")
    seed = 0
    for label, n in COUNTS.items():
        for k in range(n):
            save(photo(seed, (64, 48)), base / "images" / label / f"{label}_{k:03d}.jpg")
            seed += 1
    ws = pixelmine.open_workspace(base / "ws")
    ws.ingest(base / "images", labels_from_folders=True, progress=False, workers=1)
    ws.extract(BACKBONE, progress=False)
    model = ws.train("logreg", backbone=BACKBONE, progress=False, search_budget_s=2.0, bootstrap=50, cv_folds=3)
    ws.close()
    return base, model.name


@pytest.fixture
def model_ws(trained, tmp_path):
    base, name = trained
    shutil.copytree(base / "ws", tmp_path / "ws")
    ws = pixelmine.open_workspace(tmp_path / "ws")
    yield ws, name, base / "images"
    ws.close()


def test_event_content_equals_ingest_and_predict(model_ws, tmp_path):
    ws, name, images_dir = model_ws
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sources = {"new_a.jpg": images_dir / "a" / "a_000.jpg", "other.png": None, "broken.jpg": None}
    originals = tmp_path / "originals"
    originals.mkdir()
    save(photo(500, (70, 50)), originals / "new_a.jpg", quality=70)  # a new file, not a known content
    save(photo(501, (50, 70)), originals / "other.png")
    (originals / "broken.jpg").write_bytes(jpeg_bytes(502, (120, 90))[:900])
    targets = [inbox / n for n in sources]

    def writer():
        for n in sources:
            shutil.copyfile(originals / n, inbox / n)

    events = run_watch(ws, [inbox], writer, model=name, mode="inotify", until=has_image(*targets))
    started = events[0]
    assert started["type"] == "watch_started" and started["model"] == name and started["backbone"] == BACKBONE

    # ingest of the same files in a fresh workspace gives the same catalogue rows
    with pixelmine.open_workspace(tmp_path / "reference") as reference:
        reference.ingest(originals, progress=False, workers=1)
        expected = {Path(f["path"]).name: f for f in reference.files()}
    watched = {Path(f["path"]).name: f for f in ws.files() if f["path"].startswith(str(inbox))}
    predictions = {Path(p.path).name: p for p in ws.model(name).predict([str(t) for t in targets])}
    for target in targets:
        (event,) = images(events, target)
        want = expected[target.name]
        assert (event["status"], event["error"], event["image_id"]) == (want["status"], want["error"], want["image_id"])
        for key in ("status", "error", "image_id", "size"):
            assert watched[target.name][key] == want[key], key
        prediction = predictions[target.name]
        if event["status"] != "ok":
            assert prediction.error and event["label"] is None
            continue
        assert event["label"] == prediction.label and event["uncertain"] == prediction.uncertain
        assert event["reason"] == prediction.reason
        assert event["probability"] == pytest.approx(prediction.probability, abs=1e-5)
        assert event["novelty"] == pytest.approx(prediction.novelty, abs=1e-5)
        assert [t["label"] for t in event["top_k"]] == [t["label"] for t in prediction.top_k]
        assert event["novel"] == (prediction.novelty > 1.0) and event["model"] == name
        assert set(event["timings_ms"]) == {"queued", "validate", "embed", "total"}
    # every event is in the catalog, in order
    stored = ws.catalog.events_after(0)
    assert [e["id"] for e in stored] == sorted(e["id"] for e in stored)
    assert {e["id"] for e in events} <= {e["id"] for e in stored}


def test_a_copy_of_a_catalogued_image_is_flagged_with_the_known_neighbour(model_ws, tmp_path):
    ws, name, images_dir = model_ws
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    known = images_dir / "b" / "b_003.jpg"
    exact, near = inbox / "exact.jpg", inbox / "near.jpg"

    def writer():
        shutil.copyfile(known, exact)
        save(photo(15, (64, 48)), near, quality=55)  # b_003's pixels (seed 12 + 3), re-encoded

    events = run_watch(ws, [inbox], writer, model=name, mode="inotify", until=has_image(exact, near))
    (copy,), (similar,) = images(events, exact), images(events, near)
    assert copy["duplicate_of"] == sha(known.read_bytes()) and copy["duplicate_of_path"] == str(known)
    assert copy["label"] is not None  # predicted from the vector it already had, without embedding
    assert similar["near_duplicate"]["image_id"] == sha(known.read_bytes())
    assert similar["near_duplicate"]["similarity"] >= 0.95 and "near_duplicate" in similar["flags"]


def test_the_restart_scan_finds_what_changed_while_stopped(model_ws, tmp_path):
    ws, name, _ = model_ws
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    first, second = inbox / "first.jpg", inbox / "sub" / "second.jpg"
    events = run_watch(ws, [inbox], lambda: (first.write_bytes(jpeg_bytes(1)), second.write_bytes(jpeg_bytes(2))),
                       model=name, mode="inotify", until=has_image(first, second))
    assert len(images(events)) == 2
    # while nobody watches: one file is deleted, one added (old enough to be complete), one left alone
    first.unlink()
    late = inbox / "late.jpg"
    late.write_bytes(jpeg_bytes(3))
    old = time.time() - 60
    import os

    os.utime(late, (old, old))
    events = run_watch(ws, [inbox], model=name, mode="inotify", until=has_image(late))
    started = events[0]
    assert started["reconciled"] == {"files": 2, "unchanged": 1, "new": 1, "changed": 0, "settling": 0, "missing": 1}
    missing = [e for e in events if e["type"] == "missing"]
    assert [e["path"] for e in missing] == [str(first)] and missing[0]["image_id"] == sha(jpeg_bytes(1))
    assert images(events, late)[0]["status"] == "ok" and not images(events, second)
    assert str(first) in {f["path"] for f in ws.files("missing")}


def test_a_deleted_catalogued_file_becomes_missing_while_watching(model_ws, tmp_path):
    ws, name, _ = model_ws
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    victim = inbox / "victim.jpg"

    def writer():
        victim.write_bytes(jpeg_bytes(9))
        time.sleep(0.5)
        victim.unlink()

    events = run_watch(ws, [inbox], writer, model=name, mode="inotify",
                       until=lambda ev: any(e["type"] == "missing" for e in ev))
    assert [e["type"] for e in events if e["path"] == str(victim)] == ["image", "missing"]
    assert str(victim) in {f["path"] for f in ws.files("missing")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_webhook_that_is_down_never_blocks_or_loses_events(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    paths = [inbox / f"w{k}.jpg" for k in range(4)]
    with pixelmine.open_workspace(tmp_path / "ws") as ws:
        began = time.monotonic()
        events = run_watch(ws, [inbox], lambda: [p.write_bytes(jpeg_bytes(k)) for k, p in enumerate(paths)],
                           mode="inotify", webhook=f"http://127.0.0.1:{_free_port()}/hook", until=has_image(*paths))
        assert time.monotonic() - began < 15
        stored = {e["path"] for e in ws.catalog.events_after(0, types=("image",))}
        assert {str(p) for p in paths} <= stored
        stopped = ws.catalog.events_after(0, types=("watch_stopped",))[-1]
        assert stopped["webhook"]["sent"] == 0 and stopped["webhook"]["failed_attempts"] >= 1
    assert len(images(events)) == 4


def test_a_webhook_receives_every_event_retrying_after_a_500(tmp_path):
    received: list[dict] = []
    answers = iter([500])

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = next(answers, 200)
            if status == 200:
                received.append(json.loads(body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    paths = [inbox / f"h{k}.jpg" for k in range(3)]
    try:
        with pixelmine.open_workspace(tmp_path / "ws") as ws:
            run_watch(ws, [inbox], lambda: [p.write_bytes(jpeg_bytes(10 + k)) for k, p in enumerate(paths)],
                      mode="inotify", webhook=f"http://127.0.0.1:{server.server_address[1]}/hook",
                      until=has_image(*paths))
            stored = ws.catalog.events_after(0)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert [e["id"] for e in received] == [e["id"] for e in stored]  # all, in order, the first after a 500
    assert received[-1]["type"] == "watch_stopped" and received[-1]["webhook"]["failed_attempts"] == 1


def test_a_burst_larger_than_the_queue_is_processed_completely(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    paths = [inbox / f"burst{k:03d}.jpg" for k in range(40)]
    with pixelmine.open_workspace(tmp_path / "ws") as ws:
        events = run_watch(ws, [inbox], lambda: [p.write_bytes(jpeg_bytes(200 + k, (32, 24)))
                                                 for k, p in enumerate(paths)],
                           mode="inotify", queue_max=4, batch_max=8, until=has_image(*paths))
        assert sorted(e["path"] for e in images(events)) == sorted(map(str, paths))
        assert all(e["status"] == "ok" for e in images(events))
        run = ws.runs("watch")[0]
        assert run["status"] == "completed" and run["counts"]["queue_high_water"] <= 4
        assert run["counts"]["images"] == 40


def test_drift_reports_become_drift_and_alarm_events(tmp_path, monkeypatch):
    from pixelmine.watch import pipeline

    class Report:
        def __init__(self, n, alarm):
            self.alarm, self.n = alarm, n

        def to_dict(self):
            return {"n_window": self.n, "alarm": self.alarm, "reasons": ["planted"] if self.alarm else []}

    class StubMonitor:  # a report every 2 arrivals; the alarm from the second report on
        def __init__(self):
            self.arrivals = []

        def add(self, vector, *, uncertain, novel, label):
            self.arrivals.append(vector.shape)
            if len(self.arrivals) % 2 == 0:
                return Report(len(self.arrivals), len(self.arrivals) >= 4)
            return None

    stub = StubMonitor()

    def open_stub(self, features):
        self.drift = stub

    monkeypatch.setattr(pipeline.Pipeline, "_open_drift", open_stub)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    paths = [inbox / f"d{k}.jpg" for k in range(6)]

    def writer():
        for k, p in enumerate(paths):
            p.write_bytes(jpeg_bytes(300 + k))
            time.sleep(0.05)

    with pixelmine.open_workspace(tmp_path / "ws") as ws:
        events = run_watch(ws, [inbox], writer, mode="inotify",
                           until=lambda ev: has_image(*paths)(ev) and sum(e["type"] == "drift" for e in ev) == 3)
    assert len(stub.arrivals) == 6
    assert [e["n_window"] for e in events if e["type"] == "drift"] == [2, 4, 6]
    alarms = [e for e in events if e["type"] == "alarm"]
    assert len(alarms) == 1 and alarms[0]["n_window"] == 4 and alarms[0]["reasons"] == ["planted"]


def test_the_cli_prints_one_json_line_per_event(tmp_path):
    from click.testing import CliRunner

    from pixelmine.cli import main

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "x.jpg").write_bytes(jpeg_bytes(1))
    result = CliRunner().invoke(main, ["watch", str(inbox), "-w", str(tmp_path / "ws"), "--backbone", BACKBONE,
                                       "--polling", "--settle", "0", "--max-events", "1", "--timeout", "20"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in lines] == ["watch_started", "image", "watch_stopped"]
    assert lines[1]["path"] == str(inbox / "x.jpg") and lines[1]["status"] == "ok" and lines[1]["label"] is None
    assert "x.jpg: ok" in result.stderr

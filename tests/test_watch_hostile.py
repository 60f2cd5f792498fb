"""pixelmine watch against hostile writers: pauses mid-file, renames into place, a large copy, deletes,
duplicates, truncated files, a restart in the middle. Every file is read only once complete (its event's
image id is the sha256 of its final bytes), nothing crashes, and every file is accounted for."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from watchkit import (
    file_sha,
    has_image,
    images,
    jpeg_bytes,
    run_watch,
    sha,
    write_slowly,
)

import pixelmine

MODES = ["inotify", "polling"]


@pytest.fixture
def inbox(tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def ws(tmp_path):
    with pixelmine.open_workspace(tmp_path / "ws") as workspace:
        yield workspace


@pytest.mark.parametrize("mode", MODES)
def test_a_pause_mid_file_is_read_only_once_complete(ws, inbox, mode):
    data = jpeg_bytes(1, (160, 120))
    target = inbox / "paused.jpg"
    events = run_watch(ws, [inbox], lambda: write_slowly(target, data, pause_s=0.5), mode=mode, settle_s=1.0,
                       until=has_image(target))
    seen = images(events, target)
    assert len(seen) == 1 and seen[0]["status"] == "ok" and seen[0]["image_id"] == sha(data)
    row = ws.catalog.lookup_paths([str(target)])[str(target)]
    assert row["status"] == "ok" and row["image_id"] == sha(data)


@pytest.mark.parametrize("mode", MODES)
def test_a_part_file_renamed_into_place_is_read_once_under_its_final_name(ws, inbox, mode):
    data = jpeg_bytes(2)
    target = inbox / "renamed.jpg"

    def writer():
        write_slowly(inbox / "renamed.jpg.part", data, pause_s=0.3)
        os.rename(inbox / "renamed.jpg.part", target)

    events = run_watch(ws, [inbox], writer, mode=mode, settle_s=0.5, until=has_image(target))
    assert [e["image_id"] for e in images(events)] == [sha(data)]
    assert not [e for e in events if e.get("path", "") and e["path"].endswith(".part")]
    if mode == "inotify":  # the rename itself is the signal: its time is known
        assert images(events)[0]["file_closed_at"] is not None


def test_a_large_copy_is_read_once_complete(ws, inbox, tmp_path):
    import numpy as np
    from PIL import Image

    big = tmp_path / "big.png"
    noise = np.random.default_rng(0).integers(0, 256, (2100, 2100, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big, compress_level=0)
    assert big.stat().st_size > 10_000_000
    target = inbox / "big.png"

    def writer():  # a copy in 1 MB pieces, as a slow disk or network would deliver it
        with open(big, "rb") as source, open(target, "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
                out.flush()
                time.sleep(0.01)

    events = run_watch(ws, [inbox], writer, mode="inotify", until=has_image(target))
    seen = images(events, target)
    assert len(seen) == 1 and seen[0]["status"] == "ok" and seen[0]["image_id"] == file_sha(big)


@pytest.mark.parametrize("mode", MODES)
def test_a_file_deleted_before_it_is_processed_is_accounted_for(ws, inbox, mode):
    doomed, kept = inbox / "doomed.jpg", inbox / "kept.jpg"

    def writer():
        doomed.write_bytes(jpeg_bytes(3))
        os.remove(doomed)  # microseconds after its close: before the pipeline can read it
        time.sleep(0.2)
        kept.write_bytes(jpeg_bytes(4))

    events = run_watch(ws, [inbox], writer, mode=mode, settle_s=0.3, until=has_image(kept))
    assert images(events, kept)[0]["status"] == "ok"
    doomed_events = [e for e in events if e["path"] == str(doomed)]
    if mode == "inotify":
        # its writer had finished it: recorded, and at once marked missing
        assert [e["type"] for e in doomed_events][-1] == "missing"
        assert str(doomed) in {f["path"] for f in ws.files("missing")}
    else:
        # never settled, so never complete: not an image, not recorded
        assert not images(doomed_events)


def test_a_duplicate_by_content_is_flagged_and_not_embedded_twice(ws, inbox):
    data = jpeg_bytes(5)
    first, second = inbox / "first.jpg", inbox / "second.jpg"

    def writer():
        first.write_bytes(data)
        time.sleep(0.3)
        shutil.copyfile(first, second)

    events = run_watch(ws, [inbox], writer, mode="inotify", until=has_image(first, second), timeout_s=20)
    (one,), (two,) = images(events, first), images(events, second)
    assert one["duplicate_of"] is None and "duplicate" not in one["flags"]
    assert two["duplicate_of"] == sha(data) and two["duplicate_of_path"] == str(first) and "duplicate" in two["flags"]
    stopped = [e for e in ws.catalog.events_after(0) if e["type"] == "watch_stopped"][-1]
    assert stopped["counts"]["embedded"] == 1


def test_a_truncated_jpeg_is_recorded_as_such_and_the_watch_goes_on(ws, inbox):
    data = jpeg_bytes(6, (200, 150))
    broken, fine = inbox / "broken.jpg", inbox / "fine.jpg"

    def writer():
        broken.write_bytes(data[: len(data) // 2])
        time.sleep(0.2)
        fine.write_bytes(jpeg_bytes(7))

    events = run_watch(ws, [inbox], writer, mode="inotify", until=has_image(broken, fine))
    (bad,), (good,) = images(events, broken), images(events, fine)
    assert bad["status"] == "truncated" and "truncated" in bad["flags"] and bad["error"]
    assert bad["label"] is None and bad["near_duplicate"] is None
    assert good["status"] == "ok"
    assert ws.catalog.lookup_paths([str(broken)])[str(broken)]["status"] == "truncated"


def test_a_restart_in_the_middle_loses_nothing_and_reads_nothing_partial(ws, inbox):
    """A writer keeps writing (some files with a pause mid-file) while the watcher stops and starts again."""
    datas = {inbox / f"r{k:02d}.jpg": jpeg_bytes(100 + k, (96, 72)) for k in range(16)}
    done = threading.Event()

    def writer():
        for k, (path, data) in enumerate(datas.items()):
            time.sleep(0.08)
            if k % 4 == 0:
                write_slowly(path, data, pause_s=0.15)
            else:
                path.write_bytes(data)
        done.set()  # before the last file's event can arrive, so the second watcher knows it is the last

    first = run_watch(ws, [inbox], writer, mode="inotify", until=lambda ev: len(images(ev)) >= 4,
                      join_writer=False)
    assert not done.is_set()  # the watcher stopped while the writer was still writing
    every = {str(p) for p in datas}
    second = run_watch(ws, [inbox], mode="inotify", timeout_s=20,
                       until=lambda ev: done.is_set() and every <= {e["path"] for e in images(first + ev)})
    assert done.wait(10)
    everything = images(first + second)
    assert {e["path"] for e in everything} == {str(p) for p in datas}  # 0 lost
    for event in everything:  # 0 partial: what was read is the file's final content
        assert event["status"] == "ok" and event["image_id"] == sha(datas[Path(event["path"])])
    started = next(e for e in second if e["type"] == "watch_started")
    assert started["reconciled"]["unchanged"] >= len(images(first))
    rows = ws.catalog.lookup_paths([str(p) for p in datas])
    assert all(rows[str(p)]["status"] == "ok" and rows[str(p)]["image_id"] == sha(d) for p, d in datas.items())

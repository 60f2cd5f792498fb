"""Fault tests: a full disk loses nothing. The stage stops with one clear message (which file, how much
space, what to do), everything committed before stays intact and readable, no half-written file is left
where a reader would take it for complete, and the same command resumes once space is back.

For real on a small tmpfs (mounted by the test as root, removed after; skipped with the reason where
mounting is not allowed), and by injecting ENOSPC at several points of ingest and extract."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from imagefactory import photo, save

import pixelmine
from pixelmine.errors import StorageError

pytestmark = pytest.mark.fault


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("disk") / "images"
    for k in range(120):
        save(photo(k, (96, 72)), root / ("a" if k % 2 else "b") / f"p{k:04d}.jpg")
    return root


@contextlib.contextmanager
def small_filesystem(path: Path, megabytes: int):
    path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here ({done.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path, leave_bytes: int) -> Path:
    """Fill the file system of ``path`` until only ``leave_bytes`` are free."""
    filler = path / "filler.bin"
    free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
    with open(filler, "wb") as out:
        remaining = max(0, free - leave_bytes)
        while remaining > 0:
            block = min(remaining, 1 << 20)
            out.write(b"\0" * block)
            remaining -= block
    return filler


def integrity(workspace: Path) -> list:
    with sqlite3.connect(workspace / "catalog.sqlite") as conn:
        return conn.execute("PRAGMA integrity_check").fetchall()


def half_written(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".tmp-*"))


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pixelmine", *map(str, args), "--quiet"], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


def test_extract_onto_a_full_disk_says_so_in_one_line_and_resumes(tmp_path, images):
    with small_filesystem(tmp_path / "small", 24) as disk:
        workspace = disk / "ws"
        env = {"PIXELMINE_CACHE": str(disk / "cache")}  # the ONNX export goes to the full disk too
        assert _cli("ingest", images, "--labels-from-folders", "-w", workspace, env=env).returncode == 0
        filler = fill(disk, leave_bytes=64 * 1024)
        done = _cli("extract", "--backbone", "tiny_test", "-w", workspace, env=env)
        assert done.returncode == 1, done.stdout
        assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
        assert "no space left on the disk to write" in done.stderr and "run the same command again" in done.stderr
        assert integrity(workspace) == [("ok",)] and half_written(disk) == []
        with pixelmine.open_workspace(workspace) as ws:  # what was committed is readable
            assert len(ws.images()) == 120
        filler.unlink()
        resumed = _cli("extract", "--backbone", "tiny_test", "-w", workspace, env=env)
        assert resumed.returncode == 0, resumed.stderr
        with pixelmine.open_workspace(workspace) as ws:
            assert len(ws.features("tiny_test")) == 120
            statuses = [r["status"] for r in ws.runs("extract")]
        assert statuses[0] == "completed" and set(statuses[1:]) <= {"failed", "interrupted"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, images):
    """An uninterrupted ingest and extract: (workspace, {image id: feature vector})."""
    ws = pixelmine.open_workspace(tmp_path_factory.mktemp("reference") / "ws")
    ws.ingest(images, labels_from_folders=True, progress=False, workers=1)
    features = ws.extract("tiny_test", progress=False).features()
    yield ws, {i: np.asarray(features.vectors[r]) for r, i in enumerate(features.ids)}
    ws.close()


@pytest.mark.parametrize("failing_write", range(1, 11))  # ten points of the 15 shard writes
def test_enospc_at_a_shard_write_keeps_earlier_shards_and_resumes_identically(tmp_path, images, monkeypatch,
                                                                               failing_write, reference):
    import pixelmine.features.store as store

    reference = reference[1]
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(images, labels_from_folders=True, progress=False, workers=1)
    real_savez, calls = store.np.savez, {"n": 0}

    def savez(out, **arrays):
        calls["n"] += 1
        if calls["n"] == failing_write:
            out.write(b"partial")  # the disk fills up half-way through the shard
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_savez(out, **arrays)

    monkeypatch.setattr(store.np, "savez", savez)
    with pytest.raises(StorageError, match=r"no space left on the disk to write '.*shard-\d+\.npz'"):
        ws.extract("tiny_test", progress=False, flush_s=1e-9, batch_size=8, workers=0)  # a shard per batch
    monkeypatch.setattr(store.np, "savez", real_savez)
    assert half_written(ws.root) == [] and integrity(ws.root) == [("ok",)]
    shards = sorted((ws.root / "features").glob("*/shard-*.npz"))
    assert len(shards) == failing_write - 1  # every shard before the failing one is whole and kept
    kept = sum(len(np.load(shard)["ids"]) for shard in shards)
    assert ws.runs("extract")[0]["status"] == "failed"
    again = ws.extract("tiny_test", progress=False)
    assert again.cached == kept and again.computed == 120 - kept  # nothing committed is computed twice
    features = ws.features("tiny_test")
    assert sorted(features.ids) == sorted(reference)
    for row, image_id in enumerate(features.ids):
        np.testing.assert_allclose(features.vectors[row], reference[image_id], rtol=1e-6)


@pytest.mark.parametrize("failing_commit", range(1, 11))  # ten points of the 15 commits
def test_enospc_at_an_ingest_commit_loses_no_committed_row(tmp_path, images, monkeypatch, failing_commit,
                                                           reference):
    from pixelmine.catalog import Catalog

    reference = reference[0]
    ws = pixelmine.open_workspace(tmp_path / "ws")
    real, calls = Catalog.write_records, {"n": 0, "committed": 0}

    def write_records(self, records, source, run_id):
        calls["n"] += 1
        if calls["n"] == failing_commit:
            with self.transaction():  # SQLite's own words when the disk fills up during a commit
                raise sqlite3.OperationalError("database or disk is full")
        real(self, records, source, run_id)
        calls["committed"] += len(records)

    monkeypatch.setattr(Catalog, "write_records", write_records)
    monkeypatch.setattr("pixelmine.ingest.runner.COMMIT_EVERY_FILES", 8)  # 15 commits in 120 files, by count
    monkeypatch.setattr("pixelmine.ingest.runner.COMMIT_EVERY_S", 1e9)
    with pytest.raises(StorageError, match=r"no space left on the disk to write '.*catalog\.sqlite'"):
        ws.ingest(images, labels_from_folders=True, progress=False, workers=1, files_per_task=8)
    monkeypatch.setattr(Catalog, "write_records", real)
    assert integrity(ws.root) == [("ok",)]
    kept = ws.catalog.query("SELECT COUNT(*) FROM paths")[0][0]
    assert kept == calls["committed"]  # nothing committed was lost
    ws.ingest(images, labels_from_folders=True, progress=False, workers=1)
    rows = lambda w: sorted(tuple(r) for r in w.catalog.query(  # noqa: E731
        "SELECT path, status, label, image_id FROM paths"))
    assert rows(ws) == rows(reference)


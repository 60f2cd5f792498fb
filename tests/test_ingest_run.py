"""Ingest end to end: sources, duplicates, incremental re-runs, kill-and-resume, two processes at once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import imagefactory as f
import pixelmine
from pixelmine.errors import InputError, SourceNotFoundError


def make_collection(root: Path, per_class: int = 6) -> dict[str, Path]:
    """Two class folders, a planted exact duplicate (same bytes, other class), and bad files."""
    files = {}
    seed = 0
    for label in ("cats", "dogs"):
        for i in range(per_class):
            seed += 1
            files[f"{label}/{i}"] = f.save(f.photo(seed), root / label / f"img_{i:03d}.jpg", quality=90)
    dup = root / "dogs" / "copy_of_cat.jpg"
    dup.write_bytes(files["cats/0"].read_bytes())
    files["dup"] = dup
    files["text"] = f.write(root / "cats" / "readme.jpg", b"not an image at all, just some words\n")
    files["empty"] = f.write(root / "dogs" / "empty.png", b"")
    data = f.encoded(f.photo(99, (300, 200)), "JPEG")
    files["cut"] = f.write(root / "dogs" / "cut.jpg", data[: len(data) // 2])
    (root / "cats" / "notes.txt").write_text("ignored: not an image extension")
    return files


def table(ws_root: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(ws_root / "catalog.sqlite") as conn:
        return conn.execute(sql).fetchall()


IMAGES_SQL = "SELECT id, size, format, width, height, mode, bit_depth, orientation, frames, phash, status, error, label, metadata FROM images ORDER BY id"
PATHS_SQL = "SELECT path, image_id, source, size, mtime_ns, status, error, label, metadata, present FROM paths ORDER BY path"


def test_folder_with_labels_statuses_and_duplicates(tmp_path):
    files = make_collection(tmp_path / "data")
    ws = pixelmine.open_workspace(tmp_path / "ws")
    result = ws.ingest(tmp_path / "data", labels_from_folders=True, progress=False)
    assert result.files_seen == 16 and result.new == 16 and result.validated == 16
    assert result.by_status == {"ok": 13, "not_an_image": 1, "empty_file": 1, "truncated": 1}
    summary = ws.status()
    assert summary["files"] == 16 and summary["images"] == 15  # the duplicate is one image
    dup_id = __import__("hashlib").sha256(files["dup"].read_bytes()).hexdigest()
    assert summary["exact_duplicates"] == [{"image_id": dup_id, "paths": sorted([str(files["cats/0"]), str(files["dup"])])}]
    assert summary["label_conflicts"] == [{"image_id": dup_id, "labels": ["cats", "dogs"]}]
    assert summary["images_by_label"] == {"cats": 5, "dogs": 6, "(unlabelled)": 1}
    truncated = ws.files("truncated")
    assert [r["path"] for r in truncated] == [str(files["cut"])]
    assert "re-copy" in truncated[0]["error"]
    # Every catalogued image keeps the label of its class folder.
    labels = {row["path"]: row["label"] for row in ws.files()}
    assert labels[str(files["cats/3"])] == "cats" and labels[str(files["dogs/2"])] == "dogs"


def test_rerun_unchanged_does_no_work_and_changes_nothing(tmp_path):
    make_collection(tmp_path / "data")
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(tmp_path / "data", labels_from_folders=True, progress=False)
    before = (table(ws.root, IMAGES_SQL + ""), table(ws.root, PATHS_SQL))
    stamps = table(ws.root, "SELECT path, updated_at, last_run FROM paths ORDER BY path")
    again = ws.ingest(tmp_path / "data", labels_from_folders=True, progress=False)
    assert again.validated == 0 and again.unchanged == 16 and again.new == again.changed == again.missing == 0
    assert (table(ws.root, IMAGES_SQL), table(ws.root, PATHS_SQL)) == before
    assert table(ws.root, "SELECT path, updated_at, last_run FROM paths ORDER BY path") == stamps


def test_changed_and_deleted_files_are_detected(tmp_path):
    files = make_collection(tmp_path / "data")
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(tmp_path / "data", labels_from_folders=True, progress=False)
    f.save(f.photo(1234, (50, 50)), files["cats/1"], format="JPEG")  # new content, same path
    files["dogs/4"].unlink()
    result = ws.ingest(tmp_path / "data", labels_from_folders=True, progress=False)
    assert (result.changed, result.missing, result.validated) == (1, 1, 1)
    missing = ws.files("missing")
    assert [r["path"] for r in missing] == [str(files["dogs/4"])]
    new_id = __import__("hashlib").sha256(files["cats/1"].read_bytes()).hexdigest()
    row = [r for r in ws.files() if r["path"] == str(files["cats/1"])][0]
    assert row["image_id"] == new_id and row["status"] == "ok"
    assert ws.status()["files_by_status"]["missing"] == 1
    # A file that comes back is present again.
    f.save(f.photo(50), files["dogs/4"], quality=90)
    ws.ingest(tmp_path / "data", labels_from_folders=True, progress=False)
    assert ws.files("missing") == []


def test_file_deleted_mid_run_is_unreadable_and_run_goes_on(tmp_path):
    files = make_collection(tmp_path / "data")
    victim = files["dogs/5"]

    def delete_once(done, total):
        if victim.exists():
            victim.unlink()

    ws = pixelmine.open_workspace(tmp_path / "ws")
    result = ws.ingest(tmp_path / "data", labels_from_folders=True, progress=delete_once)
    assert result.by_status["unreadable"] == 1
    (row,) = ws.files("unreadable")
    assert row["path"] == str(victim) and "vanished" in row["error"]
    assert result.by_status["ok"] == 12


def test_manifest_csv_relative_paths_and_metadata(tmp_path):
    files = make_collection(tmp_path / "data")
    manifest = tmp_path / "data" / "labels.csv"
    manifest.write_text("path,label,camera,shift\n"
                        "cats/img_000.jpg,cat,A,1\n"
                        f"{files['dogs/1']},dog,B,2\n"
                        "dogs/cut.jpg,dog,B,3\n")
    ws = pixelmine.open_workspace(tmp_path / "ws")
    result = ws.ingest(manifest=manifest, progress=False)
    assert result.files_seen == 3 and result.by_status == {"ok": 2, "truncated": 1}
    rows = {Path(r["path"]).name: r for r in ws.files()}
    assert rows["img_000.jpg"]["label"] == "cat" and rows["img_000.jpg"]["metadata"] == {"camera": "A", "shift": "1"}
    assert rows["img_001.jpg"]["label"] == "dog"
    images = {i["label"]: i for i in ws.images()}
    assert images["dog"]["metadata"] == {"camera": "B", "shift": "2"}


def test_manifest_parquet_and_custom_columns(tmp_path):
    make_collection(tmp_path / "data")
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"file_name": ["data/cats/img_002.jpg", "data/dogs/img_003.jpg"],
                             "kind": ["cat", "dog"], "score": [0.5, 0.9]}), manifest)
    ws = pixelmine.open_workspace(tmp_path / "ws")
    with pytest.raises(InputError, match="no path column"):
        ws.ingest(manifest=manifest, progress=False)
    ws.ingest(manifest=manifest, path_column="file_name", label_column="kind", progress=False)
    assert sorted((i["label"], i["metadata"]["score"]) for i in ws.images()) == [("cat", 0.5), ("dog", 0.9)]


def test_include_exclude_and_paths_source(tmp_path):
    make_collection(tmp_path / "data")
    ws = pixelmine.open_workspace(tmp_path / "ws")
    result = ws.ingest(tmp_path / "data", include=["*.jpg"], exclude=["cats/*"], progress=False)
    assert result.files_seen == 8  # dogs: 6 photos + duplicate + truncated
    one = pixelmine.open_workspace(tmp_path / "ws2").ingest([tmp_path / "data" / "cats" / "img_000.jpg"], progress=False)
    assert one.files_seen == 1 and one.by_status == {"ok": 1}


def mixed_folder(root: Path) -> Path:
    """Planted truth: 3 JPEGs and an XPM are images; 2 .txt and 1 .bin are not image extensions."""
    for i in range(3):
        f.save(f.photo(i), root / f"photo_{i}.jpg")
    f.write(root / "sub" / "pixmap.xpm", f.xpm_bytes())
    f.write(root / "notes.txt", b"shot list\n")
    f.write(root / "sub" / "more.txt", b"more notes\n")
    f.write(root / "sub" / "dump.bin", bytes(range(256)) * 4)
    return root


def test_files_skipped_for_their_extension_are_counted_by_extension(tmp_path):
    data = mixed_folder(tmp_path / "data")
    ws = pixelmine.open_workspace(tmp_path / "ws")
    result = ws.ingest(data, progress=False, workers=1)
    assert result.files_seen == 4 and result.by_status == {"ok": 4}  # the XPM is an image now
    assert result.skipped == 3
    assert list(result.skipped_by_extension.items()) == [(".txt", 2), (".bin", 1)]  # most common first
    assert result.to_dict()["skipped"] == 3 and result.to_dict()["skipped_by_extension"] == {".txt": 2, ".bin": 1}
    (xpm,) = [r for r in ws.files() if r["path"].endswith(".xpm")]
    assert xpm["status"] == "ok"
    assert {i["format"] for i in ws.images()} == {"JPEG", "XPM"}
    assert ws.runs("ingest")[0]["counts"]["skipped_by_extension"] == {".txt": 2, ".bin": 1}
    # What --exclude leaves out was left out on purpose: not counted as skipped for its extension.
    excluded = pixelmine.open_workspace(tmp_path / "ws2").ingest(data, exclude=["*.txt"], progress=False, workers=1)
    assert excluded.skipped_by_extension == {".bin": 1}
    # --include replaces the extension filter: the .bin is listed, and it is no image, which its status says.
    taken = ws.ingest(data, include=["*.bin"], progress=False, workers=1)
    assert taken.files_seen == 1 and taken.skipped == 0 and taken.missing == 0
    (row,) = [r for r in ws.files() if r["path"].endswith(".bin")]
    assert row["status"] != "ok" and row["error"]
    assert len(ws.files()) == 5  # the images of the first run stay catalogued


def test_symlink_loops_terminate_and_links_are_followed(tmp_path):
    data = tmp_path / "data"
    f.save(f.photo(1), data / "a" / "x.jpg")
    os.symlink(data, data / "a" / "loop")  # a folder linking back to its ancestor
    os.symlink(data / "a" / "x.jpg", data / "link.jpg")
    result = pixelmine.open_workspace(tmp_path / "ws").ingest(data, progress=False)
    assert result.files_seen == 2 and result.by_status == {"ok": 2}


def test_bad_arguments_raise_clear_errors(tmp_path):
    ws = pixelmine.open_workspace(tmp_path / "ws")
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        ws.ingest(tmp_path / "nope", progress=False)
    with pytest.raises(InputError, match="nothing to ingest"):
        ws.ingest(progress=False)
    with pytest.raises(InputError, match="'workers' parameter"):
        ws.ingest(tmp_path, workers=0, progress=False)
    with pytest.raises(InputError, match="unknown status"):
        ws.files("broken")


def test_runs_are_recorded(tmp_path):
    make_collection(tmp_path / "data")
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(tmp_path / "data", labels_from_folders=True, progress=False)
    (run,) = ws.runs("ingest")
    assert run["status"] == "completed" and run["config"]["labels_from_folders"] is True
    assert run["counts"]["files_seen"] == 16 and run["version"] == pixelmine.__version__
    assert ws.catalog.schema_version() >= 1


def _ingest_cmd(data: Path, ws: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pixelmine.cli", "ingest", str(data), "--labels-from-folders", "-w", str(ws),
            "--quiet", *extra]


@pytest.fixture(scope="module")
def big_collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("big")
    # PNG (no DCT shortcut) at 800x600, so that one worker needs a few seconds and a kill lands mid-run.
    for i in range(500):
        f.save(f.photo(10_000 + i, (800, 600)), root / f"c{i % 3}" / f"{i:04d}.png", compress_level=1)
    return root


def _snapshot(ws: Path):
    return table(ws, IMAGES_SQL), table(ws, PATHS_SQL.replace("source, ", ""))


def test_sigkill_mid_run_then_resume_gives_the_same_catalog(tmp_path, big_collection):
    reference = tmp_path / "reference"
    subprocess.run(_ingest_cmd(big_collection, reference), check=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_ingest_cmd(big_collection, killed, "--workers", "1"))
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            committed = table(killed, "SELECT COUNT(*) FROM paths")[0][0]
        except sqlite3.Error:
            continue
        if committed >= 20:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < committed < 500, "the kill must land mid-run"
    resumed = subprocess.run(_ingest_cmd(big_collection, killed, "--json"), check=True, capture_output=True, text=True)
    counts = __import__("json").loads(resumed.stdout)
    assert counts["unchanged"] >= committed and counts["validated"] == 500 - counts["unchanged"]
    assert _snapshot(killed) == _snapshot(reference)
    statuses = [r[0] for r in table(killed, "SELECT status FROM runs ORDER BY id")]
    assert statuses == ["interrupted", "completed"]
    assert table(killed, "PRAGMA integrity_check") == [("ok",)]


def test_two_processes_on_one_workspace(tmp_path, big_collection):
    ws = tmp_path / "shared"
    procs = [subprocess.Popen(_ingest_cmd(big_collection, ws, "--workers", "1"), stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert table(ws, "PRAGMA integrity_check") == [("ok",)]
    reference = tmp_path / "reference"
    subprocess.run(_ingest_cmd(big_collection, reference), check=True)
    assert _snapshot(ws) == _snapshot(reference)
    assert [r[0] for r in table(ws, "SELECT status FROM runs")] == ["completed", "completed"]

"""Integration: Pillow's own test images (about 1,060 broken, odd and hostile files) through ingest.

`make corpora` downloads them from PyPI (Pillow's source distribution); `make test` sets
PIXELMINE_PILLOW_CORPUS. Every file must end with a status, nothing may crash or hang the run, and
memory must stay bounded.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pixelmine.ingest import IMAGE_EXTENSIONS, STATUSES

CORPUS = os.environ.get("PIXELMINE_PILLOW_CORPUS")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CORPUS, reason="run `make corpora` and set PIXELMINE_PILLOW_CORPUS (make test does)"),
]

# Known answers for files whose nature is documented by their names in Pillow's test suite.
EXPECTED = {
    "hopper.jpg": "ok",
    "hopper.webp": "ok",
    "hopper_orientation_6.jpg": "ok",
    "truncated_image.png": "truncated",
    "truncated_jpeg.jpg": "truncated",
    "decompression_bomb.gif": "too_large",
    "decompression_bomb.ico": "too_large",
    "duplicate_xref_entry.pdf": "not_an_image",
    "broken_data_stream.png": "corrupt",
    "zero_width.gif": "corrupt",
    "16bit.cropped.tif": "ok",
    "hopper_16bit.pgm": "ok",
    # formats whose extensions ingest lists since the set follows Pillow's registry
    "hopper.xpm": "ok",
    "hopper.fli": "ok",
    "hopper.pfm": "ok",
    "deerstalker.cur": "ok",
    "hopper.spider": "ok",
    "hopper.ras": "ok",
    "fli_oob/03r/03r00.fli": "corrupt",  # fuzzed: an FLI signature, a header Pillow refuses
    "no_cursors.cur": "corrupt",
}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    ws = tmp_path_factory.mktemp("pillow-ws")
    corpus = Path(CORPUS).resolve()
    # The peak is measured in a wrapper process whose only descendants are this ingest and its workers:
    # RUSAGE_CHILDREN of the test process itself would also count every earlier test's subprocesses.
    peak_file = ws / "peak-rss-kib"
    wrapper = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[2:]); "
               "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
               "sys.exit(done.returncode)")
    done = subprocess.run([sys.executable, "-c", wrapper, str(peak_file), sys.executable, "-m", "pixelmine.cli",
                           "ingest", str(corpus), "--include", "*", "-w", str(ws), "--json"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    peak_kib = int(peak_file.read_text())
    files = [p for p in corpus.rglob("*") if p.is_file() and not p.name.startswith(".")
             and not any(part.startswith(".") for part in p.relative_to(corpus).parts)]
    return ws, corpus, json.loads(done.stdout), files, peak_kib


def test_every_file_ends_with_a_known_status(ingested):
    ws, corpus, result, files, _ = ingested
    assert result["files_seen"] == len(files) > 900
    with sqlite3.connect(ws / "catalog.sqlite") as conn:
        rows = dict(conn.execute("SELECT path, status FROM paths").fetchall())
        errors = conn.execute("SELECT COUNT(*) FROM paths WHERE status != 'ok' AND (error IS NULL OR error = '')").fetchone()[0]
    assert len(rows) == len(files)
    assert set(rows.values()) <= set(STATUSES)
    assert errors == 0, "every problem carries a message"
    for name, status in EXPECTED.items():
        assert rows[str(corpus / name)] == status, name
    # Most of the corpus is valid images in odd formats; the rest spreads over the problem statuses.
    counts = result["by_status"]
    assert counts["ok"] > 600
    assert {"corrupt", "truncated", "too_large", "not_an_image", "unsupported_format"} <= set(counts)


def test_odd_images_record_their_properties(ingested):
    ws, corpus, *_ = ingested
    with sqlite3.connect(ws / "catalog.sqlite") as conn:
        def props(name):
            return conn.execute("SELECT i.mode, i.bit_depth, i.orientation, i.frames FROM paths p JOIN images i "
                                "ON i.id = p.image_id WHERE p.path = ?", (str(corpus / name),)).fetchone()

        assert props("hopper_orientation_6.jpg")[2] == 6
        assert props("16bit.cropped.tif")[1] == 16
        assert props("iss634.gif")[3] > 1  # animated


def test_memory_stays_bounded(ingested):
    *_, peak_kib = ingested
    assert peak_kib < 2 * 1024 * 1024, f"peak RSS of a worker {peak_kib / 1024:.0f} MiB"


def test_second_run_decodes_nothing(ingested):
    ws, corpus, first, *_ = ingested
    again = subprocess.run([sys.executable, "-m", "pixelmine.cli", "ingest", str(corpus), "--include", "*",
                            "-w", str(ws), "--json"], capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(again.stdout)
    assert result["validated"] == 0 and result["unchanged"] == first["files_seen"]
    assert result["by_status"] == first["by_status"]


@pytest.fixture(scope="module")
def by_extension(tmp_path_factory):
    """The corpus with the default extension filter (no --include): what is listed, what is skipped."""
    ws = tmp_path_factory.mktemp("pillow-ws-default")
    corpus = Path(CORPUS).resolve()
    done = subprocess.run([sys.executable, "-m", "pixelmine.cli", "ingest", str(corpus), "-w", str(ws), "--json"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return ws, corpus, json.loads(done.stdout)


def test_files_left_out_for_their_extension_are_counted(by_extension, ingested):
    ws, corpus, result = by_extension
    files = ingested[3]
    expected: dict[str, int] = {}
    for p in files:
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            expected[p.suffix.lower()] = expected.get(p.suffix.lower(), 0) + 1
    assert result["skipped_by_extension"] == expected
    assert result["skipped"] == sum(expected.values()) and result["files_seen"] + result["skipped"] == len(files)
    # Pillow 13.0's corpus: 1,060 files, 130 of them skipped before the set followed Pillow's registry
    # (44 .fli among them), 66 now: 15 without an extension, 11 .bin, palettes, fonts, pickles, FlashPix...
    assert 50 <= result["skipped"] <= 80 and ".fli" not in expected and ".xpm" not in expected
    assert expected.get(".bin", 0) >= 10
    with sqlite3.connect(ws / "catalog.sqlite") as conn:
        rows = dict(conn.execute("SELECT path, status FROM paths").fetchall())
    assert set(rows.values()) <= set(STATUSES)
    for name, status in EXPECTED.items():
        if Path(name).suffix.lower() in IMAGE_EXTENSIONS:  # the .pdf is left out, and counted above
            assert rows[str(corpus / name)] == status, name

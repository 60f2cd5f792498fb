"""Privacy: do location fields and thumbnails survive ``pixelmine export-data``? Read back by three readers.

    .venv/bin/python benchmarks/privacy.py                  # every fixture, location stripped
    .venv/bin/python benchmarks/privacy.py --strip-metadata  # everything but colour removed
    .venv/bin/python benchmarks/privacy.py --repeats 20      # more timing runs per file

The fixtures are tests/privacy_fixtures.py's planted files: JPEGs with an EXIF GPS IFD, an XMP packet with
GPS and place names, IPTC City/Country, EXIF IFD1, JFIF and Photoshop thumbnails and a preview JPEG after EOI
(orientation 6 and 1); PNGs with eXIf (GPS, IFD1) and XMP iTXt (orientation 1 and 6); WebPs with EXIF and XMP
chunks (lossless, and lossy with orientation 6); a TIFF with GPS; a HEIC with EXIF GPS and XMP (pillow-heif).
They are ingested into a fresh workspace and exported with ``export_data`` (faces not looked for: the
fixtures have none), then every original and every copy is read by pixelmine's reader, by exifread and by
exiftool (when /usr/bin/exiftool exists), and scanned for the planted bytes (coordinates as packed rationals,
place names, the thumbnails' own bytes; also hex-encoded). "n/a": exifread cannot read that container (its
WebP reader trips on odd-sized chunks; it asserts on libheif's HEIC layout). Seconds per file: the median of
``--repeats`` runs of ``clean_bytes`` alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import privacy_fixtures as pf  # noqa: E402  (tests/privacy_fixtures.py)

import pixelmine  # noqa: E402
from pixelmine.privacy.export import export_data  # noqa: E402
from pixelmine.privacy.metadata import metadata_of_bytes  # noqa: E402
from pixelmine.privacy.strip import clean_bytes  # noqa: E402
from auto import machine  # noqa: E402  (benchmarks/auto.py)

EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "tiff": ".tif", "heic": ".heic"}


def readers(data: bytes, tmp: Path) -> dict:
    own = metadata_of_bytes(data)
    exifread = pf.exifread_report(data)
    exiftool = pf.exiftool_report(data, tmp) if pf.have_exiftool() else None
    return {"own": own, "exifread": exifread, "exiftool": exiftool}


def exifread_counts(report: dict, own_has_exif: bool) -> tuple[str, str]:
    if report.get("error") or (own_has_exif and not report["tags"]):
        return "n/a", "n/a"
    return str(len(report["location"])), str(len(report["thumbnails"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strip-metadata", action="store_true", help="Remove every metadata block, not only location.")
    parser.add_argument("--repeats", type=int, default=5, help="Timing runs of clean_bytes per file.")
    args = parser.parse_args()

    print(f"machine: {machine()}; load {os.getloadavg()[0]:.2f}; exiftool: "
          f"{'yes' if pf.have_exiftool() else 'not installed'}; strip_metadata={args.strip_metadata}")
    fixtures = pf.fixture_set()
    with tempfile.TemporaryDirectory(prefix="pixelmine-privacy-bench-") as scratch:
        tmp = Path(scratch)
        source = tmp / "data" / "planted"
        source.mkdir(parents=True)
        names = {}
        for name, (data, _) in fixtures.items():
            path = source / f"{name}{EXTENSIONS[name.split('-')[0]]}"
            path.write_bytes(data)
            names[str(path)] = name
        ws = pixelmine.open_workspace(tmp / "ws")
        ws.ingest([tmp / "data"], labels_from_folders=True, progress=False)
        started = time.perf_counter()
        result = export_data(ws.catalog, ws.root, tmp / "exported", anonymise_faces=None,
                             strip_metadata=args.strip_metadata)
        export_s = time.perf_counter() - started
        ws.close()
        exported = {names[row.original_path]: row for row in result.rows}

        header = ("fixture", "format out", "location own", "location exifread", "location exiftool",
                  "thumbnails own", "thumbnails exifread", "thumbnails exiftool", "raw hits", "JPEG scan identical",
                  "pixels", "s / file")
        rows, totals = [], {"location": 0, "thumbnails": 0, "raw": 0, "scan_bad": 0, "files": 0}
        for name in sorted(fixtures):
            data, needles = fixtures[name]
            row = exported.get(name)
            if row is None or not row.exported_path:
                rows.append((name, "FAILED", row.note if row else "not exported", *[""] * 9))
                continue
            copy = (tmp / "exported" / row.exported_path).read_bytes()
            before, after = readers(data, tmp), readers(copy, tmp)
            er_before = exifread_counts(before["exifread"], "EXIF" in before["own"].blocks)
            er_after = exifread_counts(after["exifread"], "EXIF" in after["own"].blocks)
            et = (lambda r, key: "-" if r is None else str(len(r[key])))
            hits = pf.raw_hits(copy, needles)
            identical = "-" if row.format != "JPEG" else ("yes" if pf.jpeg_scan(copy) == pf.jpeg_scan(data) else "NO")
            timings = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                clean_bytes(data, strip_metadata=args.strip_metadata)
                timings.append(time.perf_counter() - t0)
            rows.append((name, row.format,
                         f"{len(before['own'].location)} -> {len(after['own'].location)}",
                         f"{er_before[0]} -> {er_after[0]}",
                         f"{et(before['exiftool'], 'location')} -> {et(after['exiftool'], 'location')}",
                         f"{len(before['own'].thumbnails)} -> {len(after['own'].thumbnails)}",
                         f"{er_before[1]} -> {er_after[1]}",
                         f"{et(before['exiftool'], 'thumbnails')} -> {et(after['exiftool'], 'thumbnails')}",
                         f"{len(hits)} of {len(needles)}" + (f" ({', '.join(hits)})" if hits else ""),
                         identical, row.pixels, f"{statistics.median(timings):.4f}"))
            survivors = len(after["own"].location) + (len(after["exiftool"]["location"]) if after["exiftool"] else 0) \
                + len(after["exifread"]["location"])
            thumbs = len(after["own"].thumbnails) + (len(after["exiftool"]["thumbnails"]) if after["exiftool"] else 0) \
                + len(after["exifread"]["thumbnails"])
            totals["location"] += survivors
            totals["thumbnails"] += thumbs
            totals["raw"] += len(hits)
            totals["scan_bad"] += identical == "NO"
            totals["files"] += 1

    print(f"\nexport_data of {len(fixtures)} planted files in {export_s:.2f} s "
          f"({result.counts['exported']} exported, {result.counts['failed']} failed); before -> after per reader")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    print(f"\ntotal over {totals['files']} files: {totals['location']} location fields and {totals['thumbnails']} "
          f"thumbnail tags survived (all readers), {totals['raw']} raw byte hits, {totals['scan_bad']} JPEGs with "
          f"changed scan data; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

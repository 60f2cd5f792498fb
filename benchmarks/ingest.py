"""Ingest throughput: pixelmine vs a naive single-process loop (Image.open + load), in the same run.

    .venv/bin/python benchmarks/ingest.py [--generated 20000] [--repeats 3]

Data sets: the embedded demo set (2,000 textile JPEGs, 250x250) and N generated JPEGs (640x480, made from
the demo photos by cropping, scaling and flipping). Files are read once before timing so that both
contenders see a warm page cache. pixelmine does more per file than the naive loop: sha256, header
checks, PNG CRC verification, full decode, a perceptual hash, and a committed catalog row; the naive loop
only decodes. The table reports files/s (median over repeats) and the ratio pixelmine / naive, plus the
re-run of an unchanged folder (the path+size+mtime fast path).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pixelmine  # noqa: E402
from pixelmine.demo import demo_data_path  # noqa: E402


def naive_loop(paths: list[Path]) -> int:
    ok = 0
    for path in paths:
        try:
            with Image.open(path) as img:
                img.load()
            ok += 1
        except Exception:
            pass
    return ok


def _make_variant(args) -> None:
    source, target, seed = args
    import random

    rng = random.Random(seed)
    with Image.open(source) as img:
        img = img.convert("RGB")
        w, h = img.size
        side = rng.randint(int(0.6 * min(w, h)), min(w, h))
        left, top = rng.randint(0, w - side), rng.randint(0, h - side)
        img = img.crop((left, top, left + side, top + side)).resize((640, 480), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img.save(target, quality=rng.randint(80, 95))


def generate(count: int, out: Path, sources: list[Path]) -> list[Path]:
    jobs = []
    for i in range(count):
        target = out / f"g{i // 1000:03d}" / f"{i:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((sources[i % len(sources)], target, i))
    with ProcessPoolExecutor() as pool:
        list(pool.map(_make_variant, jobs, chunksize=64))
    return [job[1] for job in jobs]


def warm(paths: list[Path]) -> None:
    for path in paths:
        path.read_bytes()


def measure(name: str, folder: Path, paths: list[Path], repeats: int, scratch: Path) -> dict:
    warm(paths)
    naive, ours, rerun = [], [], []
    for r in range(repeats):
        start = time.perf_counter()
        naive_loop(paths)
        naive.append(len(paths) / (time.perf_counter() - start))

        ws_dir = scratch / f"ws-{name}-{r}"
        with pixelmine.open_workspace(ws_dir) as ws:
            start = time.perf_counter()
            result = ws.ingest(folder, progress=False)
            ours.append(len(paths) / (time.perf_counter() - start))
            assert result.files_seen == len(paths), (result.files_seen, len(paths))
            start = time.perf_counter()
            again = ws.ingest(folder, progress=False)
            rerun.append(len(paths) / (time.perf_counter() - start))
            assert again.validated == 0
        shutil.rmtree(ws_dir)
    return {"data": name, "files": len(paths), "naive": statistics.median(naive),
            "pixelmine": statistics.median(ours), "rerun": statistics.median(rerun)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generated", type=int, default=20_000, help="number of generated 640x480 JPEGs")
    parser.add_argument("--repeats", type=int, default=3, help="runs per data set; the median is reported")
    args = parser.parse_args()

    demo = demo_data_path()
    demo_paths = sorted(p for p in demo.rglob("*.jpg"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="pixelmine-bench-") as tmp:
        scratch = Path(tmp)
        rows.append(measure("demo (2,000 x 250x250 JPEG)", demo, demo_paths, args.repeats, scratch))
        if args.generated:
            gen_dir = scratch / "generated"
            start = time.perf_counter()
            gen_paths = generate(args.generated, gen_dir, demo_paths)
            print(f"generated {len(gen_paths):,} JPEGs in {time.perf_counter() - start:.0f} s", file=sys.stderr)
            rows.append(measure(f"generated ({args.generated:,} x 640x480 JPEG)", gen_dir, gen_paths,
                                max(1, args.repeats - 2) if args.generated > 5000 else args.repeats, scratch))

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"\nmachine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, Pillow {Image.__version__}")
    header = f"{'data set':<34} {'files':>7} {'naive files/s':>14} {'pixelmine files/s':>18} {'ratio':>6} {'re-run files/s':>15}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['data']:<34} {row['files']:>7,} {row['naive']:>14,.0f} {row['pixelmine']:>18,.0f} "
              f"{row['pixelmine'] / row['naive']:>5.2f}x {row['rerun']:>15,.0f}")


if __name__ == "__main__":
    main()

"""Faults: SIGKILL at ten random moments of each stage (ingest, extract, discover, train) of the default
pipeline, on 300 photo-sized JPEGs in 3 classes. After every kill: no process of the killed command left
5 s later, ``PRAGMA integrity_check`` ok, and the same command run again ends with exactly the result of
an uninterrupted run (catalog rows, feature vectors, findings and scores, model and test metrics).

    .venv/bin/python benchmarks/faults.py [--moments 10] [--images 300] [--stages ingest ...] [--workdir DIR]

ENOSPC at ten points of ingest and of extract is a test (``tests/test_fault_disk.py``), in-process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from faultkit import STAGES, campaign  # noqa: E402
from imagefactory import photo, save  # noqa: E402

import pixelmine  # noqa: E402
from pixelmine.defaults import DEFAULT_BACKBONE  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--moments", type=int, default=10, help="random kill moments per stage")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES,
                        help="stages to kill, in pipeline order (each starts from the previous one's result)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pixelmine-bench-faults"))
    args = parser.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    images = args.workdir / "images"
    for k in range(args.images):
        save(photo(k, (800, 600)), images / "abc"[k % 3] / f"p{k:04d}.jpg", quality=90)
    print(f"pixelmine {pixelmine.__version__}; {args.images} JPEGs 800x600, backbone {DEFAULT_BACKBONE}, "
          f"{args.moments} SIGKILLs per stage; load before: {os.getloadavg()[0]:.2f}\n")
    started = time.perf_counter()
    reports = campaign(images, args.workdir / "states", moments=args.moments, backbone=DEFAULT_BACKBONE,
                       stages=args.stages)
    print()
    print(f"{'stage':<10}{'run s':>8}{'killed':>8}{'ended':>8}{'orphans':>9}{'catalog':>10}{'resumed':>12}")
    for r in reports:
        print(f"{r.stage:<10}{r.duration_s:>8.1f}{r.kills:>8}{r.finished_first:>8}{len(r.orphans):>9}"
              f"{'ok' if not r.damaged else 'DAMAGED':>10}"
              f"{'identical' if not r.different else f'{len(r.different)} differ':>12}")
    print(f"\n(killed: still running at the moment; ended: had finished first; {time.perf_counter() - started:.0f} s "
          f"in all; load after: {', '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores)")
    shutil.rmtree(args.workdir, ignore_errors=True)
    if any(r.orphans or r.damaged or r.different for r in reports):
        sys.exit(1)


if __name__ == "__main__":
    main()

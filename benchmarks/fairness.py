"""Fairness across groups: a planted spurious group, found by the group card and mended by --balance-groups.

    .venv/bin/python benchmarks/fairness.py            # about 10 minutes on 2 cores (extraction + default train)

The demo set (2,000 textile images, 3 classes) is split 70 / 15 / 15 (stratified, seeded) and a red frame
(8 % of the side) is drawn on copies of some images, recorded in the manifest column ``frame``:

- train + val: on 90 % of the ``local`` images and on 10 % of the others, so the frame says "local";
- test: on 10 % of the ``local`` images and on 50 % of the others, so it no longer does.

Then, as a newcomer would: ``ingest --manifest``, ``train --split-column split`` (the default automatic
model), ``fairness --by frame`` (does the card find the framed group?), and ``train --balance-groups frame``
(the head refitted group x class balanced). Reported: every group before and after, the worst group
(by the column's values, as the card ranks them) and the worst group x class cell, mean accuracy, and the
refit's time. Targets: worst-group accuracy +15 points or more, mean accuracy within 2 points (or better),
refit under 10 s.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pixelmine  # noqa: E402
from pixelmine.demo import demo_data_path  # noqa: E402
from auto import machine, print_table  # noqa: E402  (benchmarks/auto.py)

SEED = 0
SPURIOUS_CLASS = "local"
FRAME_SHARE = {("train", True): 0.9, ("train", False): 0.1, ("test", True): 0.1, ("test", False): 0.5}


def framed(path: Path, out: Path) -> None:
    image = Image.open(path).convert("RGB")
    side = max(2, round(0.08 * min(image.size)))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, image.width - 1, image.height - 1], outline=(220, 30, 30), width=side)
    image.save(out, quality=95)


def build(workdir: Path) -> Path:
    """The planted collection and its manifest (path, label, split, frame)."""
    data = workdir / "images"
    manifest = workdir / "manifest.csv"
    if manifest.exists():
        return manifest
    shutil.rmtree(data, ignore_errors=True)
    rng = np.random.default_rng(SEED)
    rows = []
    source = demo_data_path()
    for label in sorted(os.listdir(source)):
        files = sorted(p for p in (source / label).iterdir() if p.is_file())
        order = rng.permutation(len(files))
        n_train, n_val = round(0.70 * len(files)), round(0.15 * len(files))
        for rank, k in enumerate(order):
            split = "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
            share = FRAME_SHARE[("test" if split == "test" else "train", label == SPURIOUS_CLASS)]
            frame = bool(rng.random() < share)
            out = data / label / files[k].name
            out.parent.mkdir(parents=True, exist_ok=True)
            if frame:
                framed(files[k], out)
            else:
                shutil.copyfile(files[k], out)
            rows.append((str(out), label, split, "framed" if frame else "plain"))
    tmp = manifest.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "frame"])
        writer.writerows(rows)
    tmp.rename(manifest)
    return manifest


def groups_table(before: dict, after: dict) -> list[tuple]:
    rows = []
    for group in sorted(g["group"] for g in before["groups"]):
        b = next(g for g in before["groups"] if g["group"] == group)
        a = next(g for g in after["groups"] if g["group"] == group)
        for name, stats in (("before", b), ("after", a)):
            low, high = stats["accuracy_interval"] or (float("nan"), float("nan"))
            recall = ", ".join(f"{c} {v:.2f}" for c, v in stats["recall"].items() if v is not None)
            rows.append((group, name, stats["n"], f"{stats['accuracy']:.3f} [{low:.2f}, {high:.2f}]", recall))
    return rows


def worst_cell(report: dict) -> tuple[str, float]:
    cells = [(f"{g['group']} / {c}", v) for g in report["groups"] if g["ranked"] for c, v in g["recall"].items()
             if v is not None and g["classes_present"].get(c, 0) >= 5]
    return min(cells, key=lambda cell: cell[1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "bench-fairness")
    parser.add_argument("--fresh", action="store_true", help="rebuild the workspace (the images are kept)")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}; load at start {os.getloadavg()[0]:.2f}")
    manifest = build(args.workdir)
    root = args.workdir / "ws"
    if args.fresh:
        shutil.rmtree(root, ignore_errors=True)
    ws = pixelmine.open_workspace(root)
    ws.ingest(manifest=str(manifest), progress=False)
    t0 = time.perf_counter()
    base = ws.train(name="default", split={"column": "split"}, progress=False)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    card = ws.fairness(by="frame", model="default", progress=False)
    card_s = time.perf_counter() - t0
    report = card.report("frame")
    found = [g for g in report.harmful_gaps() if g.group == "framed"]
    print(f"\nbase model: {base!r} ({train_s:.0f} s to train); the card took {card_s:.1f} s")
    low, high = report.largest_gap["interval"]
    print(f"the card's worst group: {report.worst_group!r}; largest gap {report.largest_gap['gap']:.3f} "
          f"[{low:.3f}, {high:.3f}]; framed group flagged: {bool(found)} "
          f"({'; '.join(g.text() for g in found[:3])})")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    balanced = ws.train(balance_groups="frame", balance_base="default", progress=False)
    total_s = time.perf_counter() - t0
    result = balanced.balance
    before, after = result["before"], result["after"]
    print_table("Every group before and after `train --balance-groups frame` (test split)",
                ("group", "model", "n", "accuracy [95 % CI]", "recall per class"), groups_table(before, after))
    worst_before = min(g["accuracy"] for g in before["groups"] if g["ranked"])
    worst_after = min(g["accuracy"] for g in after["groups"] if g["ranked"])
    cell_before, cell_after = worst_cell(before), worst_cell(after)
    mean_before, mean_after = result["before_accuracy"], result["after_accuracy"]
    print_table(f"Summary (load {load:.2f} when the refit started)", ("measure", "before", "after", "change"), [
        ("worst group accuracy (column values)", f"{worst_before:.3f}", f"{worst_after:.3f}",
         f"{100 * (worst_after - worst_before):+.1f} points"),
        (f"worst group x class cell ({cell_before[0]} -> {cell_after[0]})", f"{cell_before[1]:.3f}",
         f"{cell_after[1]:.3f}", f"{100 * (cell_after[1] - cell_before[1]):+.1f} points"),
        ("mean accuracy (test)", f"{mean_before:.3f}", f"{mean_after:.3f}",
         f"{100 * (mean_after - mean_before):+.1f} points"),
        ("head refit, s", "", f"{result['refit_s']:.2f}", ""),
        ("whole `train --balance-groups` (groups, refit, OOF, test, save), s", "", f"{total_s:.1f}", ""),
    ])
    print(f"\nload at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

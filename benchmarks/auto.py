"""Learning without expertise: automatic model selection, the clean loop, and what to label next.

    .venv/bin/python benchmarks/auto.py                       # all three parts (about an hour on 2 cores)
    .venv/bin/python benchmarks/auto.py --part auto --data demo
    .venv/bin/python benchmarks/auto.py --part clean
    .venv/bin/python benchmarks/auto.py --part active

auto    the default ``pixelmine train`` (automatic selection, default budget) from the state a newcomer is in
        after ``ingest`` + ``extract`` (only the reference MobileNetV2 features cached), against every fixed
        candidate it considered, trained alone on the same split; on the demo set and on a 10,000-image
        stratified sample of Fashion-MNIST.
clean   10 % of the demo's train + val labels flipped to another class (seeded; test labels untouched, same
        split as ``auto``): the default ``train``, then ``discover`` + ``train --clean``, against cleanlab's
        ``CleanLearning`` wrapped around the same head on the same features, in the same run.
active  Fashion-MNIST (the 10,000-image sample): from 20 labels per class, 10 rounds of 200 labels chosen by
        ``suggest``'s ranking or at random; a logistic probe on MobileNetV2 features after each round; test
        accuracy per round, mean over 3 seeds.

Workspaces live in --workdir (default .cache/bench-auto); ``auto`` starts from a fresh workspace each run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pixelmine  # noqa: E402
from pixelmine.demo import demo_data_path  # noqa: E402
from learn import FASHION_CLASSES, FASHION_DIR, _read_idx  # noqa: E402  (benchmarks/learn.py)

SEED = 0


def machine() -> str:
    """The CPU model and core count (load is reported where each measurement starts)."""
    name = platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


# -- data -----------------------------------------------------------------------------------------------
def fashion_sample(workdir: Path, n: int = 10_000) -> Path:
    """A stratified sample of ``n`` Fashion-MNIST images (official train and test pooled) as PNG class folders."""
    folder = workdir / f"fashion-{n}"
    if (folder / ".done").exists():
        return folder
    if not (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").exists():
        raise SystemExit("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist")
    from PIL import Image

    images = np.concatenate([_read_idx(FASHION_DIR / f"{p}-images-idx3-ubyte.gz") for p in ("train", "t10k")])
    labels = np.concatenate([_read_idx(FASHION_DIR / f"{p}-labels-idx1-ubyte.gz") for p in ("train", "t10k")])
    rng = np.random.default_rng(SEED)
    for c in range(10):
        for k in rng.choice(np.flatnonzero(labels == c), size=n // 10, replace=False):
            path = folder / FASHION_CLASSES[c] / f"{k:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[k], "L").save(path)
    (folder / ".done").write_text("")
    return folder


def source_of(data: str, workdir: Path) -> Path:
    return demo_data_path() if data == "demo" else fashion_sample(workdir)


def fresh_workspace(data: str, workdir: Path):
    """A new workspace in the state a newcomer is in after `pixelmine ingest` + `pixelmine extract`."""
    root = workdir / data / "ws"
    shutil.rmtree(root, ignore_errors=True)
    ws = pixelmine.open_workspace(root)
    ws.ingest(str(source_of(data, workdir)), labels_from_folders=True, progress=False)
    ws.extract(progress=False)
    return ws


def accuracy_cell(test: dict) -> str:
    low, high = test["intervals"].get("accuracy", (float("nan"), float("nan")))
    return f"{test['metrics']['accuracy']:.3f} [{low:.3f}, {high:.3f}]"


def print_table(title: str, header: tuple, rows: list[tuple]) -> None:
    print(f"\n{title}")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


# -- part 1: automatic selection against every fixed candidate -------------------------------------------
def bench_auto(data: str, workdir: Path) -> dict:
    ws = fresh_workspace(data, workdir)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    auto = ws.train(progress=False)  # exactly `pixelmine train`
    auto_s = time.perf_counter() - started
    selection = auto.metrics["selection"]
    final = {(t["features"], t["head"]): t for t in selection["leaderboard"] if t["rung"] == "final" and t["score"] is not None}
    screen = {(t["features"], t["head"]): t for t in selection["leaderboard"] if t["rung"] == "screen" and t["score"] is not None}
    considered = []
    for trial in selection["leaderboard"]:
        if trial["head"] in ("*", "finetune"):
            continue
        key = (trial["features"], trial["head"])
        if key not in considered:
            considered.append(key)
    rows, fixed = [], {}
    # the fixed candidates in their own workspace (same images, same default split), kept between runs: a
    # model already trained there on the same data is reused
    fixed_ws = pixelmine.open_workspace(workdir / data / "fixed")
    if not fixed_ws.images():
        fixed_ws.ingest(str(source_of(data, workdir)), labels_from_folders=True, progress=False)
    for features, head in considered:
        name = f"fixed-{head}-{features}".replace(":", "-").replace("@", "-").replace("+", "-and-")
        t0 = time.perf_counter()
        try:
            model = fixed_ws.model(name)
            if not model.is_current():
                raise pixelmine.NotFittedError(name)
        except pixelmine.NotFittedError:
            model = fixed_ws.train(head, backbone=features, name=name, progress=False)
        fixed[(features, head)] = model.metrics["test"]["metrics"]["accuracy"]
        cv = final.get((features, head)) or screen.get((features, head))
        rows.append((f"{head} on {features}", accuracy_cell(model.metrics["test"]),
                     "" if cv is None else f"{cv['score']:.3f} ± {cv['spread']:.3f} ({cv['rung']}, {cv['n_images']})",
                     f"{time.perf_counter() - t0:.0f}"))
    best_key = max(fixed, key=fixed.get)
    baseline = fixed.get(("mobilenet_v2", "logreg"))
    chosen = selection["chosen"]
    auto_acc = auto.metrics["test"]["metrics"]["accuracy"]
    rows.sort(key=lambda r: -float(r[1].split()[0]))
    print_table(f"auto vs fixed on {data} ({len(ws.images())} images; {machine()}, load {load:.2f} at the start)",
                ("candidate (trained alone)", "test accuracy [95 % CI]", "CV balanced accuracy in auto (rung, images)",
                 "train s (0: reused)"), rows)
    print(f"\ndefault `pixelmine train`: {chosen['head']} on {chosen['features']}, test accuracy "
          f"{accuracy_cell(auto.metrics['test'])}; search {selection['elapsed_s']:.0f} s of a "
          f"{selection['budget_s']:.0f} s budget, whole train {auto_s:.0f} s")
    print(f"best fixed candidate: {best_key[1]} on {best_key[0]} {fixed[best_key]:.3f} (auto - best = "
          f"{auto_acc - fixed[best_key]:+.3f}); plain logistic probe on mobilenet_v2: {baseline:.3f} "
          f"(auto - plain = {auto_acc - baseline:+.3f})")
    for note in selection["notes"]:
        print(f"note: {note}")
    return {"data": data, "auto": auto_acc, "auto_choice": chosen, "search_s": selection["elapsed_s"],
            "train_s": auto_s, "best_fixed": [list(best_key), fixed[best_key]], "plain_logreg": baseline,
            "fixed": {f"{h} on {f}": a for (f, h), a in fixed.items()}}


# -- part 2: the clean loop on planted label noise --------------------------------------------------------
def bench_clean(workdir: Path, rate: float = 0.10) -> dict:
    reference = pixelmine.open_workspace(workdir / "demo" / "fixed")
    if not reference.images():
        reference.ingest(str(source_of("demo", workdir)), labels_from_folders=True, progress=False)
    for backbone in ("mobilenet_v2", "full:mobilenet_v2@250", "efficientnet_lite0", "full:efficientnet_lite0@250"):
        reference.extract(backbone, progress=False)
    split = reference.split()  # the stored split (same settings and images: the one `auto` measured on)
    rows = {r["id"]: r for r in reference.images()}
    rng = np.random.default_rng(SEED)
    classes = sorted(set(split.labels.tolist()))
    training = [k for k, s in enumerate(split.splits) if s in ("train", "val")]
    flipped = set(rng.choice(training, size=int(round(rate * len(training))), replace=False).tolist())
    root = workdir / "demo-noisy"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    manifest = root / "manifest.csv"
    true_label = {}
    with manifest.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["path", "label", "split"])
        for k, image_id in enumerate(split.ids):
            label = str(split.labels[k])
            true_label[image_id] = label
            if k in flipped:
                label = str(rng.choice([c for c in classes if c != label]))
            writer.writerow([rows[image_id]["path"], label, split.splits[k]])
    ws = pixelmine.open_workspace(root / "ws")
    ws.ingest(manifest=str(manifest), progress=False)
    shutil.copytree(reference.root / "features", ws.root / "features", dirs_exist_ok=True)  # same bytes: same vectors
    options = {"split": {"column": "split"}}
    load = os.getloadavg()[0]
    noisy = ws.train(name="noisy", progress=False, **options)  # `pixelmine train --split-column split`
    ws.discover(progress=False)
    cleaned = ws.train(name="cleaned", clean=True, progress=False, **options)
    cleaning = cleaned.metrics["cleaning"]
    plan = json.loads((cleaned.dir / "cleaning.json").read_text())
    left = {item["image_id"] for item in plan["left_out"]}
    flipped_ids = {split.ids[k] for k in flipped}
    # cleanlab's CleanLearning around the same head, same features, same train + val, same test
    from cleanlab.classification import CleanLearning
    from sklearn.base import clone

    import joblib
    from pixelmine.learn.joined import load_feature_set

    head = joblib.load(cleaned.dir / "head.joblib")["head"]
    features = load_feature_set(ws.root, cleaned.backbone)
    with np.load(cleaned.dir / "data.npz") as arrays:
        ids, noisy_labels, splits = arrays["ids"].tolist(), arrays["labels"], arrays["splits"]
    X = np.asarray(features.vectors[features.rows(ids)], dtype=np.float32)
    fit = np.isin(splits, ["train", "val", "left_out"])
    test = splits == "test"
    y_true = np.asarray([true_label[i] for i in ids])
    plain = clone(head).fit(X[fit], noisy_labels[fit])
    plain_acc = float((plain.predict(X[test]) == y_true[test]).mean())
    codes = np.asarray(classes)  # CleanLearning wants class indices, not names
    learning = CleanLearning(clf=clone(head), seed=SEED, cv_n_folds=5).fit(
        X[fit], np.searchsorted(codes, noisy_labels[fit]))
    cl_acc = float((codes[learning.predict(X[test])] == y_true[test]).mean())
    oracle = float((clone(head).fit(X[fit], y_true[fit]).predict(X[test]) == y_true[test]).mean())
    ours_acc = cleaned.metrics["test"]["metrics"]["accuracy"]
    paired = cleaning["paired_accuracy_difference"]
    print_table(f"clean loop on the demo, {len(flipped)} of {len(training)} train + val labels flipped "
                f"({machine()}, load {load:.2f} at the start; {test.sum()} untouched test images)",
                ("training", "test accuracy"), [
                    ("default `pixelmine train` on the noisy labels", accuracy_cell(noisy.metrics["test"])),
                    (f"`train --clean` ({cleaned.head} on {cleaned.backbone})", accuracy_cell(cleaned.metrics["test"])),
                    ("  in-run before: same head and settings, uncleaned", f"{cleaning['before']['metrics']['accuracy']:.3f}"),
                    ("cleanlab CleanLearning, same head, same features", f"{cl_acc:.3f}"),
                    ("  same head without CleanLearning (its before)", f"{plain_acc:.3f}"),
                    ("same head on the true labels (ceiling)", f"{oracle:.3f}")])
    recovered = ours_acc - noisy.metrics["test"]["metrics"]["accuracy"]
    print(f"\nclean loop: {len(left)} left out ({plan['counts']}); {len(left & flipped_ids)} of them planted flips "
          f"(precision {len(left & flipped_ids) / max(1, len(left)):.2f}, recall "
          f"{len(left & flipped_ids) / len(flipped_ids):.2f}); paired difference on the same test images "
          f"{paired['difference']:+.3f} [{paired['interval'][0]:+.3f}, {paired['interval'][1]:+.3f}]")
    print(f"recovered vs the default train: {recovered:+.3f}; CleanLearning vs its before: {cl_acc - plain_acc:+.3f}")
    return {"noisy": noisy.metrics["test"]["metrics"]["accuracy"], "cleaned": ours_acc,
            "in_run_before": cleaning["before"]["metrics"]["accuracy"], "cleanlearning": cl_acc,
            "cleanlearning_before": plain_acc, "oracle": oracle, "left_out": len(left),
            "flips_found": len(left & flipped_ids), "flips": len(flipped_ids), "paired": paired}


# -- part 3: active learning curve --------------------------------------------------------------------------
def bench_active(workdir: Path, seeds=(0, 1, 2), start_per_class: int = 20, batch: int = 200, rounds: int = 10) -> dict:
    from pixelmine.learn.heads import LogisticProbe
    from pixelmine.learn.suggest import rank_for_labelling

    ws = pixelmine.open_workspace(workdir / "fashion" / "fixed")
    if not ws.images():
        ws.ingest(str(source_of("fashion", workdir)), labels_from_folders=True, progress=False)
    ws.extract(progress=False)
    split = ws.split()
    features = ws.features()
    X = np.asarray(features.vectors[features.rows(split.ids)], dtype=np.float32)
    y = split.labels
    pool_rows = np.flatnonzero(split.splits != "test")
    test_rows = np.flatnonzero(split.splits == "test")
    load = os.getloadavg()[0]
    curves = {"suggest": [], "random": []}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        start = np.concatenate([rng.choice(pool_rows[y[pool_rows] == c], size=start_per_class, replace=False)
                                for c in sorted(set(y.tolist()))])
        for strategy in curves:
            labelled = list(start)
            curve = []
            for step in range(rounds + 1):
                head = LogisticProbe(random_state=seed).fit(X[labelled], y[labelled])
                curve.append((len(labelled), float((head.predict(X[test_rows]) == y[test_rows]).mean())))
                if step == rounds:
                    break
                rest = np.setdiff1d(pool_rows, labelled)
                if strategy == "random":
                    picked = rng.choice(rest, size=batch, replace=False)
                else:
                    order, _ = rank_for_labelling(X[rest], head.predict_proba(X[rest]), batch, seed=seed)
                    picked = rest[order]
                labelled += picked.tolist()
            curves[strategy].append(curve)
    mean = {s: np.mean([[acc for _, acc in c] for c in curves[s]], axis=0) for s in curves}
    counts = [n for n, _ in curves["random"][0]]
    rows = [(n, f"{mean['random'][k]:.3f}", f"{mean['suggest'][k]:.3f}") for k, n in enumerate(counts)]
    print_table(f"active learning on Fashion-MNIST ({len(pool_rows)} pool, {len(test_rows)} test images; mean of "
                f"{len(seeds)} seeds; {machine()}, load {load:.2f} at the start)",
                ("labels", "random: test accuracy", "suggest: test accuracy"), rows)
    target = mean["random"][-1]
    reached = next((counts[k] for k in range(len(counts)) if mean["suggest"][k] >= target), None)
    share = None if reached is None else reached / counts[-1]
    print(f"\nrandom's final accuracy {target:.3f} at {counts[-1]} labels; suggest reaches it at "
          f"{reached} labels ({share:.0%} of them)" if reached else f"\nsuggest never reached {target:.3f}")
    return {"labels": counts, "random": mean["random"].tolist(), "suggest": mean["suggest"].tolist(),
            "reached_at": reached, "share": share}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["auto", "clean", "active", "all"], default="all")
    parser.add_argument("--data", choices=["demo", "fashion", "both"], default="both", help="for --part auto")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "bench-auto")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine()}
    if args.part in ("auto", "all"):
        for data in (["demo", "fashion"] if args.data == "both" else [args.data]):
            results[f"auto-{data}"] = bench_auto(data, args.workdir)
    if args.part in ("clean", "all"):
        results["clean"] = bench_clean(args.workdir)
    if args.part in ("active", "all"):
        results["active"] = bench_active(args.workdir)
    with (args.workdir / "results.json").open("a") as out:
        out.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()

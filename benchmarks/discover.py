"""Discovery benchmark: plant ground truth into real data, measure each finder next to a baseline in one run.

    .venv/bin/python benchmarks/discover.py [--workdir DIR] [--fashion] [--fashion-copies] [--skip-demo]

Demo set (2,000 textile photos, ``pixelmine.demo.demo_data_path()``), planted:
- 200 near-duplicates of 200 distinct originals, 40 each: resized to 64 %, JPEG quality 30, 80 % crop, horizontal
  flip, brightness x1.2 / x0.8. Scored per pair (original, variant) against every pair pixelmine groups
  together; baseline: plain pHash (Hamming <= 8 of 64 bits); ablations show what each link type adds.
- 5 % of the originals' labels flipped at random (100 images). pixelmine (the more accurate of out-of-fold
  logistic regression and a leave-one-out k-NN vote, then cleanlab's ranking cut at its estimated count) vs cleanlab ``Datalab`` out of the box on the same
  features (``find_issues(features=X)``: its own k-NN probabilities). Needs ``pip install 'cleanlab[datalab]'``.
- 50 out-of-domain images (scikit-image / scikit-learn / matplotlib sample photos and LFW faces), AUROC of
  the outlier score; baseline: distance to the feature centroid.
- the whole ``Workspace.discover`` run, timed.

Fashion-MNIST (``--fashion``; Debian ``dataset-fashion-mnist``): the discover finders on 35,000 and 70,000
images, timed, to show how cost grows, on the raw 784 pixels (scaled 0..1).

Fashion-MNIST copies (``--fashion-copies``): the whole pipeline on the 70,000 images written as PNG files, with
1,000 planted copies (the five transforms above, 200 each) ingested after them: ingest, MobileNetV2 features,
the whole ``discover`` run timed, near-duplicate precision (of the pairs that hold a planted copy) and recall,
and a contact sheet of the groups it finds among Fashion-MNIST's own images.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

import pixelmine
from pixelmine.demo import demo_data_path
from pixelmine.discover import classes, duplicates, label_issues, outliers
from pixelmine.discover.neighbors import nearest_neighbours, normalise
from pixelmine.discover.pixel_stats import CACHE_NAME, pixel_stats

SEED = 0
TRANSFORMS = ("resize", "jpeg_q30", "crop80", "flip", "brightness")


# -- planting ----------------------------------------------------------------------------------------
def variant(image: Image.Image, kind: str, k: int) -> tuple[Image.Image, dict]:
    if kind == "resize":
        return image.resize((round(image.width * 0.64), round(image.height * 0.64)), Image.Resampling.BILINEAR), {}
    if kind == "jpeg_q30":
        return image, {"quality": 30}
    if kind == "crop80":
        w, h = image.size
        cw, ch = round(w * 0.8), round(h * 0.8)
        x0, y0 = (k * 7) % (w - cw + 1), (k * 11) % (h - ch + 1)
        return image.crop((x0, y0, x0 + cw, y0 + ch)), {}
    if kind == "flip":
        return ImageOps.mirror(image), {}
    factor = 1.2 if k % 2 else 0.8
    return ImageEnhance.Brightness(image).enhance(factor), {}


def out_of_domain_images() -> list[Image.Image]:
    """50 photos that are not textile: 20 sample photos of skimage/sklearn/matplotlib + 30 LFW faces."""
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_images

    found: list[Image.Image] = []
    for name in ("astronaut", "camera", "chelsea", "coffee", "coins", "moon", "page", "rocket", "horse", "clock",
                 "text", "hubble_deep_field", "immunohistochemistry", "logo", "colorwheel", "eagle", "retina"):
        try:
            array = getattr(skimage.data, name)()
        except Exception:  # noqa: BLE001 - some samples need a download; skip those
            continue
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        found.append(Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB"))
    found += [Image.fromarray(a) for a in load_sample_images().images]
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        with matplotlib.cbook.get_sample_data(name) as handle:
            found.append(Image.open(io.BytesIO(handle.read())).convert("RGB"))
    faces = skimage.data.lfw_subset()  # (200, 25, 25) float faces
    for face in faces[:: max(1, len(faces) // 40)]:
        if len(found) >= 50:
            break
        found.append(Image.fromarray((face * 255).astype(np.uint8)).convert("RGB").resize((125, 125)))
    return [im.resize((250, 250), Image.Resampling.BILINEAR) for im in found[:50]]


def plant(workdir: Path, ingest=None) -> dict:
    """Copy the demo set and add out-of-domain images, call ``ingest()``, then add the variants (copies arrive
    after their originals, as they do in a real collection, and are saved with the original's own JPEG tables
    except the q30 re-encode); return the ground truth by file name."""
    source = demo_data_path()
    data = workdir / "data"
    if data.exists():
        shutil.rmtree(data)
    originals = sorted(source.glob("*/*.jpg"))
    for path in originals:
        target = data / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    labels = sorted(p.name for p in source.iterdir() if p.is_dir())
    odd = []
    for k, image in enumerate(out_of_domain_images()):
        target = data / labels[k % len(labels)] / f"ood_{k:02d}.jpg"
        image.save(target, quality=92)
        odd.append(str(target))
    if ingest is not None:
        ingest()
    rng = np.random.default_rng(SEED)
    chosen = rng.choice(len(originals), size=200, replace=False)
    pairs = []
    for k, row in enumerate(chosen):
        path = originals[row]
        kind = TRANSFORMS[k % len(TRANSFORMS)]
        source_image = Image.open(path)
        image, params = variant(source_image.convert("RGB"), kind, k)
        target = data / path.parent.name / f"copy_{k:03d}_{kind}.jpg"
        if "quality" in params:
            image.save(target, quality=params["quality"])
        else:
            image.save(target, qtables=source_image.quantization)
        pairs.append((str(data / path.parent.name / path.name), str(target), kind))
    return {"pairs": pairs, "outliers": odd, "originals": [str(data / p.parent.name / p.name) for p in originals]}


# -- metrics -----------------------------------------------------------------------------------------
def prf(found: set, truth: set) -> tuple[float, float, float]:
    hit = len(found & truth)
    precision = hit / len(found) if found else 1.0
    recall = hit / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def grouped_pairs(findings) -> set:
    groups: dict[str, list[str]] = {}
    for f in findings:
        groups.setdefault(f.details["group"], []).append(f.image_id)
    return {tuple(sorted((a, b))) for members in groups.values() for i, a in enumerate(members) for b in members[i + 1:]}


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive.astype(int), scores))


def row(name, *cells) -> str:
    return f"{name:<48}" + "".join(f"{c:>12}" for c in cells)


# -- the demo benchmark ------------------------------------------------------------------------------
def bench_demo(workdir: Path) -> None:
    t0 = time.perf_counter()
    ws_dir = workdir / "ws"
    if ws_dir.exists():
        shutil.rmtree(ws_dir)
    ws = pixelmine.open_workspace(ws_dir)
    truth = plant(workdir, lambda: ws.ingest(str(workdir / "data"), labels_from_folders=True, progress=False))
    ws.ingest(str(workdir / "data"), labels_from_folders=True, progress=False)
    t_extract = time.perf_counter()
    ws.extract("mobilenet_v2", progress=False)
    features = ws.features("mobilenet_v2")
    print(f"planted + ingested + extracted {len(features)} images in {time.perf_counter() - t0:.0f} s "
          f"(extraction {time.perf_counter() - t_extract:.0f} s)\n")
    rows = {r["id"]: r for r in ws.images(status="ok")}
    path_to_id = {f["path"]: f["image_id"] for f in ws.files() if f["image_id"]}
    ids = [i for i in features.ids if i in rows]
    x = np.asarray(features.vectors[features.rows(ids)], dtype=np.float32)
    z = normalise(x)
    graph = nearest_neighbours(z, 10, normalised=True)
    phashes = [rows[i]["phash"] for i in ids]
    t1 = time.perf_counter()
    pixels = pixel_stats(ws.path("discover", CACHE_NAME), ids, [rows[i]["path"] for i in ids], workers=2)
    print(f"pixel statistics, view hashes and coefficients of {len(ids)} images: {time.perf_counter() - t1:.1f} s\n")

    print(row("near-duplicates (200 planted pairs)", "precision", "recall", "F1"))
    true_pairs = {tuple(sorted((path_to_id[a], path_to_id[b]))) for a, b, _ in truth["pairs"]}
    t1 = time.perf_counter()
    ws.discover(only="duplicates", progress=False)  # what a user gets: the finder as `pixelmine discover` runs it
    t_dup = time.perf_counter() - t1
    ours = ws.findings("near_duplicate")
    print(row(f"  pixelmine discover ({t_dup:.1f} s)", *(f"{v:.3f}" for v in prf(grouped_pairs(ours), true_pairs))))
    base = duplicates.find_near_duplicates(ids, phashes=phashes, phash_bits=duplicates.PHASH_BITS)
    print(row(f"  baseline: plain pHash <= {duplicates.PHASH_BITS} bits", *(f"{v:.3f}" for v in prf(grouped_pairs(base), true_pairs))))
    parts = {"hashes only, unverified (pHash + mirror views)": dict(phashes=phashes, view_hashes=pixels.views,
                                                                    views_valid=pixels.decoded),
             f"features only (cosine >= {duplicates.NEAR_DUPLICATE_COSINE}, ratio test)": dict(neighbours=graph, normalised=z),
             "features only, no ratio test": dict(neighbours=graph, normalised=z, ratio=None)}
    for name, kwargs in parts.items():
        part = duplicates.find_near_duplicates(ids, **kwargs)
        print(row(f"    (ablation) {name}", *(f"{v:.3f}" for v in prf(grouped_pairs(part), true_pairs))))
    per_kind = {}
    found_pairs = grouped_pairs(ours)
    for a, b, kind in truth["pairs"]:
        per_kind.setdefault(kind, []).append(tuple(sorted((path_to_id[a], path_to_id[b]))) in found_pairs)
    print("    recall by transform: " + ", ".join(f"{k} {np.mean(v):.2f}" for k, v in per_kind.items()))
    keeper_of = {f.image_id: f.details["keeper"] for f in ours}
    right = {}
    for a, b, kind in truth["pairs"]:
        original, copy = path_to_id[a], path_to_id[b]
        if original in keeper_of and keeper_of.get(copy) == keeper_of[original]:
            right.setdefault(kind, []).append(keeper_of[original] == original)
    print("    keeper is the original (of the grouped pairs): " +
          ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in right.items()))
    planted = {path_to_id[p] for pair in truth["pairs"] for p in pair[:2]}
    groups: dict[str, list] = {}
    for f in ours:
        groups.setdefault(f.details["group"], []).append(f.image_id)
    unplanted = [m for m in groups.values() if not set(m) & planted]
    print(f"    groups without a planted image: {len(unplanted)}")
    id_to_path = {v: k for k, v in path_to_id.items()}
    for members in unplanted:
        print("      " + "  ".join(os.path.relpath(id_to_path[m], workdir / "data") for m in members))

    print()
    print(row("label errors (5 % flipped, originals only)", "precision", "recall", "F1"))
    originals = [path_to_id[p] for p in truth["originals"]]
    position = {i: r for r, i in enumerate(ids)}
    xo = x[[position[i] for i in originals]]
    clean = np.asarray([rows[i]["label"] for i in originals])
    rng = np.random.default_rng(SEED + 1)
    flipped = rng.choice(len(originals), size=len(originals) // 20, replace=False)
    noisy = clean.copy()
    names = sorted(set(clean.tolist()))
    for r in flipped:
        noisy[r] = rng.choice([c for c in names if c != clean[r]])
    wrong = {originals[r] for r in flipped}
    t1 = time.perf_counter()
    logreg, class_names = label_issues.out_of_fold_probabilities(xo, noisy.tolist())
    knn, k = label_issues.knn_probabilities(nearest_neighbours(xo, max(label_issues.KNN_CHOICES)).index,
                                            noisy.tolist(), class_names)
    chosen, probs, accuracy = label_issues.choose_probabilities(
        noisy.tolist(), {"logistic regression": logreg, f"{k}-NN vote": knn}, class_names)
    ours = label_issues.find_label_issues(originals, noisy.tolist(), probs, class_names)
    t_ours = time.perf_counter() - t1
    estimate = label_issues.estimate_label_errors(noisy.tolist(), probs, class_names)
    print(f"    out-of-fold accuracy on the noisy labels: {accuracy}; using {chosen}")
    np.savez(workdir / "label-bench.npz", probs=probs, noisy=noisy, clean=clean, flipped=flipped, x=xo,
             classes=np.asarray(class_names))
    print(row(f"  pixelmine (best OOF predictor + cleanlab; {t_ours:.0f} s)",
              *(f"{v:.3f}" for v in prf({f.image_id for f in ours if f.is_issue}, wrong))))
    alt = label_issues.find_label_issues(originals, noisy.tolist(), logreg, class_names)
    print(row("    (ablation) logistic-regression probabilities only",
              *(f"{v:.3f}" for v in prf({f.image_id for f in alt if f.is_issue}, wrong))))
    alt = label_issues.find_label_issues(originals, noisy.tolist(), probs, class_names, filter_by="prune_by_noise_rate")
    print(row("    (ablation) cleanlab filter_by=prune_by_noise_rate",
              *(f"{v:.3f}" for v in prf({f.image_id for f in alt if f.is_issue}, wrong))))
    try:
        from cleanlab import Datalab

        t1 = time.perf_counter()
        lab = Datalab(data={"label": noisy.tolist()}, label_name="label", verbosity=0)
        lab.find_issues(features=xo, issue_types={"label": {}})
        flagged = lab.get_issues("label")["is_label_issue"].to_numpy()
        print(row(f"  baseline: cleanlab Datalab(features) ({time.perf_counter() - t1:.0f} s)",
                  *(f"{v:.3f}" for v in prf({originals[r] for r in np.flatnonzero(flagged)}, wrong))))
    except ImportError as exc:
        print(f"  baseline skipped: {exc}")
    print(f"    estimated label errors: {estimate} (planted {len(wrong)}, plus the set's own)")

    print()
    odd = {path_to_id[p] for p in truth["outliers"]}
    positive = np.array([i in odd for i in ids])
    scores = {f.image_id: f.score for f in outliers.find_outliers(ids, graph)}
    ours_auc = auroc(-np.array([scores[i] for i in ids]), positive)
    centroid = np.linalg.norm(x - x.mean(axis=0), axis=1)
    flagged = {f.image_id for f in outliers.find_outliers(ids, graph) if f.is_issue}
    p, r, _ = prf(flagged, odd)
    print(row("outliers (50 out-of-domain among 2,250)", "AUROC", "precision", "recall"))
    print(row("  pixelmine k-NN distance (k = 10)", f"{ours_auc:.3f}", f"{p:.3f}", f"{r:.3f}"))
    print(row("  baseline: distance to the feature centroid", f"{auroc(centroid, positive):.3f}", "-", "-"))

    print()
    timed_discover(ws)
    ws.close()


def timed_discover(ws):
    """The whole discover run, timed, with its per-finder timings and issue counts printed."""
    started = time.perf_counter()
    result = ws.discover(progress=False)
    print(f"whole discover run on {result.summary['images']:,} images: {time.perf_counter() - started:.1f} s "
          f"(finders: {result.summary['timings_s']})")
    print("  issues: " + ", ".join(f"{k} {v['issues']}" for k, v in result.counts.items()))
    return result


# -- Fashion-MNIST scale ------------------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as handle:
        data = handle.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist() -> tuple[np.ndarray, np.ndarray] | None:
    """(images (70000, 28, 28) uint8, labels (70000,) int), train then test; None (said) when not installed."""
    files = sorted(Path("/usr/share/datasets/fashion-mnist").glob("*.gz"))
    if not files:
        print("Fashion-MNIST not installed: apt-get install -y dataset-fashion-mnist")
        return None
    return (np.concatenate([read_idx(f) for f in files if "images" in f.name]),
            np.concatenate([read_idx(f) for f in files if "labels" in f.name]))


def bench_fashion() -> None:
    if (loaded := fashion_mnist()) is None:
        return
    images, labels = loaded[0], loaded[1].astype(str)
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    print(row("Fashion-MNIST scale (raw-pixel features)", "images", "k-NN s", "finders s", "total s", "CPU s"))
    for n in (35_000, 70_000):
        ids = [f"{i:064x}" for i in range(n)]
        t0, c0 = time.perf_counter(), time.process_time()
        z = normalise(x[:n])
        graph = nearest_neighbours(z, 10, normalised=True)
        t_knn = time.perf_counter() - t0
        duplicates.find_near_duplicates(ids, neighbours=graph, normalised=z)
        outliers.find_outliers(ids, graph)
        outliers.find_class_outliers(ids, z, labels[:n].tolist())
        pairs = classes.overlap_pairs(graph, labels[:n].tolist())
        classes.find_class_overlap(ids, labels[:n].tolist(), graph, pairs)
        classes.find_rare_classes(ids, labels[:n].tolist())
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(row(f"  {'exact' if graph.exact else 'IVF'} index", n, f"{t_knn:.1f}", f"{total - t_knn:.1f}",
                  f"{total:.1f}", f"{cpu:.1f}"))
    print(f"  (load average while measuring: {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores)")


FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def bench_fashion_copies(workdir: Path, planted: int = 1000) -> None:
    """The whole pipeline on Fashion-MNIST's 70,000 images as files, with ``planted`` copies added after them:
    ingest, MobileNetV2 features, then the whole ``discover`` run, timed; near-duplicate precision and recall
    on the planted pairs, and what else it groups."""
    if (loaded := fashion_mnist()) is None:
        return
    images, labels = loaded
    data, ws_dir = workdir / "fashion" / "data", workdir / "fashion" / "ws"
    originals = [data / FASHION_CLASSES[y] / f"{i:05d}.png" for i, y in enumerate(labels)]
    t0 = time.perf_counter()
    if not originals[-1].exists():
        for path, pixels in zip(originals, images):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
    ws = pixelmine.open_workspace(ws_dir)
    ws.ingest(str(data), labels_from_folders=True, progress=False)
    t_ingest = time.perf_counter() - t0
    rng = np.random.default_rng(SEED)
    pairs = []
    for k, source in enumerate(rng.choice(len(images), size=planted, replace=False)):
        kind = TRANSFORMS[k % len(TRANSFORMS)]
        image, params = variant(Image.fromarray(images[source]), kind, k)
        target = originals[source].parent / f"copy_{k:04d}_{kind}.{'jpg' if 'quality' in params else 'png'}"
        if not target.exists():
            image.save(target, **params)
        pairs.append((str(originals[source]), str(target), kind))
    t1 = time.perf_counter()
    ws.ingest(str(data), labels_from_folders=True, progress=False)
    t_ingest += time.perf_counter() - t1
    t1 = time.perf_counter()
    ws.extract(progress=False)
    t_extract = time.perf_counter() - t1
    print(f"Fashion-MNIST as files: {len(images):,} + {planted:,} planted copies; ingest {t_ingest:.0f} s, "
          f"MobileNetV2 features {t_extract:.0f} s (both resume: a second run skips them)")
    shutil.rmtree(ws_dir / "discover", ignore_errors=True)  # time pixel statistics too, not a cached copy
    timed_discover(ws)
    path_to_id = {f["path"]: f["image_id"] for f in ws.files() if f["image_id"]}
    truth = {tuple(sorted((path_to_id[a], path_to_id[b]))): kind for a, b, kind in pairs}
    near = ws.findings("near_duplicate")
    found = grouped_pairs(near)
    copies = {path_to_id[b] for _, b, _ in pairs}
    touching = {p for p in found if set(p) & copies}
    precision = len(touching & set(truth)) / max(1, len(touching))
    recall = len(found & set(truth)) / len(truth)
    print(row(f"near-duplicates ({planted:,} planted pairs)", "precision", "recall"))
    print(row("  pixelmine discover", f"{precision:.3f}", f"{recall:.3f}"))
    by_kind = {}
    for pair, kind in truth.items():
        by_kind.setdefault(kind, []).append(pair in found)
    print("    recall by transform: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in by_kind.items()))
    groups: dict[str, list[str]] = {}
    for f in near:
        groups.setdefault(f.details["group"], []).append(f.image_id)
    unplanted = [m for m in groups.values() if not set(m) & copies]
    sizes = np.bincount([len(m) for m in groups.values()])
    print(f"    groups: {len(groups):,} (sizes {dict((k, int(v)) for k, v in enumerate(sizes) if v)}); "
          f"{len(unplanted):,} of them hold no planted copy ({sum(len(m) for m in unplanted):,} images, Fashion-MNIST's own)")
    sheet = _pair_sheet(ws, unplanted, workdir / "fashion-unplanted-groups.png")
    print(f"    a sample of those groups, to look at: {sheet}")
    print(f"  (load average after the run: {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores)")
    ws.close()


def _pair_sheet(ws, groups: list[list[str]], target: Path, count: int = 40) -> Path:
    """A contact sheet of ``count`` random groups, two members each, enlarged, for a person to judge."""
    paths = {r["id"]: r["path"] for r in ws.images(status="ok")}
    rng = np.random.default_rng(SEED)
    chosen = [groups[k] for k in rng.choice(len(groups), size=min(count, len(groups)), replace=False)] if groups else []
    sheet = Image.new("L", (4 * 130, 10 * 60), 128)
    for k, members in enumerate(chosen):
        column, line = divmod(k, 10)
        for j, image_id in enumerate(members[:2]):
            with Image.open(paths[image_id]) as image:
                sheet.paste(image.convert("L").resize((56, 56)), (column * 130 + j * 58, line * 60))
    sheet.save(target)
    return target


def label_benchmark(x: np.ndarray, clean: np.ndarray, ids: list[str], seed: int = SEED) -> dict[str, tuple]:
    """Flip 5 % of ``clean`` at random; (precision, recall, F1) of pixelmine and of cleanlab's Datalab."""
    rng = np.random.default_rng(seed + 1)
    flipped = rng.choice(len(clean), size=len(clean) // 20, replace=False)
    noisy = clean.copy()
    names = sorted(set(clean.tolist()))
    for r in flipped:
        noisy[r] = rng.choice([c for c in names if c != clean[r]])
    wrong = {ids[r] for r in flipped}
    logreg, class_names = label_issues.out_of_fold_probabilities(x, noisy.tolist())
    knn, k = label_issues.knn_probabilities(nearest_neighbours(x, max(label_issues.KNN_CHOICES)).index,
                                            noisy.tolist(), class_names)
    chosen, probs, accuracy = label_issues.choose_probabilities(
        noisy.tolist(), {"logistic regression": logreg, f"{k}-NN vote": knn}, class_names)
    ours = label_issues.find_label_issues(ids, noisy.tolist(), probs, class_names)
    out = {"pixelmine": prf({f.image_id for f in ours if f.is_issue}, wrong), "chosen": (chosen, accuracy)}
    try:
        from cleanlab import Datalab

        lab = Datalab(data={"label": noisy.tolist()}, label_name="label", verbosity=0)
        lab.find_issues(features=x, issue_types={"label": {}})
        flagged = lab.get_issues("label")["is_label_issue"].to_numpy()
        out["Datalab"] = prf({ids[r] for r in np.flatnonzero(flagged)}, wrong)
    except ImportError as exc:
        out["Datalab"] = str(exc)
    return out


def bench_fashion_labels(n: int) -> None:
    if (loaded := fashion_mnist()) is None:
        return
    images, labels = loaded[0][:n], loaded[1].astype(str)[:n]
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    result = label_benchmark(x, labels, [f"{i:064x}" for i in range(n)])
    print(row(f"Fashion-MNIST label errors ({n:,}, 5 % flipped, pixels)", "precision", "recall", "F1"))
    print(row("  pixelmine", *(f"{v:.3f}" for v in result["pixelmine"])))
    base = result["Datalab"]
    print(row("  baseline: cleanlab Datalab(features)", *((f"{v:.3f}" for v in base) if isinstance(base, tuple) else (base,))))
    print(f"    out-of-fold accuracy on the noisy labels: {result['chosen'][1]}; using {result['chosen'][0]}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/pixelmine-bench-discover"))
    parser.add_argument("--fashion", action="store_true", help="also time the finders on Fashion-MNIST")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--fashion-copies", action="store_true",
                        help="also run the whole pipeline on Fashion-MNIST's 70,000 images with 1,000 planted copies")
    parser.add_argument("--fashion-labels", type=int, metavar="N", default=0,
                        help="also plant 5 %% label errors into the first N Fashion-MNIST images")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"pixelmine {pixelmine.__version__}, python {sys.version.split()[0]}\n")
    if not args.skip_demo:
        bench_demo(args.workdir)
    if args.fashion_labels:
        print()
        bench_fashion_labels(args.fashion_labels)
    if args.fashion:
        print()
        bench_fashion()
    if args.fashion_copies:
        print()
        bench_fashion_copies(args.workdir)


if __name__ == "__main__":
    main()

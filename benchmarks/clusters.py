"""Clusters: pixelmine's automatic clustering vs k-means told the true number of classes, in the same run.

    .venv/bin/python benchmarks/clusters.py [--fashion 5000] [--cache DIR]

Data sets (MobileNetV2 features, extracted once into a cached workspace under --cache):
- the embedded demo set: 2,000 textile photos, 3 classes (nominal / local / global defects);
- Fashion-MNIST (Debian ``dataset-fashion-mnist``): ``--fashion N`` images of the test set, N/10 per class,
  10 classes, written as PNGs and ingested like any folder (0 skips it).

Contenders, all on the same L2-normalised, PCA-reduced features (pixelmine's ``reduce``):
- ``pixelmine kmeans+silhouette`` (the default): k chosen by silhouette in 2..20 — it does not know k;
- ``pixelmine hdbscan``: density clusters (noise counted as its own group for NMI/ARI);
- ``k-means, true k``: the baseline, told the number of classes.
NMI and ARI are against the true class labels (1 = the classes exactly); seconds include the k search.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pixelmine  # noqa: E402
from pixelmine.demo import demo_data_path  # noqa: E402
from pixelmine.discover.clusters import find_clusters, reduce  # noqa: E402

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def prepared(root: Path, source: Path):
    """A workspace with ``source`` (class folders) ingested and its features extracted (cached)."""
    ws = pixelmine.open_workspace(root)
    ws.ingest(str(source), labels_from_folders=True, progress=False)
    ws.extract("mobilenet_v2", progress=False)
    return ws


def fashion_folder(target: Path, n: int) -> Path:
    """``n`` Fashion-MNIST test images (n/10 per class) as PNGs in class folders."""
    from PIL import Image

    marker = target / f".done-{n}"
    if marker.exists():
        return target
    with gzip.open(FASHION_DIR / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_DIR / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    per = n // 10
    for k, name in enumerate(FASHION_CLASSES):
        folder = target / name
        folder.mkdir(parents=True, exist_ok=True)
        for row in np.flatnonzero(labels == k)[:per]:
            Image.fromarray(images[row], "L").save(folder / f"{row:05d}.png")
    marker.touch()
    return target


def evaluate(name: str, ws) -> list[tuple]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    features = ws.features("mobilenet_v2")
    labels_by_id = {r["id"]: r["label"] for r in ws.images(status="ok")}
    ids = [i for i in features.ids if labels_by_id.get(i) is not None]
    subset = features.subset(ids)
    truth = np.asarray([labels_by_id[i] for i in ids])
    true_k = len(set(truth))
    rows = []
    for method in ("kmeans", "hdbscan"):
        started = time.perf_counter()
        result = find_clusters(ids, subset.vectors, None, method=method)
        seconds = time.perf_counter() - started
        found = result.assignments
        rows.append((name, len(ids), true_k, f"pixelmine {'kmeans+silhouette' if method == 'kmeans' else method}",
                     result.k, normalized_mutual_info_score(truth, found), adjusted_rand_score(truth, found), seconds))
    started = time.perf_counter()
    reduced = reduce(subset.vectors, 32)
    found = KMeans(n_clusters=true_k, n_init=4, random_state=0).fit_predict(reduced)
    seconds = time.perf_counter() - started
    rows.append((name, len(ids), true_k, "k-means, true k (baseline)", true_k,
                 normalized_mutual_info_score(truth, found), adjusted_rand_score(truth, found), seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fashion", type=int, default=5000, help="Fashion-MNIST images (0: skip)")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "pixelmine-bench-clusters"),
                        help="where the benchmark workspaces (and their features) are kept between runs")
    args = parser.parse_args()
    cache = Path(args.cache)
    rows = evaluate("demo (textile)", prepared(cache / "ws-demo", demo_data_path()))
    if args.fashion:
        if not FASHION_DIR.is_dir():
            print(f"Fashion-MNIST skipped: {FASHION_DIR} missing (apt-get install dataset-fashion-mnist)")
        else:
            folder = fashion_folder(cache / f"fashion-{args.fashion}", args.fashion)
            rows += evaluate("Fashion-MNIST", prepared(cache / f"ws-fashion-{args.fashion}", folder))
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; features: mobilenet_v2\n")
    header = ("data set", "images", "classes", "method", "k found", "NMI", "ARI", "seconds")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i < 4 else "---:" for i in range(len(header))) + "|")
    for name, n, k, method, found, nmi, ari, seconds in rows:
        print(f"| {name} | {n:,} | {k} | {method} | {found} | {nmi:.3f} | {ari:.3f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()

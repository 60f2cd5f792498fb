"""What to label next (``pixelmine suggest``): the images whose label would help the model most.

Uncertainty alone picks near-copies of one confusing image; diversity alone re-labels what the model
already knows. So, margin sampling inside clusters (in the spirit of Cluster-Margin, Citovsky et al. 2021):

1. the pool (unlabelled images, or images flagged for review) is clustered in feature space into as many
   clusters as images are asked for (k-means on standardised, L2-normalised, PCA-reduced features);
2. inside each cluster, images are ranked by the current model's margin (top-1 minus top-2 probability,
   small = uncertain);
3. clusters are visited round-robin, the cluster with the most uncertain image first: the first ``n``
   suggestions cover ``n`` different clusters, and the first of all is the most uncertain image.

Without a model (nothing labelled yet) every image is equally uncertain and each cluster offers the image
nearest its centre: a cold start that covers the collection.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError, NotFittedError

log = logging.getLogger(__name__)

POOLS = ("unlabelled", "review", "all")
MAX_PCA_DIM = 64


@dataclass
class Suggestion:
    rank: int
    image_id: str
    path: str
    margin: float | None  # top-1 minus top-2 probability of the current model; None without a model
    predicted_label: str | None
    predicted_probability: float | None
    cluster: int
    label: str | None  # its current label (None for unlabelled images)
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def _reduce(X: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    X = np.asarray(X, dtype=np.float32)
    X = (X - X.mean(axis=0)) / np.maximum(X.std(axis=0), 1e-6)
    if X.shape[1] > MAX_PCA_DIM and len(X) > MAX_PCA_DIM:
        X = PCA(n_components=MAX_PCA_DIM, random_state=seed).fit_transform(X)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def clusters_of(X: np.ndarray, k: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(cluster per row, distance to its centre) for ``k`` k-means clusters of the reduced features."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    Z = _reduce(X, seed)
    k = max(1, min(k, len(Z)))
    if len(Z) > 20_000:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096).fit(Z)
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=1).fit(Z)
    assigned = model.labels_
    distance = np.linalg.norm(Z - model.cluster_centers_[assigned], axis=1)
    return assigned, distance


def margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row (1 = certain, 0 = a tie)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[1] < 2:
        return np.ones(len(probs))
    top = np.sort(probs, axis=1)[:, -2:]
    return top[:, 1] - top[:, 0]


def rank_for_labelling(X: np.ndarray, probs: np.ndarray | None, n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(row order of the ``n`` suggestions, cluster of each) for pool features ``X`` and the current
    model's probabilities ``probs`` (None: no model yet)."""
    if n < 1:
        raise InputError(f"the number of suggestions must be >= 1; got {n}")
    n = min(n, len(X))
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    assigned, distance = clusters_of(X, n, seed=seed)
    # uncertain first; without a model, the most central image of each cluster first
    key = margins(probs) if probs is not None else distance
    queues = []
    for c in np.unique(assigned):
        members = np.flatnonzero(assigned == c)
        queues.append(list(members[np.argsort(key[members], kind="stable")]))
    order: list[int] = []
    while len(order) < n:
        queues = [q for q in queues if q]
        queues.sort(key=lambda q: key[q[0]])  # the round goes to the most uncertain head of a cluster first
        for queue in queues:
            order.append(queue.pop(0))
            if len(order) == n:
                break
    rows = np.asarray(order, dtype=np.int64)
    return rows, assigned[rows]


def pool_ids(catalog, pool: str, *, issue_ids=()) -> list[str]:
    """Image ids of the pool: ``unlabelled`` ok images (people's corrections applied; ``ignore`` ones
    left out), ``review`` (images discovery flagged as label issues), or ``all`` of both."""
    from ..corrections import effective_labels

    if pool not in POOLS:
        raise InputError(f"the pool {pool!r} is not known; choose one of: {', '.join(POOLS)}")
    labels = effective_labels(catalog)
    unlabelled = [i for i, label in labels.items() if label is None]
    review = [i for i in issue_ids if i in labels]
    chosen = {"unlabelled": unlabelled, "review": review, "all": unlabelled + review}[pool]
    return sorted(dict.fromkeys(chosen))


def suggest(catalog, root, *, model=None, n: int = 50, pool: str = "unlabelled", backbone: str | None = None,
            seed: int = 0) -> list[Suggestion]:
    """The ``n`` images of ``pool`` to label next (see the module docstring)."""
    from ..corrections import effective_labels
    from ..discover.findings import load_findings
    from .joined import load_feature_set

    issue_ids = [f.image_id for f in load_findings(catalog, kind="label_issue", issues_only=True)] \
        if pool in ("review", "all") else []
    ids = pool_ids(catalog, pool, issue_ids=issue_ids)
    if not ids:
        return []
    feature_name = backbone or (model.backbone if model is not None and model.kind == "probe" else None)
    from ..defaults import DEFAULT_BACKBONE

    features = load_feature_set(root, feature_name or DEFAULT_BACKBONE)
    have = set(features.ids)
    missing = [i for i in ids if i not in have]
    if missing:
        log.info("%d pool images have no %s features and are not ranked", len(missing), features.backbone)
    ids = [i for i in ids if i in have]
    if not ids:
        raise NotFittedError(f"no pool image has {features.backbone} features; run: pixelmine extract "
                             f"--backbone {features.backbone}")
    X = np.asarray(features.vectors[features.rows(ids)], dtype=np.float32)
    probs = classes = None
    if model is not None:
        classes = np.asarray(model.classes)
        if model.kind == "probe" and feature_name == model.backbone:
            probs, _ = model.predict_features(X)
        else:
            paths = {r["id"]: r["path"] for r in catalog.images()}
            predictions = model.predict([paths[i] for i in ids], top_k=len(classes))
            probs = np.full((len(ids), len(classes)), 1.0 / len(classes))
            column = {c: k for k, c in enumerate(classes)}
            for row, prediction in enumerate(predictions):
                if prediction.ok:
                    probs[row] = 0.0
                    for entry in prediction.top_k:
                        probs[row, column[entry["label"]]] = entry["probability"]
    rows, clusters = rank_for_labelling(X, probs, n, seed=seed)
    paths = {r["id"]: r["path"] for r in catalog.images()}
    labels = effective_labels(catalog)
    out = []
    margin = margins(probs) if probs is not None else None
    for rank, (row, cluster) in enumerate(zip(rows.tolist(), clusters.tolist()), start=1):
        image_id = ids[row]
        if probs is not None:
            best = int(np.argmax(probs[row]))
            reason = (f"uncertain (margin {margin[row]:.2f}: {classes[best]!r} p={probs[row, best]:.2f}), "
                      f"the most uncertain of its cluster {cluster}")
            out.append(Suggestion(rank, image_id, paths.get(image_id, ""), round(float(margin[row]), 4),
                                  str(classes[best]), round(float(probs[row, best]), 4), int(cluster),
                                  labels.get(image_id), reason))
        else:
            out.append(Suggestion(rank, image_id, paths.get(image_id, ""), None, None, None, int(cluster),
                                  labels.get(image_id), f"the most typical image of cluster {cluster} (no model yet)"))
    return out


def manifest_csv(suggestions: list[Suggestion]) -> str:
    """A CSV manifest (``path,label``, best suggestion first) that a person fills in and ingests back with
    ``pixelmine ingest --manifest FILE``. Only those two columns: any other would become image metadata."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "label"])
    for s in suggestions:
        writer.writerow([s.path, s.label or ""])
    return buffer.getvalue()


def write_manifest(suggestions: list[Suggestion], path) -> str:
    """:func:`manifest_csv` written to ``path`` (atomically)."""
    from ..fileio import atomic_write_text

    atomic_write_text(path, manifest_csv(suggestions))
    return str(path)

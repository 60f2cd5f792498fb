"""Clusters: unsupervised groups in feature space, described by their labels and ImageNet tags.

Pipeline (a pure function of arrays, :func:`find_clusters`):

1. L2-normalise the vectors (cosine geometry, as every other finder uses) and reduce them with PCA to
   ``pca_dims`` components (whitening off): k-means and HDBSCAN both behave better in 20-50 dimensions
   than in the backbone's 1,280.
2. Cluster with an automatic number of clusters:
   - ``kmeans`` (default): k-means for every k in ``k_min..k_max``; k is the one with the best
     silhouette (cosine, on a sample of at most ``silhouette_sample`` points so the cost stays linear).
   - ``hdbscan``: scikit-learn's HDBSCAN (``min_cluster_size`` = max(10, N/50)); points in no dense
     region get cluster -1 ("noise").
   ``benchmarks/clusters.py`` measures both against the true classes; k-means + silhouette was the better
   default on the demo set and on Fashion-MNIST (see benchmarks/README.md, "Clusters").
3. Describe each cluster: size, label counts, the dominant label and its share (the purity), the mean
   probability of the ImageNet tags its members carry, and ``new_category`` when the cluster is mostly
   unlabelled, or has no dominant label (no label reaches ``dominant_share`` of its labelled members) and is
   not a merge of whole classes (most of its labelled images from classes that lie mostly inside it): a group
   the labels do not account for, worth a look as a possible new category. Without the merge rule, the two
   clusters k-means finds on Fashion-MNIST (garments; footwear and bags) flagged all 71,000 images.

Each image gets one :class:`Finding` of kind ``cluster``: score = purity of its cluster (low = a mixed
cluster), ``is_issue`` = its cluster is flagged as a possible new category.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import InputError
from .findings import Finding
from ..config import build_config

log = logging.getLogger(__name__)

KIND = "cluster"
METHODS = ("kmeans", "hdbscan")
KINDS = {  # kind -> (what it means, what to do)
    KIND: ("the image's group in feature space; the score is the purity of that group (the share of its dominant "
           "label); flagged when the group has no dominant label",
           "look at flagged clusters: a group of images the labels do not explain is a candidate new category, a "
           "mixed class, or a labelling convention to make explicit"),
}


@dataclass(frozen=True)
class ClusterConfig:
    """How clusters are found and described."""

    method: str = "kmeans"  # "kmeans" (k by silhouette) or "hdbscan"
    pca_dims: int = 32  # PCA components kept after L2 normalisation (fewer if N or D is smaller)
    k_min: int = 2  # k-means: smallest k tried
    k_max: int = 20  # k-means: largest k tried (capped at sqrt(N))
    silhouette_sample: int = 3000  # points used to score each k (silhouette is quadratic in them)
    min_cluster_size: int | None = None  # hdbscan; None = max(10, N // 50)
    dominant_share: float = 0.6  # a label holding >= this share of a cluster's labelled images dominates it
    min_labelled_share: float = 0.5  # below this share of labelled members a cluster counts as unlabelled
    top_tags: int = 3  # ImageNet tags listed per cluster
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(f"The 'method' parameter of ClusterConfig must be one of {', '.join(METHODS)}. "
                             f"Got {self.method!r} instead.")
        if not 2 <= self.k_min <= self.k_max:
            raise InputError(f"ClusterConfig needs 2 <= k_min <= k_max; got k_min={self.k_min}, k_max={self.k_max}.")
        if not 0.0 < self.dominant_share <= 1.0:
            raise InputError(f"The 'dominant_share' parameter of ClusterConfig must be in (0, 1]. "
                             f"Got {self.dominant_share!r} instead.")


@dataclass
class Cluster:
    id: int  # -1 = noise (hdbscan only)
    size: int
    labels: dict[str, int]  # label -> members with it (unlabelled members not counted)
    dominant_label: str | None  # None when no label reaches dominant_share
    purity: float  # share of the most common label among labelled members (1.0 when none is labelled)
    tags: list[tuple[str, float]]  # ImageNet tags with the mean probability over members, best first
    new_category: bool
    centre_ids: list[str] = field(default_factory=list)  # members nearest the centroid, most typical first

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ClusterResult:
    ids: list[str]
    assignments: np.ndarray  # (N,) int cluster id per image, -1 = noise
    clusters: list[Cluster]  # sorted by size, largest first; noise last
    method: str
    k: int  # clusters found (noise excluded)
    silhouette: float | None  # of the chosen clustering (cosine, sampled)
    scores: dict[int, float] = field(default_factory=dict)  # k -> silhouette, for the k-means search
    config: ClusterConfig = field(default_factory=ClusterConfig)

    def cluster(self, cluster_id: int) -> Cluster:
        for c in self.clusters:
            if c.id == cluster_id:
                return c
        raise InputError(f"no cluster {cluster_id}; clusters are {', '.join(str(c.id) for c in self.clusters)}")

    def findings(self, labels: Sequence[str | None] | None = None) -> list[Finding]:
        by_id = {c.id: c for c in self.clusters}
        rule = (f"its cluster has no dominant label: no label holds {self.config.dominant_share:.0%} of the "
                f"cluster's labelled images, or under {self.config.min_labelled_share:.0%} of them are labelled")
        out = []
        for row, image_id in enumerate(self.ids):
            c = by_id[int(self.assignments[row])]
            label = labels[row] if labels is not None else None
            details = {"cluster": c.id, "size": c.size, "purity": round(c.purity, 4),
                       "dominant_label": c.dominant_label, "tags": [t for t, _ in c.tags],
                       "new_category": c.new_category, "noise": c.id == -1, "threshold": rule}
            if label is not None and c.dominant_label is not None:
                details["matches_cluster"] = label == c.dominant_label
            out.append(Finding(image_id, KIND, float(min(max(c.purity, 0.0), 1.0)), bool(c.new_category), details))
        return out

    def summary(self) -> dict:
        return {"method": self.method, "k": self.k, "silhouette": self.silhouette,
                "noise": int(np.sum(self.assignments == -1)),
                "new_category": [c.id for c in self.clusters if c.new_category],
                "clusters": [c.to_dict() for c in self.clusters]}


def reduce(vectors: np.ndarray, dims: int, seed: int = 0) -> np.ndarray:
    """L2-normalise and project onto the first ``dims`` principal components (float32)."""
    from sklearn.decomposition import PCA

    x = normalise(vectors)
    dims = int(min(dims, x.shape[0] - 1, x.shape[1]))
    if dims < 1:
        return x
    return PCA(n_components=dims, random_state=seed).fit_transform(x).astype(np.float32)


def normalise(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _silhouette(x: np.ndarray, assignments: np.ndarray, sample: int, seed: int) -> float | None:
    from sklearn.metrics import silhouette_score

    mask = assignments >= 0
    if len(set(assignments[mask].tolist())) < 2:
        return None
    x, assignments = x[mask], assignments[mask]
    size = min(sample, len(x))
    return float(silhouette_score(x, assignments, metric="cosine", sample_size=size, random_state=seed))


def kmeans_auto(x: np.ndarray, config: ClusterConfig) -> tuple[np.ndarray, dict[int, float]]:
    """k-means for every k in range; returns the assignments with the best silhouette and every k's score."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    n = len(x)
    k_max = int(min(config.k_max, max(config.k_min, int(np.sqrt(n))), n - 1))
    scores: dict[int, float] = {}
    best: tuple[float, np.ndarray] | None = None
    for k in range(config.k_min, k_max + 1):
        if n > 20_000:  # full k-means costs N*k*iterations per k; mini-batches keep a 20-k sweep in seconds
            model = MiniBatchKMeans(n_clusters=k, random_state=config.seed, n_init=3, batch_size=4096)
        else:
            model = KMeans(n_clusters=k, random_state=config.seed, n_init=2)
        assignments = model.fit_predict(x)
        score = _silhouette(x, assignments, config.silhouette_sample, config.seed)
        if score is None:
            continue
        scores[k] = score
        if best is None or score > best[0]:
            best = (score, assignments)
    if best is None:
        return np.zeros(n, dtype=np.int64), scores
    return best[1].astype(np.int64), scores


def hdbscan(x: np.ndarray, config: ClusterConfig) -> np.ndarray:
    from sklearn.cluster import HDBSCAN

    size = config.min_cluster_size or max(10, len(x) // 50)
    return HDBSCAN(min_cluster_size=int(min(size, max(2, len(x) // 2))), copy=True).fit_predict(x).astype(np.int64)


def find_clusters(ids: Sequence[str], vectors: np.ndarray, labels: Sequence[str | None] | None = None, *,
                  tag_indices: np.ndarray | None = None, tag_probs: np.ndarray | None = None,
                  tag_names: Sequence[str] | None = None, config: ClusterConfig | None = None,
                  **options) -> ClusterResult:
    """Cluster ``vectors`` (N, D) and describe each cluster. Options are ClusterConfig fields."""
    config = build_config(ClusterConfig, config, options, stage="clusters")
    vectors = np.asarray(vectors)
    ids = list(ids)
    if vectors.ndim != 2 or len(ids) != vectors.shape[0]:
        raise InputError(f"vectors must be (N, D) with N = len(ids) = {len(ids)}; got shape {vectors.shape}")
    if labels is not None and len(labels) != len(ids):
        raise InputError(f"labels must have one entry per image ({len(ids)}); got {len(labels)}")
    if len(ids) < 3:
        raise InputError(f"clustering needs at least 3 images with features; got {len(ids)}. "
                         "Ingest and extract more images first")
    x = reduce(vectors, config.pca_dims, config.seed)
    scores: dict[int, float] = {}
    if config.method == "kmeans":
        assignments, scores = kmeans_auto(x, config)
    else:
        assignments = hdbscan(x, config)
    silhouette = _silhouette(x, assignments, config.silhouette_sample, config.seed)
    clusters = describe(ids, x, assignments, labels, tag_indices, tag_probs, tag_names, config)
    k = len({int(a) for a in assignments if a >= 0})
    log.info("clusters: %s found %d clusters (silhouette %s) in %d images", config.method, k,
             f"{silhouette:.3f}" if silhouette is not None else "n/a", len(ids))
    return ClusterResult(ids, assignments, clusters, config.method, k, silhouette, scores, config)


def describe(ids: Sequence[str], x: np.ndarray, assignments: np.ndarray, labels, tag_indices, tag_probs,
             tag_names, config: ClusterConfig) -> list[Cluster]:
    clusters = []
    class_sizes = Counter(label for label in labels if label is not None) if labels is not None else Counter()
    for cluster_id in sorted(set(assignments.tolist())):
        members = np.flatnonzero(assignments == cluster_id)
        counts = Counter(labels[i] for i in members if labels[i] is not None) if labels is not None else Counter()
        labelled = sum(counts.values())
        top_label, top_count = counts.most_common(1)[0] if counts else (None, 0)
        purity = top_count / labelled if labelled else 1.0
        dominant = top_label if labelled and purity >= config.dominant_share else None
        mostly_unlabelled = labels is not None and labelled < config.min_labelled_share * len(members)
        any_labels = labels is not None and any(label is not None for label in labels)
        # a cluster made of whole classes (each mostly inside it) is a broader group of known classes,
        # such as "footwear" over sandals, sneakers and boots: not a new category
        merged_classes = labelled > 0 and sum(n for label, n in counts.items() if n >= 0.5 * class_sizes[label]) \
            >= config.dominant_share * labelled
        new_category = cluster_id >= 0 and any_labels and (mostly_unlabelled or (dominant is None
                                                                                 and not merged_classes))
        centre = x[members].mean(axis=0)
        order = np.argsort(np.linalg.norm(x[members] - centre, axis=1))[:5]
        clusters.append(Cluster(int(cluster_id), len(members), dict(counts.most_common()), dominant,
                                float(purity), _tags(members, tag_indices, tag_probs, tag_names, config.top_tags),
                                bool(new_category), [ids[members[i]] for i in order]))
    clusters.sort(key=lambda c: (c.id < 0, -c.size, c.id))
    return clusters


def _tags(members, tag_indices, tag_probs, tag_names, top: int) -> list[tuple[str, float]]:
    """Mean probability of each ImageNet class over the members (from their stored top-5)."""
    if tag_indices is None or tag_probs is None or not len(members):
        return []
    totals: Counter = Counter()
    for row in members:
        for index, prob in zip(tag_indices[row], tag_probs[row]):
            totals[int(index)] += float(prob)
    names = list(tag_names) if tag_names is not None else []
    best = totals.most_common(top)
    return [(names[i] if i < len(names) else f"class {i}", round(total / len(members), 4)) for i, total in best]

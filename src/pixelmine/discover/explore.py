"""Workspace-level runs of the exploration finders: clusters (+ the 2-D map) and association rules.

Each gathers its inputs from the workspace (features, catalog labels and metadata, a model's out-of-fold
predictions, other findings), calls the pure functions of :mod:`.clusters` / :mod:`.rules`, and records
a run in the catalog. Clusters are stored as findings of a ``discover`` run (kind ``cluster``), so
``load_findings(kind="cluster")`` finds them whether they came from ``pixelmine discover`` or from
``pixelmine clusters``; the cluster descriptions go to ``reports/clusters.json``, the map to
``index/map2d.npz``, the rules to ``reports/rules.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from ..errors import InputError, NotFittedError
from .clusters import KIND as CLUSTER_KIND
from .clusters import ClusterConfig, ClusterResult, find_clusters
from .findings import load_findings, store_findings
from .words import described
from .map2d import MAP_FILE, Map2D, embed_2d
from .rules import RulesConfig, RulesResult, build_transactions, mine_rules
from ..fileio import atomic_write_json
from ..runs import image_set
from ..optional import check_stage
from ..config import build_config

log = logging.getLogger(__name__)

CLUSTERS_FILE = ("reports", "clusters.json")
RULES_FILE = ("reports", "rules.json")
DISCOVER_MAP_METHOD = "umap"  # the 2-D map drawn by ``pixelmine discover``'s clusters finder


def tag_names(backbone: str, root=None) -> list[str]:
    """The backbone's classifier class names (ImageNet-1k), or [] when it has none or is unknown;
    ``root`` is the workspace (for ``model:NAME`` backbones)."""
    from .. import backbones

    try:
        return backbones.get(backbone, root=root).label_names()
    except (InputError, ImportError) as exc:
        log.info("no class names for backbone %r: %s", backbone, exc)
        return []


def _usable(catalog, features) -> tuple[list[str], dict[str, dict]]:
    """Ids that have features and are catalogued as ok with a present path, in feature order."""
    images = {row["id"]: row for row in catalog.images(status="ok")}
    ids = [i for i in features.ids if i in images]
    return ids, images


def _write_json(path: Path, data) -> Path:
    return atomic_write_json(path, data, indent=1)


def run_clusters(catalog, root, features, *, map_method: str = "umap", **options) -> ClusterResult:
    """Cluster the workspace's images in a discover run of their own: store ``cluster`` findings, the
    descriptions (``reports/clusters.json``) and the 2-D map (``index/map2d.npz``).
    Options are :class:`ClusterConfig` fields (``method="hdbscan"``, ``k_max=30``, ...)."""
    check_stage("clusters")
    config = build_config(ClusterConfig, None, options, stage="clusters")
    backbone = features.backbone
    ids, images = _usable(catalog, features)
    if len(ids) < 3:
        raise NotFittedError(f"clustering needs at least 3 ingested images with {backbone} features; found "
                             f"{len(ids)}; run: pixelmine ingest SRC, then pixelmine extract")
    labels = [images[i]["label"] for i in ids]
    started = time.monotonic()
    with catalog.run("discover", {"finders": ["clusters"], "backbone": backbone, "clusters": asdict(config),
                                     "map": map_method},
                        inputs={"fingerprint": features.fingerprint, "images": image_set(ids)}) as run:
        result, method = cluster_and_map(root, features, ids, labels, config, map_method, run.id)
        count = store_findings(catalog, run.id, result.findings(labels))
        run.counts[CLUSTER_KIND] = {"findings": count,
                                    "issues": sum(c.size for c in result.clusters if c.new_category)}
        run.metrics.update(clusters=result.k, silhouette=result.silhouette,
                           new_category=len([c for c in result.clusters if c.new_category]), map=method,
                           elapsed_s=round(time.monotonic() - started, 2))
    return result


def cluster_and_map(root, features, ids: list[str], labels: list[str | None], config: ClusterConfig,
                    map_method: str, run_id: int | None) -> tuple[ClusterResult, str]:
    """Cluster ``ids`` (rows of ``features``), write the descriptions and the map; returns (result, map method)."""
    subset = features.subset(ids) if list(ids) != list(features.ids) else features
    result = find_clusters(ids, subset.vectors, labels, tag_indices=subset.tag_indices, tag_probs=subset.tag_probs,
                           tag_names=tag_names(features.backbone, root), config=config)
    from .words import cluster_words

    words = cluster_words(root, subset, list(ids), result.assignments, result.clusters)
    summary = result.summary()
    for cluster in summary["clusters"]:
        cluster["words"] = words.get(cluster["id"], [])
    _write_json(Path(root).joinpath(*CLUSTERS_FILE), {"run_id": run_id, "backbone": features.backbone,
                                          "fingerprint": features.fingerprint, "config": asdict(config),
                                          "scores": result.scores, **summary})
    xy, method, reason = embed_2d(subset.vectors, method=map_method, seed=config.seed, pca_dims=config.pca_dims)
    Map2D(list(ids), xy, method, features.fingerprint, reason).save(Path(root).joinpath(*MAP_FILE))
    return result, method


def clusters_finder(ctx) -> list:
    """Adapter for ``pixelmine discover`` (:mod:`.run`): clusters over the run's images and features."""
    result, method = cluster_and_map(ctx.root, ctx.features, ctx.ids, ctx.labels, ClusterConfig(), DISCOVER_MAP_METHOD,
                                     ctx.run_id)
    ctx.summary["clusters"] = {"k": result.k, "method": result.method, "silhouette": result.silhouette,
                               "new_category": [c.id for c in result.clusters if c.new_category], "map": method}
    return result.findings(ctx.labels)


def load_clusters(root) -> dict | None:
    path = Path(root).joinpath(*CLUSTERS_FILE)
    return json.loads(path.read_text()) if path.exists() else None


def load_map(root) -> Map2D:
    return Map2D.load(Path(root).joinpath(*MAP_FILE))


def _predictions(model) -> tuple[dict[str, str], str | None]:
    """image id -> out-of-fold predicted label of ``model`` (a trained Model, or None), and its name."""
    if model is None:
        return {}, None
    try:
        oof = model.oof()
    except (NotFittedError, FileNotFoundError) as exc:
        log.info("rules: no predictions of model %s (%s)", model.name, exc)
        return {}, None
    classes = [str(c) for c in oof["classes"]]
    guesses = oof["probs"].argmax(axis=1)
    return {str(i): classes[g] for i, g in zip(oof["ids"], guesses)}, model.name


def _issues(catalog) -> dict[str, list[str]]:
    """image id -> finding kinds that flag it (newest discover run of each kind; clusters excluded)."""
    kinds = [r[0] for r in catalog.query("SELECT DISTINCT kind FROM findings") if r[0] != CLUSTER_KIND]
    flagged: dict[str, list[str]] = {}
    for kind in kinds:
        for finding in load_findings(catalog, kind=kind, issues_only=True):
            flagged.setdefault(finding.image_id, []).append(kind)
    return flagged


def run_rules(catalog, root, *, features=None, model=None, **options) -> RulesResult:
    """Mine association rules over every ok image; saves ``reports/rules.json`` and records a run.
    ``features`` (a FeatureSet, or None) gives the ImageNet tags, ``model`` (a trained Model, or None) the
    predicted labels."""
    check_stage("rules")
    config = build_config(RulesConfig, None, options, stage="rules")
    images = {row["id"]: row for row in catalog.images(status="ok")}
    if not images:
        raise NotFittedError(f"no ingested images in workspace {str(root)!r}; run: pixelmine ingest SRC")
    ids = sorted(images)
    tags: dict[str, list[tuple[str, float]]] = {}
    backbone = features.backbone if features is not None else None
    if features is not None and features.tag_indices is not None:
        names = tag_names(backbone, root)
        if names:
            for row, image_id in enumerate(features.ids):
                if image_id in images:
                    tags[image_id] = [(names[int(i)], float(p)) for i, p in
                                      zip(features.tag_indices[row][:3], features.tag_probs[row][:3])]
    clusters = {f.image_id: f.details.get("cluster") for f in load_findings(catalog, kind=CLUSTER_KIND)
                if f.details.get("cluster", -1) >= 0}
    predicted, model_name = _predictions(model)
    inputs = {"images": image_set(ids), "fingerprint": features.fingerprint if features is not None else None,
              "model": model_name}
    with catalog.run("rules", {"backbone": backbone, "model": model_name, "rules": asdict(config)},
                        inputs=inputs) as run:
        transactions = build_transactions(
            ids, labels={i: images[i]["label"] for i in ids}, predicted=predicted, tags=tags, clusters=clusters,
            issues=_issues(catalog), metadata={i: images[i]["metadata"] for i in ids}, config=config)
        result = mine_rules(transactions, config)
        payload = {"run_id": run.id, "model": model_name, **result.to_dict()}
        stored = load_clusters(root) or {}
        words = {str(c["id"]): c.get("words") or [] for c in stored.get("clusters", [])}
        for rule in payload["rules"]:
            rule["described"] = " ∧ ".join(described(item, words) for item in rule["antecedent"]) + " ⇒ " + \
                described(rule["consequent"], words)
        _write_json(Path(root).joinpath(*RULES_FILE), payload)
        run.counts.update(transactions=result.n_transactions, rules=len(result.rules))
    return result


def load_rules(root) -> dict | None:
    path = Path(root).joinpath(*RULES_FILE)
    return json.loads(path.read_text()) if path.exists() else None


__all__ = ["load_clusters", "load_map", "load_rules", "run_clusters", "run_rules", "tag_names", "cluster_and_map", "clusters_finder"]

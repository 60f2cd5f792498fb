"""Clusters: planted blobs are recovered, a blob with no dominant label is flagged, the map is stored."""

from __future__ import annotations

import numpy as np
import pytest
from learnkit import BACKBONE, labelled_workspace
from sklearn.metrics import adjusted_rand_score

from pixelmine.discover.clusters import ClusterConfig, find_clusters
from pixelmine.discover.findings import load_findings
from pixelmine.discover.map2d import embed_2d
from pixelmine.errors import InputError

FAST = {"k_max": 8, "pca_dims": 16}


def blobs(per: int = 60, k: int = 4, dim: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 4
    truth = np.repeat(np.arange(k), per)
    return centres[truth] + rng.normal(size=(len(truth), dim)), truth


def test_kmeans_recovers_planted_blobs_and_flags_the_unlabelled_mix():
    vectors, truth = blobs()
    # blobs 0..2 carry one label each; blob 3 is a mix of all three: no dominant label -> new category
    labels = [["a", "b", "c"][t] if t < 3 else ["a", "b", "c"][i % 3] for i, t in enumerate(truth)]
    ids = [f"{i:064x}" for i in range(len(truth))]
    result = find_clusters(ids, vectors, labels, **FAST)
    assert result.k == 4
    assert adjusted_rand_score(truth, result.assignments) > 0.95
    flagged = [c for c in result.clusters if c.new_category]
    assert len(flagged) == 1 and flagged[0].dominant_label is None and flagged[0].purity < 0.5
    members = set(np.flatnonzero(result.assignments == flagged[0].id))
    assert members == set(np.flatnonzero(truth == 3))
    pure = {c.dominant_label: c.purity for c in result.clusters if not c.new_category}
    assert pure == {"a": 1.0, "b": 1.0, "c": 1.0}
    findings = result.findings(labels)
    assert len(findings) == len(ids) and all(f.kind == "cluster" for f in findings)
    assert sum(f.is_issue for f in findings) == 60
    assert all(0 <= f.score <= 1 for f in findings)


def test_hdbscan_recovers_planted_blobs():
    vectors, truth = blobs(seed=1)
    result = find_clusters([str(i) for i in range(len(truth))], vectors, None, method="hdbscan", pca_dims=16)
    assert result.k == 4
    clustered = result.assignments >= 0
    assert clustered.mean() > 0.8
    assert adjusted_rand_score(truth[clustered], result.assignments[clustered]) > 0.95
    assert not any(c.new_category for c in result.clusters)  # no labels at all: nothing to compare against


def test_clusters_are_described_by_their_imagenet_tags():
    vectors, truth = blobs(per=30, k=3, seed=2)
    tag_indices = np.zeros((len(truth), 5), dtype=np.int32)
    tag_indices[:, 0] = truth * 10  # blob t's top tag is class 10 t
    tag_indices[:, 1:] = 999
    tag_probs = np.tile(np.array([0.8, 0.05, 0.05, 0.05, 0.05], np.float32), (len(truth), 1))
    names = [f"name{i}" for i in range(1000)]
    result = find_clusters([str(i) for i in range(len(truth))], vectors, ["x"] * len(truth),
                           tag_indices=tag_indices, tag_probs=tag_probs, tag_names=names, **FAST)
    tops = sorted(c.tags[0][0] for c in result.clusters)
    assert tops == ["name0", "name10", "name20"]
    assert all(c.tags[0][1] == pytest.approx(0.8) for c in result.clusters)


def test_bad_parameters_name_the_value_and_the_choices():
    with pytest.raises(InputError, match=r"'method' parameter of ClusterConfig must be one of kmeans, hdbscan\. Got 'dbscan'"):
        ClusterConfig(method="dbscan")
    with pytest.raises(InputError, match="at least 3 images"):
        find_clusters(["a", "b"], np.zeros((2, 4)))
    with pytest.raises(InputError, match="'method' parameter of the 2-D map"):
        embed_2d(np.zeros((5, 4)), method="tsne")


def test_workspace_clusters_store_findings_descriptions_and_map(tmp_path):
    ws, ids, labels, vectors = labelled_workspace(tmp_path, {"cat": 25, "dog": 25, "owl": 25}, separation=8.0)
    result = ws.discover_clusters(backbone=BACKBONE, map_method="pca", **FAST)
    assert result.k == 3
    truth = [labels[ids.index(i)] for i in result.ids]
    assert adjusted_rand_score(truth, result.assignments) > 0.95
    stored = load_findings(ws.catalog, kind="cluster")
    assert sorted(f.image_id for f in stored) == sorted(ids)
    data = ws.clusters()
    assert {c["dominant_label"] for c in data["clusters"]} == {"cat", "dog", "owl"}
    assert data["new_category"] == []
    mapping = ws.map2d()
    assert mapping.xy.shape == (len(ids), 2) and sorted(mapping.ids) == sorted(ids) and mapping.method == "pca"
    run = ws.catalog.runs("discover", 1)[0]
    assert run["status"] == "completed" and run["metrics"]["clusters"] == 3


@pytest.mark.slow
def test_umap_map_keeps_blobs_apart():
    vectors, truth = blobs(per=40, k=3, seed=3)
    xy, method, reason = embed_2d(vectors)
    assert method == "umap" and reason == ""
    centres = np.array([xy[truth == t].mean(axis=0) for t in range(3)])
    spread = max(np.linalg.norm(xy[truth == t] - centres[t], axis=1).mean() for t in range(3))
    gaps = min(np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3))
    assert gaps > 2 * spread


def test_discover_runs_the_clusters_finder(tmp_path, monkeypatch):
    import pixelmine.discover.explore as explore
    from pixelmine.discover.run import discover

    monkeypatch.setattr(explore, "DISCOVER_MAP_METHOD", "pca")  # UMAP's first-use compile costs ~30 s

    ws, ids, labels, _ = labelled_workspace(tmp_path, {"cat": 20, "dog": 20}, separation=8.0)
    result = discover(ws.catalog, ws.root, ws.features(BACKBONE), only=["cluster"], progress=False)
    assert result.counts["cluster"]["findings"] == len(ids)
    assert result.summary["clusters"]["k"] == 2
    assert len(load_findings(ws.catalog, kind="cluster", run_id=result.run_id)) == len(ids)
    assert ws.clusters()["run_id"] == result.run_id and ws.map2d().xy.shape == (len(ids), 2)


def test_cli_discover_includes_clusters(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import pixelmine.discover.explore as explore
    from pixelmine.cli import main

    monkeypatch.setattr(explore, "DISCOVER_MAP_METHOD", "pca")
    ws, ids, _, _ = labelled_workspace(tmp_path, {"cat": 15, "dog": 15}, separation=8.0)
    result = CliRunner().invoke(main, ["discover", "--only", "cluster", "--backbone", BACKBONE,
                                       "--workspace", str(ws.root), "--json"])
    assert result.exit_code == 0, result.output
    assert len(load_findings(ws.catalog, kind="cluster")) == len(ids)


def test_a_cluster_of_whole_classes_is_a_broader_group_not_a_new_category():
    from pixelmine.discover.clusters import describe

    # cluster 0: all of "sandal" and "boot" (footwear); cluster 1: "shirt"; cluster 2: a few images of each
    # class whose classes lie mostly elsewhere — the group the labels do not account for
    labels = ["sandal"] * 40 + ["boot"] * 40 + ["shirt"] * 60 + ["sandal", "boot", "shirt"] * 5
    assignments = np.array([0] * 80 + [1] * 60 + [2] * 15)
    ids = [f"{k:064x}" for k in range(len(labels))]
    x = np.random.default_rng(0).standard_normal((len(labels), 4))
    found = {c.id: c for c in describe(ids, x, assignments, labels, None, None, None, ClusterConfig())}
    assert found[0].dominant_label is None and not found[0].new_category
    assert found[1].dominant_label == "shirt" and not found[1].new_category
    assert found[2].new_category

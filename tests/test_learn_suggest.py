"""What to label next, on planted truth: a planted uncertain region comes first, every cluster is covered
before any repeats, and the exported manifest can be filled in and ingested back."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner
from imagefactory import photo, save
from learnkit import BACKBONE, FINGERPRINT

import pixelmine
from pixelmine.cli import main
from pixelmine.errors import InputError
from pixelmine.features import FeatureStore
from pixelmine.learn.suggest import margins, rank_for_labelling


def _blobs(n_per: int, k: int, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)) * 8
    which = np.repeat(np.arange(k), n_per)
    return centres[which] + rng.standard_normal((len(which), dim)), which


def test_the_uncertain_region_comes_first_and_every_cluster_before_a_repeat():
    X, planted = _blobs(40, 5)
    probs = np.tile([0.95, 0.05], (len(X), 1))
    uncertain = planted == 2
    probs[uncertain] = [0.52, 0.48]  # the planted uncertain cluster
    rows, _ = rank_for_labelling(X, probs, 5, seed=0)
    assert planted[rows[0]] == 2 and margins(probs[rows[:1]])[0] < 0.1
    assert sorted(planted[rows].tolist()) == [0, 1, 2, 3, 4]  # one per planted cluster
    rows, clusters = rank_for_labelling(X, probs, 12, seed=0)
    assert len(set(clusters.tolist())) == 12  # 12 clusters, one suggestion each
    assert set(planted[rows].tolist()) == {0, 1, 2, 3, 4}
    # within a cluster the most uncertain image is the one offered
    probs[np.flatnonzero(planted == 4)[7]] = [0.5, 0.5]
    rows, _ = rank_for_labelling(X, probs, 5, seed=0)
    assert rows[0] == np.flatnonzero(planted == 4)[7]


def test_without_a_model_each_cluster_offers_its_most_typical_image():
    X, planted = _blobs(30, 4, seed=1)
    rows, _ = rank_for_labelling(X, None, 4, seed=0)
    assert sorted(planted[rows].tolist()) == [0, 1, 2, 3]
    with pytest.raises(InputError, match=">= 1"):
        rank_for_labelling(X, None, 0)


@pytest.fixture()
def half_labelled(tmp_path):
    """40 labelled images of 2 classes and 30 unlabelled ones: 10 of them between the classes."""
    rng = np.random.default_rng(0)
    paths, vectors = [], []
    for k in range(20):
        for label, centre in (("cat", -3.0), ("dog", 3.0)):
            paths.append((save(photo(len(paths), (40, 32)), tmp_path / "images" / label / f"{label}{k}.jpg"), label))
            vectors.append(np.r_[centre, rng.standard_normal(3) * 0.5])
    for k in range(30):
        path = save(photo(len(paths), (40, 32)), tmp_path / "images" / "new" / f"new{k}.jpg")
        paths.append((path, None))
        x = 0.0 if k < 10 else (-3.0 if k % 2 else 3.0)  # the first 10 sit on the class boundary
        vectors.append(np.r_[x + rng.standard_normal() * 0.2, rng.standard_normal(3) * 0.5])
    ws = pixelmine.open_workspace(tmp_path / "ws")
    manifest = tmp_path / "labels.csv"
    with manifest.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["path", "label"])
        writer.writerows((str(p), label or "") for p, label in paths)
    ws.ingest(manifest=str(manifest), progress=False, workers=1)
    by_path = {r["path"]: r["id"] for r in ws.images()}
    FeatureStore(ws.root, BACKBONE, FINGERPRINT).write([by_path[str(p)] for p, _ in paths],
                                                       np.asarray(vectors, dtype=np.float32))
    boundary = {by_path[str(p)] for p, _ in paths[40:50]}
    return ws, boundary, tmp_path


def test_suggest_ranks_boundary_images_first_and_the_manifest_goes_back_in(half_labelled):
    ws, boundary, tmp = half_labelled
    ws.train("logreg", backbone=BACKBONE, progress=False, bootstrap=20, cv_folds=3, search_budget_s=2)
    suggestions = ws.suggest(3)
    assert [s.rank for s in suggestions] == [1, 2, 3]
    assert all(s.image_id in boundary and s.label is None and s.margin < 0.5 for s in suggestions)
    manifest = tmp / "to-label.csv"
    result = CliRunner().invoke(main, ["suggest", "--n", "5", "--output", str(manifest), "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "5 images from 5 clusters of the unlabelled pool" in result.output
    rows = list(csv.DictReader(manifest.open()))
    assert list(rows[0]) == ["path", "label"] and len(rows) == 5
    for row in rows:
        row["label"] = "cat"  # a person fills in the labels
    with manifest.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["path", "label"])
        writer.writeheader()
        writer.writerows(rows)
    unlabelled_before = sum(1 for r in ws.images() if r["label"] is None)
    ws.ingest(manifest=str(manifest), progress=False, workers=1)
    labels = {r["path"]: r["label"] for r in ws.images()}
    assert all(labels[row["path"]] == "cat" for row in rows)
    assert sum(1 for r in ws.images() if r["label"] is None) == unlabelled_before - 5
    assert ws.suggest(50, pool="review") == []  # no discovery yet: nothing flagged for review
    with pytest.raises(InputError, match="pool"):
        ws.suggest(5, pool="everything")

"""Fairness across groups: planted groups whose accuracy is known, found by the card, and a planted shortcut
that the group-balanced refit (--balance-groups) takes away."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from imagefactory import photo, save
from learnkit import BACKBONE, FINGERPRINT

import pixelmine
from pixelmine.cli import main
from pixelmine.discover.groups import group_values
from pixelmine.errors import InputError
from pixelmine.features import FeatureStore
from pixelmine.learn.balance import group_class_weights
from pixelmine.trust.group_metrics import group_report, simultaneous

CLASSES = ["a", "b", "c"]


def planted_predictions(n_good=400, n_bad=120, bad_error=0.45, good_error=0.05, seed=0):
    """Labels, probabilities and groups where group 'bad' is wrong bad_error of the time, 'good' good_error."""
    rng = np.random.default_rng(seed)
    groups = np.array(["good"] * n_good + ["bad"] * n_bad)
    labels = rng.integers(0, 3, len(groups))
    wrong = rng.random(len(groups)) < np.where(groups == "bad", bad_error, good_error)
    predicted = np.where(wrong, (labels + rng.integers(1, 3, len(groups))) % 3, labels)
    probs = np.full((len(groups), 3), 0.15)
    probs[np.arange(len(groups)), predicted] = 0.7
    return [CLASSES[k] for k in labels], probs, groups.tolist(), predicted, labels


def test_group_metrics_match_the_planted_accuracies_and_flag_only_the_failed_group():
    labels, probs, groups, predicted, truth = planted_predictions()
    report = group_report("site", labels, probs, CLASSES, groups, n_bootstrap=500)
    g = np.asarray(groups)
    for name in ("good", "bad"):
        stats = report.group(name)
        assert stats.n == (g == name).sum()
        assert stats.accuracy == pytest.approx((predicted == truth)[g == name].mean())
        low, high = stats.accuracy_interval
        assert low < stats.accuracy < high
        for k, c in enumerate(CLASSES):
            inside = (g == name) & (truth == k)
            assert stats.recall[c] == pytest.approx((predicted[inside] == k).mean())
    assert report.worst_group == "bad"
    assert report.largest_gap["best"] == "good" and report.largest_gap["gap"] > 0.3
    harmful = report.harmful_gaps()
    assert harmful and {gap.group for gap in harmful} == {"bad"}
    accuracy_gap = next(gap for gap in harmful if gap.metric == "accuracy")
    assert accuracy_gap.interval[1] < 0 and accuracy_gap.rest == pytest.approx(report.group("good").accuracy)
    # the calibration error of a group that is 70 % confident and 55 % right is about 0.15
    assert report.group("bad").ece == pytest.approx(abs(0.7 - report.group("bad").accuracy), abs=1e-9)


def test_random_groups_give_no_finding_and_small_groups_are_not_ranked():
    rng = np.random.default_rng(1)
    labels, probs, _, _, _ = planted_predictions(n_good=500, n_bad=0)
    groups = rng.choice(["x", "y", "z"], size=len(labels)).tolist()
    groups[:8] = ["tiny"] * 8
    report = group_report("camera", labels, probs, CLASSES, groups, n_bootstrap=400)
    assert not report.harmful_gaps()
    tiny = report.group("tiny")
    assert not tiny.ranked and tiny.n == 8
    assert all(gap.group != "tiny" for gap in report.gaps) and report.worst_group != "tiny"
    assert any("fewer than 20" in note for note in report.notes)


def test_intervals_are_simultaneous_over_every_column_tested():
    labels, probs, groups, _, _ = planted_predictions()
    one = group_report("site", labels, probs, CLASSES, groups, n_bootstrap=300)
    two = group_report("site", labels, probs, CLASSES, groups, n_bootstrap=300)
    width = one.gaps[0].interval[1] - one.gaps[0].interval[0]
    simultaneous([one, two])
    assert one.level == two.level == pytest.approx(1 - 0.05 / (len(one.gaps) + len(two.gaps)))
    assert one.gaps[0].interval[1] - one.gaps[0].interval[0] > width  # more tests: wider intervals


def test_a_column_with_one_group_is_an_error():
    labels, probs, _, _, _ = planted_predictions(n_bad=0)
    with pytest.raises(InputError, match="one value"):
        group_report("camera", labels, probs, CLASSES, ["same"] * len(labels))


def test_group_class_weights_give_every_cell_the_same_total():
    labels = np.array(["a"] * 90 + ["b"] * 10 + ["a"] * 10 + ["b"] * 90)
    groups = np.array(["m"] * 100 + ["p"] * 100)
    weights = group_class_weights(labels, groups)
    assert weights.mean() == pytest.approx(1.0)
    totals = {(g, y): weights[(groups == g) & (labels == y)].sum() for g in "mp" for y in "ab"}
    assert np.allclose(list(totals.values()), 50.0)


# -- a workspace with a manifest column -------------------------------------------------------------------
def shortcut_workspace(tmp_path):
    """Two classes; a manifest column ``marker`` that goes with class a in train + val (90 % of a, 10 % of b)
    and not in test (10 % of a, 50 % of b). Synthetic features: a weak class signal plus a strong marker
    dimension, so a head learns the shortcut."""
    rng = np.random.default_rng(0)
    rows, seed = [], 0
    for split, n_per_class in (("train", 150), ("val", 40), ("test", 120)):
        for label in ("a", "b"):
            share = {("a", False): 0.9, ("b", False): 0.1, ("a", True): 0.1, ("b", True): 0.5}[(label, split == "test")]
            for _ in range(n_per_class):
                path = save(photo(seed, (24, 20)), tmp_path / "images" / label / f"{seed:05d}.png")
                rows.append({"path": str(path), "label": label, "split": split,
                             "marker": "marked" if rng.random() < share else "plain"})
                seed += 1
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "split", "marker"])
        writer.writeheader()
        writer.writerows(rows)
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(manifest=str(manifest), progress=False, workers=1)
    by_path = {r["path"]: r for r in ws.images()}
    ids, vectors = [], []
    for row in rows:
        signal = 1.0 if row["label"] == "a" else -1.0
        marker = 3.0 if row["marker"] == "marked" else -3.0
        vectors.append([signal + rng.normal(0, 1.2), marker + rng.normal(0, 0.5), *rng.normal(0, 1, 6)])
        ids.append(by_path[row["path"]]["id"])
    FeatureStore(ws.root, BACKBONE, FINGERPRINT).write(ids, np.asarray(vectors, dtype=np.float32))
    return ws, rows


@pytest.fixture(scope="module")
def shortcut(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shortcut")
    ws, rows = shortcut_workspace(tmp)
    base = ws.train("logreg", backbone=BACKBONE, name="base", split={"column": "split"}, bootstrap=200,
                    search_budget_s=5.0, cv_folds=3, progress=False)
    yield ws, rows, base
    ws.close()


def test_the_card_finds_the_shortcut_group_and_stores_group_gap_findings(shortcut):
    ws, rows, base = shortcut
    result = ws.fairness(by="marker", model="base", progress=False)
    report = result.report("marker")
    marked, plain = report.group("marked"), report.group("plain")
    expected = sum(r["split"] == "test" and r["marker"] == "marked" for r in rows)
    assert marked.n == expected and marked.accuracy < plain.accuracy - 0.2
    assert report.worst_group == "marked"
    # the shortcut fails both groups, each in its own way: marked b images are called a, plain a images b
    harmful = {(gap.group, gap.metric, gap.label) for gap in report.harmful_gaps()}
    assert {("marked", "accuracy", None), ("marked", "tpr", "b"), ("marked", "fpr", "a"),
            ("plain", "tpr", "a"), ("plain", "fpr", "b")} <= harmful
    assert ("plain", "accuracy", None) not in harmful
    findings = ws.findings("group_gap")
    flagged = {f.image_id for f in findings if f.is_issue}
    test_ids = {r["id"] for r in ws.images() if r["split"] == "test"}
    assert flagged == test_ids and {f.image_id for f in findings} == test_ids
    scores = {f.image_id: f.score for f in findings}
    marked_ids = {r["id"] for r in ws.images() if r["metadata"].get("marker") == "marked"} & test_ids
    assert all(scores[i] == pytest.approx(marked.accuracy) for i in marked_ids)
    saved = json.loads((base.dir / "fairness.json").read_text())
    assert saved["reports"][0]["column"] == "marker" and saved["flagged"] == len(flagged)


def test_balance_groups_raises_the_worst_group_and_reports_every_group(shortcut):
    ws, _, base = shortcut
    balanced = ws.train(balance_groups="marker", balance_base="base", progress=False)
    assert balanced.name == "base-balanced-marker" and balanced.head == "logreg"
    balance = balanced.balance
    before = {g["group"]: g["accuracy"] for g in balance["before"]["groups"]}
    after = {g["group"]: g["accuracy"] for g in balance["after"]["groups"]}
    assert set(before) == set(after) == {"marked", "plain"}
    assert after["marked"] >= before["marked"] + 0.15
    assert balance["after_accuracy"] >= balance["before_accuracy"] - 0.02
    assert len(balance["cells"]) == 4 and balance["refit_s"] < 60
    assert balanced.info["balanced"] == {"column": "marker", "base": "base"}
    # the refit kept the base's split and test images, and is a model like any other
    assert balanced.metrics["test"]["n"] == base.metrics["test"]["n"]
    predictions = balanced.predict([ws.images()[0]["path"]])
    assert predictions[0].ok


def test_group_columns_include_manifest_and_derived_ones(shortcut):
    ws, _, _ = shortcut
    columns = ws.group_columns()
    assert columns["marker"] == "manifest column"
    assert {"camera_model", "capture_hour", "orientation", "resolution", "brightness", "folder"} <= set(columns)
    rows = ws.images()
    # relative to the manifest's folder
    assert set(group_values(ws.catalog, ws.root, rows, "folder")) == {"images/a", "images/b"}
    assert set(group_values(ws.catalog, ws.root, rows, "orientation")) == {"landscape"}


def test_bad_columns_are_clear_errors(shortcut):
    ws, _, _ = shortcut
    with pytest.raises(InputError, match=r"no metadata column 'nope'.*marker.*camera_make"):
        ws.fairness(by="nope", model="base", progress=False)
    with pytest.raises(InputError, match="one value"):
        ws.fairness(by="orientation", model="base", progress=False)
    with pytest.raises(InputError, match="no metadata column"):
        ws.train(balance_groups="nope", balance_base="base", progress=False)


def test_the_cli_prints_the_card_and_json(shortcut):
    ws, _, _ = shortcut
    runner = CliRunner()
    result = runner.invoke(main, ["fairness", "-w", str(ws.root), "--by", "marker", "--model", "base"])
    assert result.exit_code == 0, result.output
    assert "worst group 'marked'" in result.output and "groups the model fails" in result.output
    assert "pixelmine train --balance-groups" in result.output
    result = runner.invoke(main, ["fairness", "-w", str(ws.root), "--by", "marker", "--model", "base", "--json"])
    data = json.loads(result.output)
    assert data["reports"][0]["worst_group"] == "marked"
    result = runner.invoke(main, ["fairness", "-w", str(ws.root), "--by", "nope"])
    assert result.exit_code == 1 and "no metadata column 'nope'" in result.output

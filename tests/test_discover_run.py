"""``discover`` on a real workspace: recorded runs, planted truth found end to end, stable re-runs, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from click.testing import CliRunner
from learnkit import BACKBONE, FINGERPRINT, image_folders

import pixelmine
from pixelmine.cli import main
from pixelmine.discover.run import resolve_only
from pixelmine.errors import InputError, NotFittedError
from pixelmine.features import FeatureStore

# the finders of this stage (the cluster finder, registered by pixelmine.discover.explore, has its own tests)
FINDERS = ["quality", "duplicates", "outliers", "label_issues", "classes"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """61 images in 3 classes: an exact and a near-duplicate copy, and features that plant an outlier and 3 label flips."""
    tmp = tmp_path_factory.mktemp("discover")
    source = image_folders(tmp / "images", {"a": 20, "b": 20, "c": 20})
    (source / "a" / "a_copy.jpg").write_bytes((source / "a" / "a_0000.jpg").read_bytes())  # exact duplicate
    with Image.open(source / "b" / "b_0003.jpg") as original:  # a near-duplicate: a larger re-encoded copy
        original.convert("RGB").resize((80, 64), Image.Resampling.BICUBIC).save(source / "b" / "b_big.jpg", quality=60)
    ws = pixelmine.open_workspace(tmp / "ws")
    ws.ingest(source, labels_from_folders=True, progress=False, workers=1)
    rows = ws.images(status="ok")
    ids, labels = [r["id"] for r in rows], [r["label"] for r in rows]
    by_name = {r["path"].rsplit("/", 1)[-1]: r["id"] for r in rows}
    rng = np.random.default_rng(0)
    centres = {c: np.eye(16)[k] * 8 for k, c in enumerate("abc")}
    vectors = np.array([centres[label] + rng.standard_normal(16) for label in labels], dtype=np.float32)
    truth = {"dup": (by_name["b_0003.jpg"], by_name["b_big.jpg"]), "outlier": ids[3]}
    vectors[3] = rng.standard_normal(16) * 40
    flips = [r for r in range(10, 60, 17)][:3]
    truth["right_label"] = {}
    for row in flips:  # features of another class: the label is wrong
        other = "abc"[("abc".index(labels[row]) + 1) % 3]
        vectors[row] = centres[other] + rng.standard_normal(16)
        truth["right_label"][ids[row]] = other
    truth["flips"] = {ids[r] for r in flips}
    FeatureStore(ws.root, BACKBONE, FINGERPRINT).write(ids, vectors)
    result = ws.discover(only=FINDERS, backbone=BACKBONE, progress=False, workers=1)
    yield ws, truth, result
    ws.close()


def test_run_is_recorded_with_counts(planted):
    ws, _, result = planted
    run = ws.runs("discover")[0]
    assert run["id"] == result.run_id and run["status"] == "completed"
    assert run["counts"] == result.counts
    assert set(result.counts) >= {"near_duplicate", "exact_duplicate", "outlier", "label_issue", "blurry", "rare_class"}
    assert result.summary["images"] == 61 and result.summary["label_errors"]["labelled"] == 61


def test_planted_truth_is_found(planted):
    ws, truth, _ = planted
    near = {f.image_id: f for f in ws.findings("near_duplicate")}
    assert set(near) == set(truth["dup"])  # the pixels are copies; no other pair of these 61 images is
    assert near[truth["dup"][0]].details["keeper"] == truth["dup"][1]  # the larger copy
    assert near[truth["dup"][0]].details["keeper_because"].startswith("the largest resolution")
    assert ws.findings("outlier")[0].image_id == truth["outlier"]
    ranked = ws.findings("label_issue")
    assert truth["flips"] <= {f.image_id for f in ranked[:4]}  # the planted outlier's label is doubtful too
    flagged = {f.image_id for f in ranked if f.is_issue}
    assert len(truth["flips"] & flagged) >= 2 and len(flagged) <= 5
    exact = ws.findings("exact_duplicate")
    assert len(exact) == 1 and exact[0].details["copies"] == 2
    assert all(f.is_issue for f in ws.findings(issues_only=True))


def test_rerun_with_no_new_data_gives_the_same_findings(planted):
    ws, _, result = planted
    again = ws.discover(only=FINDERS, backbone=BACKBONE, progress=False, workers=1)
    assert again.run_id != result.run_id and again.counts == result.counts
    first = ws.findings(run_id=result.run_id)
    second = ws.findings(run_id=again.run_id)
    assert [f.to_dict() for f in first] == [f.to_dict() for f in second]


def test_only_runs_the_chosen_finders(planted):
    ws, _, _ = planted
    result = ws.discover(only=["outlier"], backbone=BACKBONE, progress=False)
    assert set(result.counts) == {"outlier", "class_outlier"}
    assert resolve_only(["quality", "label_issue"]) == ["quality", "label_issues"]
    with pytest.raises(InputError, match="unknown finder or finding kind 'blurr'.*blurry"):
        ws.discover(only=["blurr"], backbone=BACKBONE)
    with pytest.raises(InputError, match="unknown finding kind 'nope'"):
        ws.findings("nope")
    with pytest.raises(InputError, match="workers must be a positive integer; got 0"):
        ws.discover(only=["outliers"], backbone=BACKBONE, workers=0)


def test_missing_features_name_the_command(tmp_path):
    ws = pixelmine.open_workspace(tmp_path / "empty")
    with pytest.raises(NotFittedError, match="pixelmine ingest"):
        ws.discover(progress=False)
    ws.ingest(image_folders(tmp_path / "img", {"a": 3}), labels_from_folders=True, progress=False, workers=1)
    with pytest.raises(NotFittedError, match="pixelmine extract --backbone mobilenet_v2"):
        ws.discover(progress=False)


def test_cli_discover_findings_and_export(planted, tmp_path):
    ws, truth, _ = planted
    runner = CliRunner()
    common = ["--workspace", str(ws.root)]
    done = runner.invoke(main, ["discover", "--backbone", BACKBONE, "--only", "duplicates", "--quiet", *common])
    assert done.exit_code == 0, done.output
    assert "near_duplicate" in done.output and "exact_duplicate" in done.output
    listed = runner.invoke(main, ["findings", "--kind", "near_duplicate", "--json", *common])
    assert listed.exit_code == 0
    assert set(truth["dup"]) <= {row["image_id"] for row in json.loads(listed.output)}
    for suffix in ("csv", "json", "parquet"):
        target = tmp_path / f"issues.{suffix}"
        exported = runner.invoke(main, ["findings", "--issues", "--export", str(target), *common])
        assert exported.exit_code == 0 and target.stat().st_size > 0
    bad = runner.invoke(main, ["discover", "--only", "nothing", *common])
    assert bad.exit_code == 1 and "unknown finder or finding kind 'nothing'" in bad.output


@pytest.mark.parametrize("labelled", [False, True])
def test_tiny_or_unlabelled_collections_run(tmp_path, labelled):
    source = image_folders(tmp_path / "img", {"only": 3})
    ws = pixelmine.open_workspace(tmp_path / "ws")
    ws.ingest(source, labels_from_folders=labelled, progress=False, workers=1)
    ids = [r["id"] for r in ws.images()]
    FeatureStore(ws.root, BACKBONE, FINGERPRINT).write(ids, np.eye(3, 8, dtype=np.float32))
    result = ws.discover(only=FINDERS, backbone=BACKBONE, progress=False, workers=1)
    assert result.counts["label_issue"] == {"findings": 0, "issues": 0}
    assert "needs at least 2 labelled classes" in result.summary["label_errors"]["note"]
    assert ws.runs("discover")[0]["status"] == "completed"


def test_corrections_apply_relabel_accept_ignore(planted):
    from pixelmine.corrections import record_correction

    ws, truth, _ = planted
    fixed, accepted = sorted(truth["flips"])[:2]
    record_correction(ws.catalog, fixed, "relabel", truth["right_label"][fixed])
    record_correction(ws.catalog, accepted, "accept")
    record_correction(ws.catalog, truth["outlier"], "ignore")
    try:
        result = ws.discover(only=["label_issues", "outliers"], backbone=BACKBONE, progress=False, workers=1)
        by_id = {f.image_id: f for f in ws.findings("label_issue", run_id=result.run_id)}
        assert not by_id[fixed].is_issue and by_id[fixed].details["given_label"] == truth["right_label"][fixed]
        assert not by_id[accepted].is_issue and by_id[accepted].details["accepted_by_person"]
        assert truth["outlier"] not in by_id and result.summary["ignored_by_person"] == 1
    finally:  # leave the shared workspace as the other tests expect it
        with ws.catalog.transaction() as conn:
            conn.execute("DELETE FROM label_corrections")
